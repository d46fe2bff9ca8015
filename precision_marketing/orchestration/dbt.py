"""dbt in Airflow: the manifest `dbt parse` writes and the Cosmos task group the DAG renders from it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from precision_marketing.config import load_config
from precision_marketing.orchestration.schedule import DS_TEMPLATE
from precision_marketing.pipeline import dbt_vars as run_dbt_vars

DBT_PROFILE = "precision_marketing"


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
        [
            str(dbt_executable()),
            "parse",
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(project),
            "--target",
            config["dbt"]["target"],
            "--target-path",
            str(target),
            "--quiet",
        ],
        check=True,
        env={**os.environ, **dbt_env(config)},
        cwd=project,
    )
    return target / "manifest.json"


def cosmos_dbt_group(group_id: str = "dbt"):
    """The dbt project as an Airflow task group: one task per model (the model and its tests).

    dbt.execution_mode `local` (the default in config/platform.yaml): each model's task runs its own
    `dbt build --select` (a start-up each, the partial-parse cache shared). `watcher` (experimental): one
    `dbt build` of the whole project in the task `dbt_producer_watcher`, and per model a task that reports how
    that model and its tests ended in that build (a failed model fails its own task, naming it; the models after
    it are not run): one dbt start-up per night instead of one per model.
    `full_refresh` (DAG param) rebuilds the incremental staging models."""
    from cosmos import DbtTaskGroup, ExecutionConfig, LoadMode, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import ExecutionMode, InvocationMode, TestBehavior, TestIndirectSelection

    config = load_config()
    project = Path(config["dbt"]["project_dir"])
    manifest = dbt_manifest_path(config)
    if not manifest.exists():
        raise FileNotFoundError(
            f"dbt manifest not found at {manifest}: run `pm setup` (or `make demo`), which runs `dbt parse`"
        )
    mode = config["dbt"]["execution_mode"]  # local | watcher (config/schema.py)
    dbt_vars = run_dbt_vars(config, DS_TEMPLATE)  # the same vars as a run by hand, the day templated
    operator_args = {
        "vars": dbt_vars,
        "env": dbt_env(config),
        "install_deps": False,
        "full_refresh": "{{ params.full_refresh }}",
    }
    if mode == "watcher":
        # the model tasks run after the build (producer >> model tasks below), so they only read its results:
        # no deferral, no polling
        operator_args.update(deferrable=False, poke_interval=1)
    group = DbtTaskGroup(
        group_id=group_id,
        project_config=ProjectConfig(dbt_project_path=project, manifest_path=manifest, install_dbt_deps=False),
        profile_config=ProfileConfig(
            profile_name=DBT_PROFILE,
            target_name=config["dbt"]["target"],
            profiles_yml_filepath=project / "profiles.yml",
        ),
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.WATCHER if mode == "watcher" else ExecutionMode.LOCAL,
            invocation_mode=InvocationMode.DBT_RUNNER,
            # a model's task runs the tests whose other parents are its ancestors
            # (already built); a relationship test runs with its child model
            test_indirect_selection=TestIndirectSelection.BUILDABLE,
            dbt_executable_path=str(dbt_executable()),
        ),
        # emit_datasets off (here, not in operator_args, which Cosmos overrides from RenderConfig): only the
        # published tables are Assets, no per-model DuckDB relation assets and their URI warnings.
        # watcher: a model's task and its tests' task report from the one build; local: `dbt build` per model
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            emit_datasets=False,
            test_behavior=TestBehavior.AFTER_EACH if mode == "watcher" else TestBehavior.BUILD,
        ),
        operator_args=operator_args,
    )
    if mode == "watcher":
        _run_model_tasks_after_the_build(group)
    return group


def _run_model_tasks_after_the_build(group) -> None:
    """Cosmos starts a task group's watcher tasks beside the build, waiting for its results; `airflow dags test`
    (pm run) runs one task at a time and would wait forever on a watcher picked first. So the build runs first and
    the first model tasks follow it whatever its outcome (trigger rule `all_done`: a model that failed in the build
    fails its own task; `always` would not wait for the build at all)."""
    from cosmos.constants import PRODUCER_WATCHER_DONE_TASK_ID, PRODUCER_WATCHER_TASK_ID

    prefix = f"{group.group_id}."
    producer = group.children[prefix + PRODUCER_WATCHER_TASK_ID]
    for task in list(group.iter_tasks()):
        if task is producer or task.task_id == prefix + PRODUCER_WATCHER_DONE_TASK_ID:
            continue
        if not any(upstream.startswith(prefix) for upstream in task.upstream_task_ids):
            producer >> task
            task.trigger_rule = "all_done"
