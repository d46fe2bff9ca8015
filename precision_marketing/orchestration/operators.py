"""The few Airflow pieces the DAG needs beyond PythonOperator: the steps' lineage, the landing-file sensor, the Spark
steps' kill, the report task with its extra link, and the task callbacks (failure alert, per-task timing for the run
report).

Imported by the DAG file only (it needs the Airflow Task SDK); the logic they call lives in landing.py,
alerts.py, pipeline.py and report.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import BaseOperatorLink, BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout

from precision_marketing.config import load_config

REPORT_URL_PREFIX = "/pm-reports"


def report_path(ds: str) -> str:
    """URL path (on the Airflow API server, served by the plugin in airflow_plugin.py) of a ds's HTML report."""
    return f"{REPORT_URL_PREFIX}/ds={ds}/report.html"


class LandingFilesSensor(BaseSensorOperator):
    """Waits until the landing files (or `_READY` markers) of `ds` that the run will read are in the lake
    (precision_marketing/ingest/arrivals.py says which).

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
        from precision_marketing.ingest.arrivals import missing_landing
        from precision_marketing.ingest.mapping import mapping_from_config
        from precision_marketing.storage import storage_from_config

        config = load_config()
        storage = storage_from_config(config)
        self._missing = missing_landing(
            storage,
            self.ds,
            history_days=config["dbt"]["history_days"],
            mapping=mapping_from_config(config),
            ready_marker_sources=config["landing"]["ready_marker_sources"],
        )
        if self._missing:
            self.log.info(
                "waiting for %d landing file(s) of ds=%s: %s", len(self._missing), self.ds, ", ".join(self._missing)
            )
        return not self._missing

    def execute(self, context) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            waited = dt.timedelta(seconds=int(self.timeout))
            raise AirflowSensorTimeout(
                f"landing files for ds={self.ds} still missing after waiting {waited}: "
                + ", ".join(self._missing)
                + f" ({exc})"
            ) from None


class StepOperator(PythonOperator):
    """A pipeline step (pipeline.py) that tells OpenLineage what it read and wrote (orchestration/lineage.py)."""

    def get_openlineage_facets_on_complete(self, task_instance):
        from airflow.providers.openlineage.extractors import OperatorLineage

        from precision_marketing.orchestration.lineage import step_lineage

        inputs, outputs = step_lineage(self.task_id, load_config(), self.op_kwargs["ds"])
        return OperatorLineage(inputs=inputs, outputs=outputs)

    def get_openlineage_facets_on_failure(self, task_instance):
        """A failed step read its inputs but wrote nothing a reader should trust: no outputs in its FAIL event."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        return OperatorLineage(inputs=self.get_openlineage_facets_on_complete(task_instance).inputs)


class PublishOperator(StepOperator):
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
            context["outlet_events"][asset].extra = {
                "ds": ds,
                "run_id": context["ti"].run_id,
                "table": table,
                "rows": rows,
                **figures,
            }
        return manifests


class SparkStepOperator(StepOperator):
    """A step that submits Spark jobs through the Spark provider's hook (training/spark_submit.py): when the task
    is killed (its timeout, or marked failed in the UI) the job stops with it, on a cluster too."""

    ui_color = "#fde2cf"

    def on_kill(self) -> None:
        from precision_marketing.training.spark_submit import kill_running_jobs

        kill_running_jobs()
        super().on_kill()


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


class ReportOperator(StepOperator):
    operator_extra_links = (RunReportLink(),)
