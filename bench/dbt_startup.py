"""`make bench-dbt`: what the dbt step of a night costs in Airflow, per Cosmos execution mode. Not a test: figures.

On generated data (1x = the demo's size), night 1 (check_raw + dbt for ds) prepares the warehouse; then night 2
(ds + 1: one new day, the incremental case) runs from that same warehouse state once per variant:
  dbt-cli      one `dbt build` of the whole project, no Airflow: the floor
  local        Cosmos ExecutionMode.LOCAL: each model's task runs `dbt build --select <model>` (one dbt start-up
               per model; the setting before dbt.execution_mode)
  local+cache  the same with Cosmos' partial-parse cache (AIRFLOW__COSMOS__ENABLE_CACHE=True)
  watcher      ExecutionMode.WATCHER (dbt.execution_mode: watcher, the default): one `dbt build`, one task per
               model and per model's tests reporting its result
  layers       dbt.execution_mode layers (the default): one `dbt build --selector <layer>` task per layer of
               dbt_project/selectors.yml
Each Airflow variant runs `airflow dags test` with every task but check_raw and the dbt group marked successful;
the figure is the dbt group's span (first dbt task's start to the last one's end, from the DAG's task timing records),
beside the sum of dbt's own node times of that night (run_results.json of the dbt-cli variant). Results:
bench/results/dbt_startup_<scale>x.json and a Markdown table on stdout.

--scheduler runs night 2 as production does instead: `pm backfill` of that one day through Airflow's scheduler
(LocalExecutor: each task its own process), API server and DAG processor, started per variant with a fresh Airflow
database. The whole night runs (the Spark jobs with fewer iterations: PM__ALS__MAX_ITER=5, tuning 2 fits,
PM__CTR__MAX_ITER=20); the figures are the dbt span and the night's span (first task's start to the last one's end).

    .venv/bin/python bench/dbt_startup.py [--scale 1] [--variants dbt-cli local local+cache watcher layers]
    .venv/bin/python bench/dbt_startup.py --scheduler --variants layers local watcher
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent
DAG_ID = "nightly_marketing"
NOT_DBT = r"(?!check_raw$|dbt\.).*"  # dags test --mark-success-pattern: everything else is marked, not run
VARIANTS = {
    "local": {"PM__DBT__EXECUTION_MODE": "local", "AIRFLOW__COSMOS__ENABLE_CACHE": "False"},
    "local+cache": {"PM__DBT__EXECUTION_MODE": "local", "AIRFLOW__COSMOS__ENABLE_CACHE": "True"},
    "watcher": {"PM__DBT__EXECUTION_MODE": "watcher", "AIRFLOW__COSMOS__ENABLE_CACHE": "False"},
    "layers": {"PM__DBT__EXECUTION_MODE": "layers", "AIRFLOW__COSMOS__ENABLE_CACHE": "True"},
}
LIGHT_SPARK = {"PM__ALS__MAX_ITER": "5", "PM__ALS__TUNING__MAX_FITS": "2", "PM__CTR__MAX_ITER": "20"}


def state_env(root: Path, airflow_home: Path, extra: dict | None = None) -> dict:
    return {
        **os.environ,
        "PM__LAKE__LOCAL_ROOT": str(root / "lake"),
        "PM__WORK_DIR": str(root / "work"),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        **(extra or {}),
    }


def pm(args: list[str], env: dict, log: Path) -> float:
    started = time.monotonic()
    with log.open("a") as out:
        subprocess.run([str(BIN / "pm"), *args], env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.monotonic() - started


def dbt_span(work: Path, ds: str, since: float, pattern: str = "dbt.*.json") -> dict:
    """The dbt group's span and task count in the run of ds that ended after `since`, from the timing records
    the DAG's task callbacks write (<work>/runs/ds=D/tasks/)."""
    records = [json.loads(p.read_text()) for p in (work / "runs" / f"ds={ds}" / "tasks").glob(pattern)]
    when = lambda v: dt.datetime.fromisoformat(v).timestamp()  # noqa: E731
    records = [r for r in records if r.get("start") and when(r["end"]) >= since]
    start, end = min(when(r["start"]) for r in records), max(when(r["end"]) for r in records)
    failed = [r["task_id"] for r in records if r["state"] not in ("success", "skipped")]
    return {"seconds": round(end - start, 1), "tasks": len(records), "failed": failed}


