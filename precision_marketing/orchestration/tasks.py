"""How every task of the DAG behaves: retries, callbacks, the landing sensor's pacing, and a step's
StepSkipped turned into a skipped task."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping

from precision_marketing.config import load_config
from precision_marketing.pipeline import StepSkipped


def skippable(step):
    """A pipeline step for a PythonOperator: StepSkipped (a source it needs was not delivered) makes the task
    skipped, with the reason in its log, instead of failed."""

    @functools.wraps(step)
    def run(*args, **kwargs):
        try:
            return step(*args, **kwargs)
        except StepSkipped as skipped:
            from airflow.sdk import get_current_context
            from airflow.sdk.exceptions import AirflowSkipException

            print(f"skipped: {skipped}", flush=True)
            get_current_context()["skip_reason"] = str(skipped)  # for the skip callback's record (pm run's line)
            raise AirflowSkipException(str(skipped)) from None

    return run


def default_args(config: Mapping | None = None) -> dict:
    from precision_marketing.orchestration.callbacks import on_task_failure, on_task_skipped, on_task_success

    orchestration = (config or load_config())["orchestration"]
    return {
        "retries": int(orchestration["retries"]),
        "retry_delay": dt.timedelta(minutes=float(orchestration["retry_delay_minutes"])),
        "on_failure_callback": on_task_failure,  # after the last retry: alert (alerts.notify)
        "on_success_callback": on_task_success,  # timing for the run report
        "on_skipped_callback": on_task_skipped,
    }


def spark_step_args(config: Mapping | None = None) -> dict:
    """The Spark steps' timeout: past it Airflow fails the task and calls its on_kill, which stops the job."""
    return {"execution_timeout": dt.timedelta(minutes=float((config or load_config())["spark"]["timeout_minutes"]))}


def landing_sensor_args(config: Mapping | None = None) -> dict:
    landing = (config or load_config())["landing"]
    return {
        "poke_interval": float(landing["poke_seconds"]),
        "timeout": 60 * float(landing["timeout_minutes"]),
        "mode": "reschedule",
    }
