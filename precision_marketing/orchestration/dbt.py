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
    """The environment dbt_project/profiles.yml reads: the warehouse file and DuckDB's memory limit."""
    return {
        "PM_DUCKDB_PATH": str(Path(config["work_dir"]) / "warehouse.duckdb"),
        "PM_DUCKDB_MEMORY_LIMIT": config["dbt"]["duckdb_memory_limit"],
    }


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


def dbt_layers(project_dir: Path) -> list[str]:
    """The night's dbt layers in build order: the selectors of dbt_project/selectors.yml."""
    import yaml

    return [selector["name"] for selector in yaml.safe_load((project_dir / "selectors.yml").read_text())["selectors"]]


def _profile_config(config: Mapping):
    from cosmos import ProfileConfig

    project = Path(config["dbt"]["project_dir"])
    return ProfileConfig(
        profile_name=DBT_PROFILE, target_name=config["dbt"]["target"], profiles_yml_filepath=project / "profiles.yml"
    )


def _operator_args(config: Mapping) -> dict:
    return {
        "vars": run_dbt_vars(config, DS_TEMPLATE),  # the same vars as a run by hand, the day templated
        "env": dbt_env(config),
        "install_deps": False,
        "full_refresh": "{{ params.full_refresh }}",
    }


def dbt_group(group_id: str = "dbt"):
    """The dbt step of the night, as dbt.execution_mode says (config/platform.yaml; figures in the README):

    `layers` (default): one task per layer of dbt_project/selectors.yml (staging, marts, audit), each one
    `dbt build --selector <layer>`: a dbt start-up per layer, not per model. Each model's and test's result is in
    the task's log, in the run report (from <work_dir>/runs/ds=D/dbt/<layer>.json); a failed model fails its
    layer's task naming it, the models after it are skipped, and a retry of the task rebuilds that layer only.
    `local` / `watcher`: one task per model through Cosmos (cosmos_model_group)."""
    config = load_config()
    if config["dbt"]["execution_mode"] != "layers":
        return cosmos_model_group(group_id)
    from airflow.sdk import TaskGroup
    from cosmos.constants import InvocationMode
    from cosmos.operators.local import DbtBuildLocalOperator

    project = Path(config["dbt"]["project_dir"])
    profile = _profile_config(config)
    tasks = []
    with TaskGroup(group_id=group_id, tooltip="dbt build, one task per layer (dbt_project/selectors.yml)") as group:
        for layer in dbt_layers(project):
            tasks.append(
                DbtBuildLocalOperator(
                    task_id=layer,
                    project_dir=str(project),
                    profile_config=profile,
                    # its tests come with it by the selector's own indirect selection (selectors.yml: a YAML
                    # selector ignores --indirect-selection)
                    selector=layer,
                    invocation_mode=InvocationMode.DBT_RUNNER,
                    dbt_executable_path=str(dbt_executable()),
                    emit_datasets=False,  # only the published tables are Assets
                    callback=record_dbt_results,
                    callback_args={"layer": layer},
                    **_operator_args(config),
                )
            )
        for upstream, downstream in zip(tasks, tasks[1:], strict=False):
            upstream >> downstream
    return group


def record_dbt_results(project_dir: str, *, layer: str, context) -> None:
    """Cosmos calls this after a layer's `dbt build`, failed or not, before it raises a failure: each node's
    status and time, for the run report."""
    import json

    from precision_marketing.orchestration.schedule import context_ds
    from precision_marketing.pipeline import paths_for

    results_file = Path(project_dir) / "target" / "run_results.json"
    if not results_file.exists():  # dbt stopped before running a node: Cosmos raises its error next
        return
    run_results = json.loads(results_file.read_text())
    nodes = [
        {
            "unique_id": result["unique_id"],
            "status": result["status"],
            "seconds": round(result.get("execution_time") or 0.0, 2),
            "message": result.get("message"),
        }
        for result in run_results["results"]
    ]
    path = paths_for(load_config(), context_ds(context)).dbt_results(layer)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "layer": layer,
        "run_id": context["run_id"],
        "finished_at": run_results["metadata"]["generated_at"],
        "seconds": run_results.get("elapsed_time"),
        "nodes": nodes,
    }
    path.write_text(json.dumps(record, indent=1))


def cosmos_model_group(group_id: str = "dbt"):
    """The dbt project as a Cosmos task group, one task per model (the model and its tests).

    dbt.execution_mode `local`: each model's task runs its own `dbt build --select` (a start-up each, the
    partial-parse cache shared). `watcher`: one `dbt build` of the whole project in the task
    `dbt_producer_watcher`, and per model a task that reports how that model and its tests ended in that build (a
    failed model fails its own task, naming it; the models after it are not run)."""
    from cosmos import DbtTaskGroup, ExecutionConfig, LoadMode, ProjectConfig, RenderConfig
    from cosmos.constants import ExecutionMode, InvocationMode, TestBehavior, TestIndirectSelection

    config = load_config()
    project = Path(config["dbt"]["project_dir"])
    manifest = dbt_manifest_path(config)
    if not manifest.exists():
        raise FileNotFoundError(
            f"dbt manifest not found at {manifest}: run `pm setup` (or `make demo`), which runs `dbt parse`"
        )
    watcher = config["dbt"]["execution_mode"] == "watcher"
    operator_args = _operator_args(config)
    if watcher:
        # the model tasks run after the build (producer >> model tasks below), so they only read its results:
        # no deferral, no polling
        operator_args.update(deferrable=False, poke_interval=1)
    group = DbtTaskGroup(
        group_id=group_id,
        project_config=ProjectConfig(dbt_project_path=project, manifest_path=manifest, install_dbt_deps=False),
        profile_config=_profile_config(config),
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.WATCHER if watcher else ExecutionMode.LOCAL,
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
            test_behavior=TestBehavior.AFTER_EACH if watcher else TestBehavior.BUILD,
        ),
        operator_args=operator_args,
    )
    if watcher:
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
