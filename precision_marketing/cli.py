"""`pm` — the platform's command line.

  pm demo [--ds D]            generate synthetic data, run the nightly DAG through Airflow, print the results
  pm generate --ds D [...]    write synthetic raw landing files for the window ending at D into the lake
  pm setup                    prepare the in-repo Airflow (db migrate) and the dbt manifest Cosmos renders from
  pm run --ds D               run the nightly DAG for D (`airflow dags test`, in-process, no servers)
  pm query "SQL"              run SQL over the published tables (DuckDB views; local folder or S3)
  pm status                   published partitions and their row counts
  pm airflow ARGS...          the airflow CLI with the in-repo AIRFLOW_HOME
  pm spark-submit JOB ARGS... a job of spark_jobs/ through spark-submit, with the configured master and memory
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from precision_marketing.config import ConfigError, load_config
from precision_marketing.storage import storage_from_config

# over the history view, for the demo's own ds: `recommendations` alone is the latest ds in the lake
EXAMPLE_QUERY = ("SELECT user_id, rank, product_id, round(score, 4) AS score, source FROM recommendations_history "
                 "WHERE ds = DATE '{ds}' AND user_id = (SELECT min(user_id) FROM recommendations_history "
                 "WHERE ds = DATE '{ds}') ORDER BY rank")


def _yesterday() -> str:
    return (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()


def cmd_generate(args, config) -> dict:
    """Land synthetic files in the raw zone. Landing files are immutable, as delivered files are: a partition
    already in the lake is kept (unless --overwrite), so runs for neighbouring dates read the same history."""
    from precision_marketing.datagen import generate

    gen = {**config["datagen"], **{k: v for k, v in vars(args).items()
                                   if k in config["datagen"] and v is not None}}
    storage = storage_from_config(config)
    options = dict(users=int(gen["users"]), items=int(gen["items"]), days=int(gen["days"]),
                   campaigns=int(gen["campaigns"]), dirty_rate=float(gen["dirty_rate"]), seed=int(gen["seed"]),
                   impression_rate=float(gen.get("impression_rate") or 0.04))
    effect = dict(treatment_effect=float(gen.get("treatment_effect") or 0.0), effect_days=int(gen.get("effect_days") or 7))
    if effect["treatment_effect"] > 0:  # close the loop: users exported on earlier nights respond
        effect["exports"] = _published_exports(storage)
    written, kept = 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate(Path(tmp) / "raw", args.ds, **options, **effect)
        for source_dir in sorted((Path(tmp) / "raw").iterdir()):
            for part in sorted(source_dir.iterdir()):
                prefix = f"raw/{source_dir.name}/{part.name}"
                if storage.list_keys(prefix + "/") and not args.overwrite:
                    kept += 1
                    continue
                storage.upload_tree(part, prefix)
                written += 1
    print(f"synthetic raw data for the {options['days']} days up to {args.ds} in {storage.uri('raw')}: "
          f"{written} landing partitions written, {kept} already there kept", file=sys.stderr)
    return {**summary, "partitions_written": written, "partitions_kept": kept}


def _published_exports(storage):
    """(campaign_id, user_id, ds) of every published audience_exports partition (None when there is none)."""
    from precision_marketing.catalog import open_catalog

    con = open_catalog(storage, ["audience_exports"])
    try:
        if not con.execute("select count(*) from information_schema.tables "
                           "where table_name = 'audience_exports_history'").fetchone()[0]:
            return None
        return con.execute("select campaign_id, user_id, cast(ds as varchar) as ds "
                           "from audience_exports_history").to_arrow_table()
    finally:
        con.close()


def airflow(args: list[str], config, check: bool = True) -> subprocess.CompletedProcess:
    from precision_marketing.orchestration import airflow_env

    command = [str(Path(sys.executable).with_name("airflow")), *args]
    return subprocess.run(command, env=airflow_env(config), check=check)


def cmd_setup(args, config) -> None:
    from precision_marketing.orchestration import airflow_env, dbt_parse

    Path(airflow_env(config)["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    dbt_parse(config)
    airflow(["db", "migrate"], config)


def cmd_run(args, config) -> None:
    from precision_marketing.orchestration import DAG_ID

    # a run by hand should fail fast rather than sleep through retry delays; an explicit setting wins
    os.environ.setdefault("PM__ORCHESTRATION__RETRIES", "0")
    config = load_config()
    cmd_setup(args, config)
    started = time.monotonic()
    conf = ["--conf", args.conf] if getattr(args, "conf", None) else []
    result = airflow(["dags", "test", DAG_ID, args.ds, *conf], config, check=False)
    if result.returncode != 0:
        raise SystemExit(f"the nightly run for ds={args.ds} failed (airflow exit {result.returncode}); "
                         "the task log above names the failing step. Published tables were left as they were.")
    print(f"nightly run for ds={args.ds} finished in {time.monotonic() - started:.0f} s")


def cmd_status(args, config) -> None:
    from precision_marketing.publish import published_partitions, read_manifest

    storage = storage_from_config(config)
    for table in config["publish"]["tables"]:
        for ds in published_partitions(storage, table):
            manifest = read_manifest(storage, table, ds)
            print(f"{storage.uri(f'marts/{table}/ds={ds}/')}  rows={manifest['row_count']}  run={manifest['run_id']}")


def cmd_query(args, config) -> None:
    from precision_marketing.catalog import format_table, run_query

    import duckdb

    try:
        columns, rows, truncated = run_query(storage_from_config(config), config["publish"]["tables"], args.sql,
                                             max_rows=args.max_rows)
    except duckdb.Error as exc:
        raise SystemExit(f"query failed: {exc}")
    print(format_table(columns, rows, truncated))


def cmd_demo(args, config) -> None:
    started = time.monotonic()
    cmd_generate(args, config)
    cmd_run(args, config)
    storage = storage_from_config(config)
    print("\n=== published tables ===")
    cmd_status(args, config)
    print("\n=== model metrics ===")
    for model in ("als", "ctr", "segments"):
        metrics = json.loads(storage.get_bytes(f"models/{model}/ds={args.ds}/metrics.json"))
        shown = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
        print(f"{model}: {json.dumps(shown)}")
    print(f"\nrun report: {storage.uri(f'reports/ds={args.ds}/report.md')}")
    args.sql, args.max_rows = EXAMPLE_QUERY.format(ds=args.ds), 20
    print(f"\n=== example query ===\n{args.sql}")
    cmd_query(args, config)
    print(f"\ndemo finished in {time.monotonic() - started:.0f} s; try: .venv/bin/pm query \"select * from audiences limit 5\"")


def _json_object(text: str) -> str:
    try:
        if not isinstance(json.loads(text), dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--conf must be a JSON object, got {text!r} ({exc})")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_ds(p):
        p.add_argument("--ds", default=_yesterday(), type=lambda s: dt.date.fromisoformat(s).isoformat(),
                       help="logical date YYYY-MM-DD (default: yesterday, UTC)")
        return p

    def with_datagen(p):
        p.add_argument("--overwrite", action="store_true",
                       help="replace landing partitions that already exist (default: keep them)")
        for name, kind in (("users", int), ("items", int), ("days", int), ("campaigns", int),
                           ("dirty_rate", float), ("seed", int), ("impression_rate", float)):
            p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None,
                           help="default from config datagen." + name)
        return p

    with_datagen(with_ds(sub.add_parser("demo", help="generate data, run the DAG, show the results")))
    with_datagen(with_ds(sub.add_parser("generate", help="write synthetic raw data into the lake")))
    sub.add_parser("setup", help="airflow db migrate + dbt parse")
    run = with_ds(sub.add_parser("run", help="run the nightly DAG for one ds"))
    run.add_argument("--conf", type=_json_object, help='DAG params as JSON, e.g. \'{"top_k": 20}\'')
    sub.add_parser("status", help="list published partitions")
    query = sub.add_parser("query", help="SQL over the published tables")
    query.add_argument("sql")
    query.add_argument("--max-rows", type=int, default=50)
    af = sub.add_parser("airflow", help="airflow CLI with the in-repo AIRFLOW_HOME")
    af.add_argument("airflow_args", nargs=argparse.REMAINDER)
    submit = sub.add_parser("spark-submit", help="run a Spark job (spark_jobs/JOB.py) with the configured Spark")
    submit.add_argument("job", help="als_recommendations or ctr_audiences")
    submit.add_argument("job_args", nargs=argparse.REMAINDER, help="the job's own arguments (see JOB --help)")
    return parser


def cmd_spark_submit(args, config) -> None:
    from precision_marketing.spark_submit import SPARK_JOBS_DIR, SparkJobError, run_spark_job

    if not (SPARK_JOBS_DIR / f"{args.job}.py").is_file():
        jobs = sorted(p.stem for p in SPARK_JOBS_DIR.glob("*.py") if "main(" in p.read_text())
        raise SystemExit(f"no Spark job {args.job!r} in {SPARK_JOBS_DIR} (jobs: {', '.join(jobs)})")
    try:
        run_spark_job(args.job, args.job_args, config["spark"])
    except SparkJobError as exc:
        raise SystemExit(str(exc))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        config = load_config()
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}")
    if args.command == "airflow":
        raise SystemExit(airflow(args.airflow_args, config, check=False).returncode)
    handler = {"demo": cmd_demo, "generate": cmd_generate, "setup": cmd_setup, "run": cmd_run,
               "status": cmd_status, "query": cmd_query, "spark-submit": cmd_spark_submit}[args.command]
    result = handler(args, config)
    if args.command == "generate":
        print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