def dbt_cli(root: Path, ds: str, log: Path) -> dict:
    """One `dbt build` of the whole project for ds (the landed zone check_raw wrote): wall and node times."""
    from precision_marketing.config import load_config
    from precision_marketing.orchestration.dbt import dbt_env
    from precision_marketing.pipeline import dbt_vars

    os.environ.update(state_env(root, root / "airflow-cli"))
    config = load_config()
    target = root / "work" / "dbt_cli_target"
    command = [
        str(BIN / "dbt"),
        "build",
        "--project-dir",
        config["dbt"]["project_dir"],
        "--profiles-dir",
        config["dbt"]["project_dir"],
        "--target-path",
        str(target),
        "--log-path",
        str(root / "work" / "dbt_cli_logs"),
        "--vars",
        json.dumps(dbt_vars(config, ds)),
    ]
    started = time.monotonic()
    with log.open("a") as out:
        subprocess.run(
            command,
            env={**os.environ, **dbt_env(config)},
            cwd=config["dbt"]["project_dir"],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
        )
    wall = time.monotonic() - started
    results = json.loads((target / "run_results.json").read_text())["results"]
    return {
        "seconds": round(wall, 1),
        "tasks": 0,
        "failed": [r["unique_id"] for r in results if r["status"] not in ("success", "pass")],
        "node_seconds": round(sum(r["execution_time"] for r in results), 1),
        "nodes": len(results),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--ds", default="2026-11-22", help="night 1; night 2 is the day after")
    parser.add_argument("--variants", nargs="+", default=["dbt-cli", *VARIANTS], choices=["dbt-cli", *VARIANTS])
    parser.add_argument("--state", type=Path, default=REPO / ".state" / "bench")
    parser.add_argument("--scheduler", action="store_true", help="night 2 through the scheduler (pm backfill)")
    args = parser.parse_args(argv)
    root = (args.state / f"dbt-startup-{args.scale}x").resolve()
    night2 = (dt.date.fromisoformat(args.ds) + dt.timedelta(days=1)).isoformat()
    log = root / "bench.log"
    shutil.rmtree(root / "work", ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    prepare = state_env(root, root / "airflow-prepare", VARIANTS["local"])
    for day in (args.ds, night2):
        pm(
            ["generate", "--ds", day, "--users", str(20_000 * args.scale), "--items", str(2_000 * args.scale)],
            prepare,
            log,
        )
    pm(["setup"], prepare, log)
    pm(
        ["airflow", "dags", "test", DAG_ID, "--conf", json.dumps({"ds": args.ds}), "--mark-success-pattern", NOT_DBT],
        prepare,
        log,
    )
    saved = root / "warehouse-night1.duckdb"
    shutil.copy(root / "work" / "warehouse.duckdb", saved)
    # check_raw of night 2 once, so every variant starts from the same landed zone
    from precision_marketing import pipeline

    os.environ.update(prepare)
    pipeline.stage_and_check_raw(night2)

    results = {}
    for variant in args.variants:
        shutil.copy(saved, root / "work" / "warehouse.duckdb")
        print(f"[{args.scale}x] night 2 ({night2}) with {variant} ...", file=sys.stderr, flush=True)
        if variant == "dbt-cli":
            results[variant] = dbt_cli(root, night2, log)
            continue
        home = root / f"airflow-{variant}"
        shutil.rmtree(home, ignore_errors=True)
        env = state_env(root, home, VARIANTS[variant])
        pm(["setup"], env, log)
        started = time.time()
        if args.scheduler:
            env = {**env, **LIGHT_SPARK, "AIRFLOW__API__BASE_URL": "http://127.0.0.1:18795"}
            pm(["backfill", "--from", night2, "--to", night2], env, log)
            results[variant] = {
                **dbt_span(root / "work", night2, started),
                "night": dbt_span(root / "work", night2, started, "*.json"),
            }
            continue
        pm(
            [
                "airflow",
                "dags",
                "test",
                DAG_ID,
                "--conf",
                json.dumps({"ds": night2}),
                "--mark-success-pattern",
                NOT_DBT,
            ],
            env,
            log,
        )
        results[variant] = dbt_span(root / "work", night2, started)
    out = {
        "scale": args.scale,
        "through": "scheduler (pm backfill, LocalExecutor)" if args.scheduler else "airflow dags test",
        "night": night2,
        "cpus": os.cpu_count(),
        "load_average_after": os.getloadavg(),
        "variants": results,
    }
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    name = f"dbt_startup_{args.scale}x{'_scheduler' if args.scheduler else ''}.json"
    (REPO / "bench" / "results" / name).write_text(json.dumps(out, indent=2) + "\n")
    floor = results.get("dbt-cli", {}).get("node_seconds")
    print(f"\ndbt step of a night with one new day, {args.scale}x ({night2}); dbt's own node time: {floor} s")
    print("| variant | dbt group (s) | Airflow tasks | failed | night (s) |\n|---|---|---|---|---|")
    for variant, figure in results.items():
        night = (figure.get("night") or {}).get("seconds", "-")
        failed = ", ".join(figure["failed"]) or "-"
        print(f"| {variant} | {figure['seconds']} | {figure['tasks']} | {failed} | {night} |")


if __name__ == "__main__":
    main()
