"""The few Airflow pieces the DAG needs beyond PythonOperator: the landing-file sensor, the report task with
its extra link, and the task callbacks (failure alert, per-task timing for the run report).

Imported by the DAG file only (it needs the Airflow Task SDK); the logic they call lives in landing.py,
alerts.py, pipeline.py and report.py."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import BaseOperatorLink, BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout

from precision_marketing.config import load_config
from precision_marketing.orchestration import context_ds

REPORT_URL_PREFIX = "/pm-reports"


def report_path(ds: str) -> str:
    """URL path (on the Airflow API server, served by the plugin in airflow_plugin.py) of a ds's HTML report."""
    return f"{REPORT_URL_PREFIX}/ds={ds}/report.html"


class LandingFilesSensor(BaseSensorOperator):
    """Waits until the landing files (or `_READY` markers) of `ds` that the run will read are in the lake
    (precision_marketing/landing.py says which).

    Runs in reschedule mode: between pokes it holds no worker slot. On timeout the task fails with
    the list of what is still missing (and the failure alert carries it)."""

    template_fields = ("ds",)
    ui_color = "#fdf3d8"

    def __init__(self, *, ds: str, **kwargs):
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.ds = ds
        self._missing: list[str] = []

    def poke(self, context) -> bool:
        from precision_marketing.landing import missing_landing
        from precision_marketing.mapping import mapping_from_config
        from precision_marketing.storage import storage_from_config

        config = load_config()
        storage = storage_from_config(config)
        self._missing = missing_landing(storage, self.ds, history_days=int(config["dbt"]["history_days"]),
                                        mapping=mapping_from_config(config),
                                        ready_marker_sources=config["landing"]["ready_marker_sources"])
        if self._missing:
            self.log.info("waiting for %d landing file(s) of ds=%s: %s", len(self._missing), self.ds,
                          ", ".join(self._missing))
        return not self._missing

    def execute(self, context) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            waited = dt.timedelta(seconds=int(self.timeout))
            raise AirflowSensorTimeout(
                f"landing files for ds={self.ds} still missing after waiting {waited}: "
                + ", ".join(self._missing) + f" ({exc})") from None


class PublishOperator(PythonOperator):
    """publish, then `extra` on each published table's Asset event: ds, run id, row count and the headline
    metrics, for data-aware DAGs and the Assets view of the UI."""

    def execute(self, context) -> Any:
        from precision_marketing.pipeline import headline_metrics

        manifests = super().execute(context)
        ds = self.op_kwargs["ds"]
        figures = headline_metrics(ds, context.get("params"))
        for asset in self.outlets:
            table = asset.uri.rstrip("/").rsplit("/", 1)[-1]
            rows = (manifests.get(table) or {}).get("row_count")
            context["outlet_events"][asset].extra = {"ds": ds, "run_id": context["ti"].run_id, "table": table,
                                                     "rows": rows, **figures}
        return manifests


class RunReportLink(BaseOperatorLink):
    """'Run report' button on the report task: the HTML report of the run's ds, served by the API server."""

    name = "Run report"

    def get_link(self, operator, *, ti_key) -> str:
        from airflow.sdk.configuration import conf

        ds = operator.op_kwargs.get("ds") if isinstance(operator.op_kwargs, dict) else None
        if not ds or "{" in str(ds):
            return ""
        base_url = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
        return base_url + report_path(ds)


class ReportOperator(PythonOperator):
    operator_extra_links = (RunReportLink(),)


# ------------------------------------------------------------------------------- task callbacks


def _task_context(context) -> dict[str, Any]:
    ti = context["ti"]
    return {"dag_id": ti.dag_id, "ds": context_ds(context), "run_id": ti.run_id, "task_id": ti.task_id,
            "try_number": ti.try_number, "log_url": getattr(ti, "log_url", None)}


def record_task_time(context, state: str | None = None, error: str | None = None, reason: str | None = None) -> None:
    """One JSON per task and ds in the work dir: the run report's "time per task" reads them."""
    from precision_marketing.pipeline import paths_for

    ti = context["ti"]
    ds = context_ds(context)
    started = ti.start_date
    ended = ti.end_date or dt.datetime.now(dt.timezone.utc)
    record = {"task_id": ti.task_id, "run_id": ti.run_id, "try_number": ti.try_number,
              "state": state or str(getattr(ti, "state", "") or ""),
              "start": started.isoformat() if started else None, "end": ended.isoformat(),
              "seconds": round((ended - started).total_seconds(), 3) if started else None}
    if error:
        record["error"] = error
    if reason:
        record["reason"] = reason
    target = paths_for(load_config(), ds).task_time(ti.task_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(target)


def _record_quietly(context, state: str, reason: str | None = None) -> None:
    try:
        record_task_time(context, state, reason=reason)
    except Exception as exc:  # noqa: BLE001 - bookkeeping must never fail a task that ended well
        context["ti"].log.warning("could not record the task's timing: %s", exc)


def on_task_success(context) -> None:
    _record_quietly(context, "success")


def on_task_skipped(context) -> None:
    """A step that skipped itself (e.g. audiences without their sources): shown as skipped by `pm run`."""
    _record_quietly(context, "skipped", reason=context.get("skip_reason"))


def on_task_failure(context) -> None:
    """Final failure of a task (after its retries): alert, and record its timing."""
    from precision_marketing.alerts import notify

    error = context.get("exception")
    text = str(error).strip() if error else ""
    summary = (text.splitlines() or ["no exception recorded"])[0][:500]
    notify("error", f"task {context['ti'].task_id} failed: {summary}", _task_context(context))
    try:
        record_task_time(context, "failed", error=text[:4000] or type(error).__name__)
    except Exception:  # noqa: BLE001
        pass

