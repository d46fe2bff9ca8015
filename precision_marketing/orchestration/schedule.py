"""The night's calendar and run parameters: which day a run processes, the daily timetable, the DAG's
params and the check of a run's conf against them. Nothing here needs the Airflow Task SDK at import time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from precision_marketing.config import load_config

DAG_ID = "nightly_marketing"
# The day a run processes, rendered by processed_ds (a DAG macro); every task reads the day through it.
DS_TEMPLATE = "{{ processed_ds(params, data_interval_start, dag_run) }}"


def processed_ds(params: Mapping | None, data_interval_start=None, dag_run=None) -> str:
    """The day a run processes: the `ds` param when given (any day, re-runs included); otherwise the day of
    the run's data interval. Runs are daily intervals (CronDataIntervalTimetable), so a scheduled run, started
    at midnight after day D, processes D; a manual trigger's interval is the last complete day before its
    logical date (yesterday, for a run triggered now); a backfill run processes its own day."""
    chosen = (params or {}).get("ds")
    if chosen:
        return dt.date.fromisoformat(str(chosen)).isoformat()
    if data_interval_start is not None:
        return data_interval_start.astimezone(dt.UTC).date().isoformat()
    run_after = getattr(dag_run, "run_after", None) or dt.datetime.now(dt.UTC)
    return (run_after.astimezone(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


def context_ds(context: Mapping) -> str:
    """processed_ds from a task's context (callbacks, operators)."""
    return processed_ds(context.get("params"), context.get("data_interval_start"), context.get("dag_run"))


def dag_params(config: Mapping | None = None) -> dict[str, dict]:
    """The DAG's run parameters as JSON-schema specs (the DAG turns them into typed Params; `pm run --conf`
    checks against the same specs). Defaults come from the configuration."""
    config = config or load_config()
    return {
        "ds": {
            "default": None,
            "type": ["null", "string"],
            "format": "date",
            "title": "Day to process (YYYY-MM-DD)",
            "description": "Empty: the last complete day before the run's logical date, i.e. yesterday (UTC) "
            "for a run triggered now; a scheduled run processes the day that just ended. Set a "
            "day to (re)process it: its published tables are replaced whole.",
        },
        "top_k": {
            "default": config["als"]["top_k"],
            "type": "integer",
            "minimum": 1,
            "maximum": 200,
            "title": "Recommendations per user (K)",
            "description": "Products recommended per user, 1 to 200 (default: configuration als.top_k).",
        },
        "holdout_days": {
            "default": config["ctr"]["holdout_days"],
            "type": "integer",
            "minimum": 1,
            "maximum": 60,
            "title": "Holdout days for model evaluation (CTR; ALS with split time)",
            "description": "The last N days are held out to evaluate the CTR model, and the "
            "recommendations when als.split is 'time' (the default split holds out "
            "each user's latest interactions instead), 1 to 60.",
        },
        "spark_master": {
            "default": None,
            "type": ["null", "string"],
            "title": "Spark master (empty = config spark.master)",
            "description": "e.g. local[*], spark://host:7077, yarn. Empty: configuration spark.master.",
        },
        "full_refresh": {
            "default": False,
            "type": "boolean",
            "title": "Rebuild dbt staging from every landed partition",
            "description": "dbt --full-refresh: type and check the whole window again, not only the "
            "landing partitions that are new or changed since the last run.",
        },
    }


def check_conf(conf: Mapping, config: Mapping | None = None) -> list[str]:
    """Problems of a run's conf against the DAG params, one readable line each (empty list: fine)."""
    import jsonschema

    specs = dag_params(config)
    problems = []
    for name, value in conf.items():
        if name not in specs:
            problems.append(f"unknown parameter {name!r} (parameters: {', '.join(specs)})")
            continue
        schema = {k: v for k, v in specs[name].items() if k not in ("default", "title", "description")}
        for error in jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker()).iter_errors(value):
            problems.append(f"{name} = {value!r} is not allowed: {error.message} ({specs[name]['title']})")
    return problems


def run_ds(dag_run) -> str:
    """The day a DAG run processed (what DS_TEMPLATE rendered to), from its metadata-DB record."""
    return processed_ds(dag_run.conf, dag_run.data_interval_start, dag_run)


def nightly_timetable():
    """Daily data intervals in UTC: the run after midnight processes the day that ended (see DS_TEMPLATE)."""
    from airflow.sdk import CronDataIntervalTimetable

    return CronDataIntervalTimetable("0 0 * * *", timezone="UTC")
