"""What the DAG file needs from the platform, in one place: the Cosmos (dbt) configuration and the
environment an in-repo Airflow runs with. No logic here runs at DAG-parse time beyond reading config."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping

from precision_marketing.config import REPO_ROOT, load_config
from precision_marketing.pipeline import local_raw_dir

DAG_ID = "nightly_marketing"
DBT_PROFILE = "precision_marketing"
# The day a run processes. Runs are daily data intervals (CronDataIntervalTimetable): the scheduled run
# that starts at midnight ending day D has logical date D, so `ds` is the day that just ended; a manual
# trigger or `pm run --ds D` processes its logical date D. Every task reads the day through this template.
DS_TEMPLATE = "{{ ds }}"


def dbt_target_dir(config: Mapping) -> Path:
    return Path(config["work_dir"]) / "dbt_target"


def dbt_manifest_path(config: Mapping) -> Path:
    return dbt_target_dir(config) / "manifest.json"


def dbt_env(config: Mapping) -> dict[str, str]:
    return {"PM_DUCKDB_PATH": str(Path(config["work_dir"]) / "warehouse.duckdb")}


def dbt_executable() -> Path:
    return Path(sys.executable).with_name("dbt")


def dbt_parse(config: Mapping | None = None) -> Path:
    """Write the dbt manifest Cosmos renders the DAG from (milliseconds to load, unlike `dbt ls`)."""
    config = config or load_config()
    project = Path(config["dbt"]["project_dir"])
    target = dbt_target_dir(config)
    subprocess.run(
        [str(dbt_executable()), "parse", "--project-dir", str(project), "--profiles-dir", str(project),
         "--target", config["dbt"]["target"], "--target-path", str(target), "--quiet"],
        check=True, env={**os.environ, **dbt_env(config)}, cwd=project,
    )
    return target / "manifest.json"


def cosmos_dbt_group(group_id: str = "dbt"):
    """The dbt project as an Airflow task group: one task per model, running `dbt build` on it (model + its tests)."""
    from cosmos import DbtTaskGroup, ExecutionConfig, LoadMode, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import ExecutionMode, InvocationMode, TestBehavior, TestIndirectSelection

    config = load_config()
    project = Path(config["dbt"]["project_dir"])
    manifest = dbt_manifest_path(config)
    if not manifest.exists():
        raise FileNotFoundError(
            f"dbt manifest not found at {manifest}: run `pm setup` (or `make demo`), which runs `dbt parse`")
    dbt_vars = {
        "ds": DS_TEMPLATE,
        "raw_dir": str(local_raw_dir(config)),
        "history_days": int(config["dbt"]["history_days"]),
    }
    return DbtTaskGroup(
        group_id=group_id,
        project_config=ProjectConfig(dbt_project_path=project, manifest_path=manifest, install_dbt_deps=False),
        profile_config=ProfileConfig(profile_name=DBT_PROFILE, target_name=config["dbt"]["target"],
                                     profiles_yml_filepath=project / "profiles.yml"),
        execution_config=ExecutionConfig(execution_mode=ExecutionMode.LOCAL,
                                         invocation_mode=InvocationMode.DBT_RUNNER,
                                         # a model's task runs the tests whose other parents are its ancestors
                                         # (already built); a relationship test runs with its child model
                                         test_indirect_selection=TestIndirectSelection.BUILDABLE,
                                         dbt_executable_path=str(dbt_executable())),
        render_config=RenderConfig(load_method=LoadMode.DBT_MANIFEST, test_behavior=TestBehavior.BUILD),
        # emit_datasets off: the published tables are the DAG's Assets, not every intermediate DuckDB relation
        operator_args={"vars": dbt_vars, "env": dbt_env(config), "install_deps": False, "emit_datasets": False},
    )


def nightly_timetable():
    """Daily data intervals in UTC: the run after midnight processes the day that ended (see DS_TEMPLATE)."""
    from airflow.sdk import CronDataIntervalTimetable

    return CronDataIntervalTimetable("0 0 * * *", timezone="UTC")


def default_args(config: Mapping | None = None) -> dict:
    from precision_marketing.operators import on_task_failure, on_task_success

    orchestration = (config or load_config())["orchestration"]
    return {"retries": int(orchestration["retries"]),
            "retry_delay": dt.timedelta(minutes=float(orchestration["retry_delay_minutes"])),
            "on_failure_callback": on_task_failure,  # after the last retry: alert (alerts.notify)
            "on_success_callback": on_task_success}  # timing for the run report


def landing_sensor_args(config: Mapping | None = None) -> dict:
    landing = (config or load_config())["landing"]
    return {"poke_interval": float(landing["poke_seconds"]), "timeout": 60 * float(landing["timeout_minutes"]),
            "mode": "reschedule"}


def airflow_env(config: Mapping | None = None) -> dict[str, str]:
    """Environment for running Airflow: by default an Airflow inside the repo's ignored state folder (SQLite,
    no examples). Settings already in the environment win, so the compose stack's Postgres etc. are kept."""
    config = config or load_config()
    home = Path(os.environ.get("AIRFLOW_HOME") or Path(config["work_dir"]).parent / "airflow")
    defaults = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__COSMOS__ENABLE_CACHE": "False",
        "GX_ANALYTICS_ENABLED": "false",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
        "SCARF_ANALYTICS": "false",
    }
    venv_bin = str(Path(sys.executable).parent)  # `airflow standalone` and spark-submit look for tools on PATH
    return {**defaults, **os.environ, "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}
