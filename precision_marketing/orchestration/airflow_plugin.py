"""Airflow plugin (registered through the `airflow.plugins` entry point in pyproject.toml): the API server
serves the run reports from the lake (local folder or S3) under /pm-reports, behind Airflow's own login.

  /pm-reports/                          list of the nights with a report ("Run reports" in the UI's menu)
  /pm-reports/ds=YYYY-MM-DD/<file>      a report file: report.html, report.json, data_docs/...
  /pm-reports/runs/<dag_id>/<run_id>    the report of a DAG run (the "Run report" tab of every run)

The report task's "Run report" button (operators.RunReportLink) points here too.
"""

from __future__ import annotations

import datetime as dt
import html
import mimetypes
from typing import Annotated

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from precision_marketing.orchestration.operators import REPORT_URL_PREFIX

app = FastAPI(title="Nightly run reports", docs_url=None, redoc_url=None, openapi_url=None)


async def _authorized_user(request: Request):
    """Any Airflow user allowed to read the nightly DAG may read its reports (Airflow's login: JWT cookie or
    bearer token). Imported lazily: workers load plugins too and need none of this."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPBearer

    from precision_marketing.orchestration.schedule import DAG_ID

    user = await get_user(request, None, await HTTPBearer(auto_error=False)(request))
    if not get_auth_manager().is_authorized_dag(method="GET", user=user, details=DagDetails(id=DAG_ID)):
        raise HTTPException(status_code=403, detail=f"not allowed to read DAG {DAG_ID}")
    return user


Reader = Annotated[object, Depends(_authorized_user)]


def _storage():
    from precision_marketing.config import load_config
    from precision_marketing.storage import storage_from_config

    return storage_from_config(load_config())


def _valid_ds(ds: str) -> str:
    try:
        return dt.date.fromisoformat(ds).isoformat()
    except ValueError:
        raise HTTPException(status_code=404, detail=f"not a date: {ds!r}") from None


@app.get("/", response_class=HTMLResponse)
def index(_: Reader) -> str:
    days = sorted(
        {
            key.split("/")[1][3:]
            for key in _storage().list_keys("reports/")
            if key.endswith("/report.html") and key.count("/") == 2
        },
        reverse=True,
    )
    items = "".join(f'<li><a href="ds={d}/report.html">{html.escape(d)}</a></li>' for d in days)
    return (
        "<!DOCTYPE html><html><head><meta charset=utf-8><title>Nightly run reports</title></head>"
        "<body style='font-family:system-ui,sans-serif;margin:2rem'><h1>Nightly run reports</h1>"
        + (f"<ul>{items}</ul>" if items else "<p>No report published yet.</p>")
        + "</body></html>"
    )


@app.get("/ds={ds}/{path:path}")
def report_file(ds: str, path: str, _: Reader) -> Response:
    ds = _valid_ds(ds)
    if not path or any(part in ("", ".", "..") for part in path.split("/")):
        raise HTTPException(status_code=404, detail="no such report file")
    try:
        body = _storage().get_bytes(f"reports/ds={ds}/{path}")
    except FileNotFoundError:
        raise HTTPException(status_code=404, detail=f"no report file {path} for ds={ds}") from None
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return Response(content=body, media_type=media_type)


@app.get("/runs/{dag_id}/{run_id}")
def run_report(dag_id: str, run_id: str, _: Reader) -> Response:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from precision_marketing.orchestration.schedule import run_ds

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id == run_id).one_or_none()
        ds = run_ds(run) if run is not None else None
    if ds is None:
        raise HTTPException(status_code=404, detail=f"no run {run_id} of {dag_id}")
    return RedirectResponse(f"{REPORT_URL_PREFIX}/ds={ds}/report.html", status_code=307)


class PrecisionMarketingPlugin(AirflowPlugin):
    name = "precision_marketing"
    fastapi_apps = [{"app": app, "url_prefix": REPORT_URL_PREFIX, "name": "Nightly run reports"}]
    external_views = [
        {"name": "Run reports", "href": f"{REPORT_URL_PREFIX}/", "destination": "nav", "category": "browse"},
        {
            "name": "Run report",
            "href": REPORT_URL_PREFIX + "/runs/{DAG_ID}/{RUN_ID}",
            "destination": "dag_run",
            "url_route": "run_report",
        },
    ]
