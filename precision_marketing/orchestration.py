"""What the DAG file needs from the platform, in one place: the Cosmos (dbt) configuration and the
environment an in-repo Airflow runs with. No logic here runs at DAG-parse time beyond reading config."""
from __future__ import annotations

import datetime as dt
import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping

from precision_marketing.config import REPO_ROOT, load_config
from precision_marketing.pipeline import StepSkipped, dbt_vars as run_dbt_vars

DAG_ID = "nightly_marketing"
DBT_PROFILE = "precision_marketing"
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
        return data_interval_start.astimezone(dt.timezone.utc).date().isoformat()
    run_after = getattr(dag_run, "run_after", None) or dt.datetime.now(dt.timezone.utc)
    return (run_after.astimezone(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()


def context_ds(context: Mapping) -> str:
    """processed_ds from a task's context (callbacks, operators)."""
    return processed_ds(context.get("params"), context.get("data_interval_start"), context.get("dag_run"))


def dag_params(config: Mapping | None = None) -> dict[str, dict]:
    """The DAG's run parameters as JSON-schema specs (the DAG turns them into typed Params; `pm run --conf`
    checks against the same specs). Defaults come from the configuration."""
    config = config or load_config()
    return {
        "ds": {"default": None, "type": ["null", "string"], "format": "date",
               "title": "Day to process (YYYY-MM-DD)",
               "description": "Empty: the last complete day before the run's logical date, i.e. yesterday (UTC) "
                              "for a run triggered now; a scheduled run processes the day that just ended. Set a "
                              "day to (re)process it: its published tables are replaced whole."},
        "top_k": {"default": int(config["als"]["top_k"]), "type": "integer", "minimum": 1, "maximum": 200,
                  "title": "Recommendations per user (K)",
                  "description": "Products recommended per user, 1 to 200 (default: configuration als.top_k)."},
        "holdout_days": {"default": int(config["ctr"]["holdout_days"]), "type": "integer", "minimum": 1,
                         "maximum": 60, "title": "Holdout days for model evaluation (CTR; ALS with split time)",
                         "description": "The last N days are held out to evaluate the CTR model, and the "
                                        "recommendations when als.split is 'time' (the default split holds out "
                                        "each user's latest interactions instead), 1 to 60."},
        "spark_master": {"default": None, "type": ["null", "string"],
                         "title": "Spark master (empty = config spark.master)",
                         "description": "e.g. local[*], spark://host:7077, yarn. Empty: configuration spark.master."},
        "full_refresh": {"default": False, "type": "boolean", "title": "Rebuild dbt staging from every landed partition",
                         "description": "dbt --full-refresh: type and check the whole window again, not only the "
                                        "landing partitions that are new or changed since the last run."},
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
    """The dbt project as an Airflow task group: one task per model (the model and its tests).

    dbt.execution_mode `watcher` (default): one `dbt build` of the whole project in the task
    `dbt_producer_watcher`, and per model a task that reports how that model and its tests ended in that build
    (a failed model fails its own task, naming it; the models after it are not run). One dbt start-up per night
    instead of one per model. `local`: each model's task runs its own `dbt build --select` (a start-up each).
    `full_refresh` (DAG param) rebuilds the incremental staging models."""
    from cosmos import DbtTaskGroup, ExecutionConfig, LoadMode, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import ExecutionMode, InvocationMode, TestBehavior, TestIndirectSelection

    config = load_config()
    project = Path(config["dbt"]["project_dir"])
    manifest = dbt_manifest_path(config)
    if not manifest.exists():
        raise FileNotFoundError(
            f"dbt manifest not found at {manifest}: run `pm setup` (or `make demo`), which runs `dbt parse`")
    mode = config["dbt"]["execution_mode"]  # watcher | local (config_schema.py)
    dbt_vars = run_dbt_vars(config, DS_TEMPLATE)  # the same vars as a run by hand, the day templated
    operator_args = {"vars": dbt_vars, "env": dbt_env(config), "install_deps": False,
                     "full_refresh": "{{ params.full_refresh }}"}
    if mode == "watcher":
        # the model tasks run after the build (producer >> model tasks below), so they only read its results:
        # no deferral, no polling
        operator_args.update(deferrable=False, poke_interval=1)
    group = DbtTaskGroup(
        group_id=group_id,
        project_config=ProjectConfig(dbt_project_path=project, manifest_path=manifest, install_dbt_deps=False),
        profile_config=ProfileConfig(profile_name=DBT_PROFILE, target_name=config["dbt"]["target"],
                                     profiles_yml_filepath=project / "profiles.yml"),
        execution_config=ExecutionConfig(execution_mode=ExecutionMode.WATCHER if mode == "watcher" else ExecutionMode.LOCAL,
                                         invocation_mode=InvocationMode.DBT_RUNNER,
                                         # a model's task runs the tests whose other parents are its ancestors
                                         # (already built); a relationship test runs with its child model
                                         test_indirect_selection=TestIndirectSelection.BUILDABLE,
                                         dbt_executable_path=str(dbt_executable())),
        # emit_datasets off (here, not in operator_args, which Cosmos overrides from RenderConfig): only the
        # published tables are Assets, no per-model DuckDB relation assets and their URI warnings.
        # watcher: a model's task and its tests' task report from the one build; local: `dbt build` per model
        render_config=RenderConfig(load_method=LoadMode.DBT_MANIFEST, emit_datasets=False,
                                   test_behavior=TestBehavior.AFTER_EACH if mode == "watcher" else TestBehavior.BUILD),
        operator_args=operator_args,
    )
    if mode == "watcher":
        _run_model_tasks_after_the_build(group)
    return group


def _run_model_tasks_after_the_build(group) -> None:
    """Cosmos starts a task group's watcher tasks beside the build, waiting for its results; `airflow dags test`
    (pm run) runs one task at a time and would wait forever on a watcher picked first. So the build runs first and
    the first model tasks follow it whatever its outcome (trigger rule `always`: a model that failed in the build
    fails its own task)."""
    from cosmos.constants import PRODUCER_WATCHER_DONE_TASK_ID, PRODUCER_WATCHER_TASK_ID

    prefix = f"{group.group_id}."
    producer = group.children[prefix + PRODUCER_WATCHER_TASK_ID]
    for task in list(group.iter_tasks()):
        if task is producer or task.task_id == prefix + PRODUCER_WATCHER_DONE_TASK_ID:
            continue
        if not any(upstream.startswith(prefix) for upstream in task.upstream_task_ids):
            producer >> task
            task.trigger_rule = "always"


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
def run_ds(dag_run) -> str:
    """The day a DAG run processed (what DS_TEMPLATE rendered to), from its metadata-DB record."""
    return processed_ds(dag_run.conf, dag_run.data_interval_start, dag_run)


def nightly_timetable():
    """Daily data intervals in UTC: the run after midnight processes the day that ended (see DS_TEMPLATE)."""
    from airflow.sdk import CronDataIntervalTimetable

    return CronDataIntervalTimetable("0 0 * * *", timezone="UTC")


def default_args(config: Mapping | None = None) -> dict:
    from precision_marketing.operators import on_task_failure, on_task_skipped, on_task_success

    orchestration = (config or load_config())["orchestration"]
    return {"retries": int(orchestration["retries"]),
            "retry_delay": dt.timedelta(minutes=float(orchestration["retry_delay_minutes"])),
            "on_failure_callback": on_task_failure,  # after the last retry: alert (alerts.notify)
            "on_success_callback": on_task_success,  # timing for the run report
            "on_skipped_callback": on_task_skipped}


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
        # dbt's partial_parse.msgpack carried from one model's task to the next: without it every task re-parses
        # the whole project (~2.5 s of a ~3 s task). Kept inside Airflow's home, not the shared /tmp default.
        "AIRFLOW__COSMOS__ENABLE_CACHE": "True",
        "AIRFLOW__COSMOS__CACHE_DIR": str(home / "cosmos_cache"),
        "GX_ANALYTICS_ENABLED": "false",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
        "SCARF_ANALYTICS": "false",
    }
    venv_bin = str(Path(sys.executable).parent)  # `airflow standalone` and spark-submit look for tools on PATH
    return {**defaults, **os.environ, "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}


def api_url(environ: Mapping[str, str] | None = None) -> str:
    """Where the Airflow API server is (and where tasks find its execution API)."""
    environ = os.environ if environ is None else environ
    return (environ.get("AIRFLOW__API__BASE_URL") or "http://localhost:8080").rstrip("/")


def airflow_health(base_url: str, timeout: float = 3.0) -> dict | None:
    """The API server's health document, or None when nothing answers there."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{base_url}/api/v2/monitor/health", timeout=timeout) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def scheduler_is_up(base_url: str) -> bool:
    health = airflow_health(base_url) or {}
    return (health.get("scheduler") or {}).get("status") == "healthy"


class AirflowServers:
    """The Airflow processes of a production deployment, on this machine: scheduler (LocalExecutor),
    DAG processor and API server (UI, REST API, and the execution API the tasks report to).

    `pm backfill` starts them when none are running; the end-to-end tests share one set per session.
    Each process logs to <log_dir>/<name>.log. Use as a context manager, or start() / stop()."""

    NAMES = ("api-server", "scheduler", "dag-processor")

    def __init__(self, config: Mapping, port: int, log_dir: Path, extra_env: Mapping[str, str] | None = None):
        self.base_url = f"http://127.0.0.1:{port}"
        self.port = port
        self.log_dir = Path(log_dir)
        self.env = {**airflow_env(config), "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                    "AIRFLOW__API__BASE_URL": self.base_url,
                    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                    "AIRFLOW__API__WORKERS": "1", **(extra_env or {})}
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, timeout: float = 180) -> "AirflowServers":
        import time

        airflow_bin = str(Path(sys.executable).with_name("airflow"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in self.NAMES:
            command = [airflow_bin, name] + (["--port", str(self.port), "--host", "127.0.0.1"]
                                             if name == "api-server" else [])
            log = (self.log_dir / f"{name}.log").open("ab")
            # own process group: stop() ends the server and the workers it forked, nothing else
            self.processes[name] = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                    start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"airflow {name} exited with {process.returncode}; "
                                       f"see {self.log_dir / (name + '.log')}")
            if scheduler_is_up(self.base_url):
                return self
            time.sleep(2)
        self.stop()
        raise TimeoutError(f"Airflow did not become healthy at {self.base_url} in {timeout:.0f} s; "
                           f"logs in {self.log_dir}")

    def stop(self, timeout: float = 30) -> None:
        import signal

        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()

    def __enter__(self) -> "AirflowServers":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
