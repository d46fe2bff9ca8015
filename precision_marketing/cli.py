"""`pm` — the platform's command line.

pm demo [--ds D]            generate synthetic data, run the nightly DAG through Airflow, print the results
pm generate --ds D [...]    write synthetic raw landing files for the window ending at D into the lake
pm import online-retail PATH [--from D --to D]   land a public export into the raw zone by day (adapters.py)
pm setup                    prepare the in-repo Airflow (db migrate) and the dbt manifest Cosmos renders from
pm run --ds D [--full-refresh]  run the nightly DAG for D (`airflow dags test`, in-process, no servers):
                            one line per task, the full log in a file (--verbose: on the terminal too)
pm backfill --from D1 --to D2   run the DAG for every day D1..D2 through Airflow's backfill and scheduler
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
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from precision_marketing.config import ConfigError, load_config
from precision_marketing.storage import storage_from_config

# over the history view, for the demo's own ds: `recommendations` alone is the latest ds in the lake
EXAMPLE_QUERY = (
    "SELECT user_id, rank, product_id, round(score, 4) AS score, source FROM recommendations_history "
    "WHERE ds = DATE '{ds}' AND user_id = (SELECT min(user_id) FROM recommendations_history "
    "WHERE ds = DATE '{ds}') ORDER BY rank"
)


def _yesterday() -> str:
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


def cmd_generate(args, config) -> dict:
    """Land synthetic files in the raw zone. Landing files are immutable, as delivered files are: a partition
    already in the lake is kept (unless --overwrite), so runs for neighbouring dates read the same history."""
    from precision_marketing.datagen import generate

    gen = {**config["datagen"], **{k: v for k, v in vars(args).items() if k in config["datagen"] and v is not None}}
    storage = storage_from_config(config)
    options = dict(
        users=int(gen["users"]),
        items=int(gen["items"]),
        days=int(gen["days"]),
        campaigns=int(gen["campaigns"]),
        dirty_rate=float(gen["dirty_rate"]),
        seed=int(gen["seed"]),
        impression_rate=float(gen.get("impression_rate") or 0.04),
    )
    effect = dict(
        treatment_effect=float(gen.get("treatment_effect") or 0.0), effect_days=int(gen.get("effect_days") or 7)
    )
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
    print(
        f"synthetic raw data for the {options['days']} days up to {args.ds} in {storage.uri('raw')}: "
        f"{written} landing partitions written, {kept} already there kept",
        file=sys.stderr,
    )
    return {**summary, "partitions_written": written, "partitions_kept": kept}


def cmd_import(args, config) -> dict:
    """Land a known export into the raw zone by day; its mapping file tells the run how to read it."""
    from precision_marketing.ingest.adapters import AdapterError, import_online_retail

    try:
        summary = import_online_retail(
            Path(args.path), storage_from_config(config), start=args.start, end=args.end, overwrite=args.overwrite
        )
    except AdapterError as error:
        raise SystemExit(f"import failed: {error}") from None
    print(
        f"{args.dataset}: {summary['partitions_written']} daily partitions landed in {summary['raw']} "
        f"({summary['partitions_kept']} already there kept); run it with "
        f"PM__INGEST__MAPPING={summary['mapping']} pm run --ds {summary['last_ds']}",
        file=sys.stderr,
    )
    return summary


def _published_exports(storage):
    """(campaign_id, user_id, ds) of every published audience_exports partition (None when there is none)."""
    from precision_marketing.publish.catalog import open_catalog

    con = open_catalog(storage, ["audience_exports"])
    try:
        if not con.execute(
            "select count(*) from information_schema.tables where table_name = 'audience_exports_history'"
        ).fetchone()[0]:
            return None
        return con.execute(
            "select campaign_id, user_id, cast(ds as varchar) as ds from audience_exports_history"
        ).to_arrow_table()
    finally:
        con.close()


def airflow(args: list[str], config, check: bool = True, log=None) -> subprocess.CompletedProcess:
    """The Airflow CLI with the in-repo environment; output to `log` (an open file) when given."""
    from precision_marketing.orchestration.environment import airflow_env

    command = [str(Path(sys.executable).with_name("airflow")), *args]
    output = {"stdout": log, "stderr": subprocess.STDOUT} if log else {}
    return subprocess.run(command, env=airflow_env(config), check=check, **output)


def cmd_setup(args, config, log=None) -> None:
    from precision_marketing.orchestration.dbt import dbt_parse
    from precision_marketing.orchestration.environment import airflow_env

    Path(airflow_env(config)["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    dbt_parse(config)
    airflow(["db", "migrate"], config, log=log)


def new_log_file(config, name: str) -> Path:
    """A fresh log file under <state>/logs/ (the state folder holds the work dir)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = Path(config["work_dir"]).parent / "logs" / f"{name}-{stamp}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class TaskProgress:
    """One line per finished task, read from the timing records the DAG's task callbacks write."""

    def __init__(self, directory: Path, since: dt.datetime, out=sys.stdout):
        self.directory, self.since, self.out = Path(directory), since, out
        self.seen: dict[str, str] = {}
        self.finished: list[dict] = []

    def poll(self) -> None:
        for path in sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime):
            try:
                record = json.loads(path.read_text())
                ended = dt.datetime.fromisoformat(record["end"])
            except (OSError, ValueError, KeyError):
                continue
            if ended < self.since or self.seen.get(path.name) == record["end"]:
                continue
            self.seen[path.name] = record["end"]
            self.finished.append(record)
            seconds = record.get("seconds")
            reason = f"  ({record['reason']})" if record.get("reason") else ""
            print(
                f"  {record['task_id']:<48} {record['state']:<8} {seconds if seconds is not None else 0:7.1f} s{reason}",
                file=self.out,
                flush=True,
            )

    def failures(self) -> list[dict]:
        return [r for r in self.finished if r["state"] == "failed"]

    def succeeded(self, task_id: str) -> bool:
        return any(r["task_id"] == task_id and r["state"] == "success" for r in self.finished)


class Stopped(Exception):
    """pm was asked to stop (SIGTERM, SIGINT) and stopped the process it ran."""

    def __init__(self, signum: int, killed: bool = False):
        super().__init__(
            signal.Signals(signum).name + (", then SIGKILL: it had not ended a minute later" if killed else "")
        )
        self.signum = signum


def run_with_log(command: list[str], env: dict, log_path: Path, verbose: bool, progress: TaskProgress | None) -> int:
    """Run command with its output in log_path (and on the terminal when verbose), polling progress.

    SIGTERM or Ctrl-C stops the command too: SIGINT then SIGTERM go to its process group (Airflow and the
    dbt / Spark processes it started), pm waits for it to end, then raises Stopped."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE if verbose else log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stop: dict = {}  # the first stop signal and when it came

        def forward(signum, _frame):
            stop.setdefault("signum", signum)
            stop.setdefault("at", time.monotonic())
            # SIGINT ends `airflow dags test` at once (it carries on through a SIGTERM until the SIGKILL below, a
            # minute later); SIGTERM then stops whatever ignores SIGINT (Spark, dbt, their workers)
            for sent in (signal.SIGINT, signal.SIGTERM):
                try:
                    os.killpg(process.pid, sent)
                except ProcessLookupError:
                    pass

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            if verbose:
                for line in process.stdout:
                    log.write(line)
                    sys.stdout.buffer.write(line)
                    sys.stdout.flush()
            while process.poll() is None:
                if progress and not stop:
                    progress.poll()
                time.sleep(1)
                if stop and time.monotonic() - stop["at"] > 60 and not stop.get("killed"):
                    os.killpg(process.pid, signal.SIGKILL)  # did not stop within a minute
                    stop["killed"] = True
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if stop:
        raise Stopped(stop["signum"], killed=stop.get("killed", False))
    if progress:
        progress.poll()
    return process.returncode


def cmd_run(args, config) -> None:
    """`airflow dags test` with the day in the `ds` param and the logical date "now": every run keeps its own
    record in Airflow (history intact, true durations), as a run triggered from the UI would."""
    from precision_marketing.orchestration.environment import airflow_env
    from precision_marketing.orchestration.schedule import DAG_ID, check_conf
    from precision_marketing.pipeline import paths_for

    # a run by hand fails fast rather than sleeping through retry delays or waiting for files; an explicit
    # setting in the environment wins
    os.environ.setdefault("PM__ORCHESTRATION__RETRIES", "0")
    os.environ.setdefault("PM__LANDING__TIMEOUT_MINUTES", "0")
    config = load_config()
    conf = {**json.loads(getattr(args, "conf", None) or "{}")}
    if conf.get("ds") not in (None, args.ds):
        raise SystemExit(f"--conf sets ds={conf['ds']} but --ds is {args.ds}: give the day once")
    conf["ds"] = args.ds
    if getattr(args, "full_refresh", False):
        conf["full_refresh"] = True
    problems = check_conf(conf, config)
    if problems:
        raise SystemExit("pm run: " + "\npm run: ".join(problems))
    log_path = new_log_file(config, f"run-{args.ds}")
    print(f"nightly run for ds={args.ds} (full log: {log_path})", flush=True)
    with log_path.open("a") as log:
        cmd_setup(args, config, log=log)
    started = time.monotonic()
    logical_date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    command = [
        str(Path(sys.executable).with_name("airflow")),
        "dags",
        "test",
        DAG_ID,
        logical_date,
        "--conf",
        json.dumps(conf),
    ]
    progress = TaskProgress(paths_for(config, args.ds).task_times_dir, dt.datetime.now(dt.UTC))
    try:
        returncode = run_with_log(command, airflow_env(config), log_path, getattr(args, "verbose", False), progress)
    except Stopped as stopped:
        raise SystemExit(
            f"stopped ({stopped}): the nightly run for ds={args.ds} was stopped with its Airflow "
            f"process. Published tables were left as they were. Full log: {log_path}"
        ) from None
    if returncode != 0:
        for failed in progress.failures():
            print(f"\n{failed['task_id']} failed:\n  " + failed.get("error", "").replace("\n", "\n  "))
        failed_tasks = ", ".join(r["task_id"] for r in progress.failures()) or "see the log"
        raise SystemExit(
            f"the nightly run for ds={args.ds} failed (airflow exit {returncode}; failed: {failed_tasks}). "
            f"Full log: {log_path}. Published tables were left as they were."
        )
    if not progress.succeeded("publish"):  # e.g. skipped because an upstream step was skipped
        raise SystemExit(
            f"the nightly run for ds={args.ds} ended without publishing (the publish task did not run). "
            f"Full log: {log_path}. Published tables were left as they were."
        )
    print(f"nightly run for ds={args.ds} finished in {time.monotonic() - started:.0f} s")


def _runs(config, log) -> list[dict]:
    """The DAG's runs as `airflow dags list-runs` reports them (run_id, state, logical_date, dates)."""
    from precision_marketing.orchestration.environment import airflow_env
    from precision_marketing.orchestration.schedule import DAG_ID

    listed = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "dags", "list-runs", DAG_ID, "-o", "json"],
        env=airflow_env(config),
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    # the JSON list is one line; warnings (e.g. about graphviz) may come before it on stdout
    for line in reversed(listed.stdout.splitlines()):
        if line.startswith("[{") or line.strip() == "[]":
            return json.loads(line)
    return []


def cmd_backfill(args, config) -> None:
    """Airflow 3's backfill (`airflow backfill create`) for every day from --from to --to, run by the scheduler.

    Uses the scheduler at AIRFLOW__API__BASE_URL (default http://localhost:8080) when one is running there;
    otherwise starts one (with a DAG processor and an API server) for the duration of the backfill.
    Days that already have a run are skipped (--reprocess none), so each day is published once."""
    from urllib.parse import urlparse

    from precision_marketing.orchestration.schedule import DAG_ID
    from precision_marketing.orchestration.servers import AirflowServers, api_url, scheduler_is_up

    first, last = args.from_date, args.to_date
    if last < first:
        raise SystemExit(f"--to {last} is before --from {first}")
    log_path = new_log_file(config, f"backfill-{first}-{last}")
    print(f"backfill of {DAG_ID} for {first} .. {last} (full log: {log_path})", flush=True)
    with log_path.open("a") as log:
        cmd_setup(args, config, log=log)
        airflow(["dags", "reserialize"], config, log=log)  # the scheduler runs what the metadata DB holds
        airflow(["dags", "unpause", DAG_ID], config, log=log)  # tasks of a paused DAG are never queued
        servers = None
        base_url = api_url()
        if not scheduler_is_up(base_url):
            servers = AirflowServers(config, urlparse(base_url).port or 8080, log_path.parent / "airflow-servers")
            print(f"no scheduler answers at {base_url}: starting one (logs in {servers.log_dir})", flush=True)
            servers.start()
        try:
            busy = [
                r
                for r in _runs(config, log)
                if r["state"] in ("queued", "running") and not r["run_id"].startswith("backfill__")
            ]
            if busy:
                print(
                    "note: other runs are active (" + ", ".join(r["run_id"] for r in busy) + "); they share the "
                    "work dir's DuckDB warehouse with the backfill",
                    flush=True,
                )
            create = [
                "backfill",
                "create",
                "--dag-id",
                DAG_ID,
                "--from-date",
                first,
                "--to-date",
                last,
                "--max-active-runs",
                "1",
                "--reprocess-behavior",
                args.reprocess,
            ]
            if args.conf:
                create += ["--dag-run-conf", args.conf]
            before = {r["run_id"]: r["state"] for r in _runs(config, log)}
            if airflow(create, config, check=False, log=log).returncode != 0:
                raise SystemExit(f"airflow backfill create failed; see {log_path}")
            # this backfill's runs: new backfill runs in the range, or earlier ones it cleared to run again
            watched = {
                r["run_id"]
                for r in _runs(config, log)
                if r["run_id"].startswith("backfill__")
                and first <= r["logical_date"][:10] <= last
                and (r["run_id"] not in before or r["state"] in ("queued", "running"))
            }
            reported: dict[str, str] = {}
            while True:
                runs = [r for r in _runs(config, log) if r["run_id"] in watched]
                for run in sorted(runs, key=lambda r: r["logical_date"]):
                    if reported.get(run["run_id"]) != run["state"] and run["state"] in ("success", "failed"):
                        seconds = (
                            (
                                dt.datetime.fromisoformat(run["end_date"])
                                - dt.datetime.fromisoformat(run["start_date"])
                            ).total_seconds()
                            if run["start_date"] and run["end_date"]
                            else 0
                        )
                        print(
                            f"  ds={run['logical_date'][:10]}  {run['state']:<8} {seconds:6.0f} s  {run['run_id']}",
                            flush=True,
                        )
                    reported[run["run_id"]] = run["state"]
                if all(r["state"] in ("success", "failed") for r in runs):
                    break
                time.sleep(10)
        finally:
            if servers:
                servers.stop()
    failed = [r for r in runs if r["state"] == "failed"]
    skipped = sorted(set(_days(first, last)) - {r["logical_date"][:10] for r in runs})
    if skipped:
        print(f"already run, skipped (use --reprocess failed|completed to run again): {', '.join(skipped)}")
    if failed:
        raise SystemExit(
            f"{len(failed)} of {len(runs)} backfill run(s) failed: "
            + ", ".join(r["logical_date"][:10] for r in failed)
            + f". Full log: {log_path}"
        )
    print(f"backfill finished: {len(runs)} run(s)")


def _days(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(start + dt.timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def cmd_status(args, config) -> None:
    from precision_marketing.pipeline import published_tables
    from precision_marketing.publish.partitions import published_partitions, read_manifest

    storage = storage_from_config(config)
    for table in published_tables(config):
        for ds in published_partitions(storage, table):
            manifest = read_manifest(storage, table, ds)
            print(f"{storage.uri(f'marts/{table}/ds={ds}/')}  rows={manifest['row_count']}  run={manifest['run_id']}")


def cmd_query(args, config) -> None:
    import duckdb

    from precision_marketing.pipeline import published_tables
    from precision_marketing.publish.catalog import QueryError, format_table, run_query

    try:
        columns, rows, truncated = run_query(
            storage_from_config(config, reader=True), published_tables(config), args.sql, max_rows=args.max_rows
        )
    except (duckdb.Error, QueryError) as exc:
        raise SystemExit(f"query failed: {exc}") from None
    print(format_table(columns, rows, truncated))


def cmd_forget(args, config) -> None:
    from precision_marketing.privacy.erasure import ErasureError, forget

    try:
        record = forget(config, args.user, reference=args.reference)
    except ErasureError as exc:
        raise SystemExit(f"pm forget: {exc}") from None
    print(json.dumps(record, indent=2))


def cmd_demo(args, config) -> None:
    started = time.monotonic()
    cmd_generate(args, config)
    cmd_run(args, config)
    storage = storage_from_config(config)
    print("\n=== published tables ===")
    cmd_status(args, config)
    print("\n=== model metrics ===")
    for model in ("als", "ctr", "segments"):
        key = f"models/{model}/ds={args.ds}/metrics.json"
        if not storage.exists(key):  # a model skipped for lack of its sources (the run report says why)
            print(f"{model}: skipped")
            continue
        metrics = json.loads(storage.get_bytes(key))
        shown = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
        print(f"{model}: {json.dumps(shown)}")
    print(f"\nrun report: {storage.uri(f'reports/ds={args.ds}/report.html')}")
    args.sql, args.max_rows = EXAMPLE_QUERY.format(ds=args.ds), 20
    print(f"\n=== example query ===\n{args.sql}")
    cmd_query(args, config)
    print(
        f"\ndemo finished in {time.monotonic() - started:.0f} s; try: .venv/bin/pm query \"select * from audiences limit 5\""
    )


def iso_day(text: str) -> str:
    """A day as YYYY-MM-DD; anything else (20261122, 2026-13-01) is rejected with a readable reason."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a day in the form YYYY-MM-DD (e.g. 2026-11-22)")
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid day: {exc}") from None


def _json_object(text: str) -> str:
    try:
        if not isinstance(json.loads(text), dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--conf must be a JSON object, got {text!r} ({exc})") from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_ds(p):
        p.add_argument("--ds", default=_yesterday(), type=iso_day, help="day YYYY-MM-DD (default: yesterday, UTC)")
        return p

    def command(name, summary, details=""):
        """A subcommand whose --help says what it does (argparse shows `help` only in pm --help)."""
        return sub.add_parser(name, help=summary, description=summary + (f". {details}" if details else ""))

    def with_datagen(p):
        p.add_argument(
            "--overwrite",
            action="store_true",
            help="replace landing partitions that already exist (default: keep them)",
        )
        for name, kind in (
            ("users", int),
            ("items", int),
            ("days", int),
            ("campaigns", int),
            ("dirty_rate", float),
            ("seed", int),
            ("impression_rate", float),
        ):
            p.add_argument(
                f"--{name.replace('_', '-')}",
                dest=name,
                type=kind,
                default=None,
                help="default from config datagen." + name,
            )
        return p

    with_datagen(
        with_ds(
            command(
                "demo",
                "generate data, run the DAG, show the results",
                "What `make demo` runs: pm generate, pm run, pm status and an example query.",
            )
        )
    )
    with_datagen(
        with_ds(
            command(
                "generate",
                "write synthetic raw data into the lake",
                "The window of days ending at --ds; partitions already there are kept.",
            )
        )
    )
    imports = command(
        "import",
        "land a public export into the raw zone by day",
        "Reads the export, lands it under raw/<source>/ds=YYYY-MM-DD/ and prints the mapping to run it with.",
    )
    imports.add_argument("dataset", choices=["online-retail"], help="which export (its mapping: config/mappings/)")
    imports.add_argument("path", help="the export file, e.g. ../shared/data/online-retail/online_retail.csv.gz")
    as_date = lambda text: dt.date.fromisoformat(iso_day(text))  # noqa: E731
    imports.add_argument("--from", dest="start", type=as_date, default=None, help="first day to land (default: all)")
    imports.add_argument("--to", dest="end", type=as_date, default=None, help="last day to land (default: all)")
    imports.add_argument("--overwrite", action="store_true", help="replace partitions that already exist")
    command("setup", "airflow db migrate + dbt parse", "Prepares the in-repo Airflow and the dbt manifest.")
    run = with_ds(
        command(
            "run",
            "run the nightly DAG for one ds",
            "Through `airflow dags test` (in-process, no servers): one line per task, the full log "
            "in .state/logs/. Re-running a day replaces its published tables.",
        )
    )
    run.add_argument("--conf", type=_json_object, help='DAG params as JSON, e.g. \'{"top_k": 20}\'')
    run.add_argument("--verbose", action="store_true", help="print the full Airflow log, not one line per task")
    run.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild dbt staging from every landed partition of the window (DAG param full_refresh)",
    )
    backfill = command(
        "backfill",
        "run the nightly DAG for a range of days (Airflow backfill)",
        "Days that already have a run are skipped unless --reprocess says otherwise.",
    )
    backfill.add_argument("--from", dest="from_date", required=True, type=iso_day, help="first day YYYY-MM-DD")
    backfill.add_argument("--to", dest="to_date", required=True, type=iso_day, help="last day YYYY-MM-DD (inclusive)")
    backfill.add_argument(
        "--reprocess",
        choices=["none", "failed", "completed"],
        default="none",
        help="days that already have a run: skip them (none, default), rerun failed ones, or all",
    )
    backfill.add_argument("--conf", type=_json_object, help="DAG params as JSON for every run")
    command("status", "list published partitions", "Every committed partition with its row count and run id.")
    query = command(
        "query",
        "SQL over the published tables",
        "DuckDB views: recommendations, audiences, user_segments (latest ds), <table>_history (all ds), "
        "quarantine_<source> and data_reconciliation.",
    )
    query.add_argument("sql", help="one SQL statement, e.g. \"select * from recommendations limit 5\"")
    query.add_argument("--max-rows", type=int, default=50, help="rows printed at most (default 50)")
    forget = command(
        "forget",
        "erase people from every zone, the warehouse and the published history",
        "Their rows leave the landing files (unless forget.keep_raw_landing), the work dir, the warehouse, the "
        "quarantine, features, models and every published partition; the erasure register keeps them out of "
        "later deliveries; an audit record without personal data goes to privacy/erasures/ in the lake. "
        "Run it when no night is running.",
    )
    forget.add_argument(
        "--user", action="append", required=True, help="a delivered user id, as published (repeat for several)"
    )
    forget.add_argument("--reference", help="the request's ticket number, kept in the audit record (no e-mail)")
    af = command("airflow", "airflow CLI with the in-repo AIRFLOW_HOME", "e.g. pm airflow standalone")
    af.add_argument("airflow_args", nargs=argparse.REMAINDER, help="arguments of the airflow command")
    submit = command("spark-submit", "run a Spark job (spark_jobs/JOB.py) with the configured Spark")
    submit.add_argument("job", help="als_recommendations or ctr_audiences")
    submit.add_argument("job_args", nargs=argparse.REMAINDER, help="the job's own arguments (see JOB --help)")
    return parser


def cmd_spark_submit(args, config) -> None:
    from precision_marketing.training.spark_submit import (
        JOB_SECTIONS,
        SPARK_JOBS_DIR,
        SparkJobError,
        run_spark_job,
        write_job_settings,
    )

    if not (SPARK_JOBS_DIR / f"{args.job}.py").is_file():
        jobs = sorted(p.stem for p in SPARK_JOBS_DIR.glob("*.py") if "main(" in p.read_text())
        raise SystemExit(f"no Spark job {args.job!r} in {SPARK_JOBS_DIR} (jobs: {', '.join(jobs)})")
    job_args = list(args.job_args)
    if args.job in JOB_SECTIONS and "--config" not in job_args and not {"-h", "--help"} & set(job_args):
        # the same checked configuration a nightly run uses (platform.yaml + PM__ variables), not the bare file
        settings = Path(config["work_dir"]) / "job_settings" / "pm-spark-submit" / f"{args.job}.json"
        job_args += ["--config", str(write_job_settings(config, args.job, settings))]
    from precision_marketing.pipeline import with_spark_connection

    try:
        run_spark_job(args.job, job_args, with_spark_connection(config)["spark"])
    except SparkJobError as exc:
        raise SystemExit(str(exc)) from None


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        config = load_config()
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    if args.command == "airflow":
        raise SystemExit(airflow(args.airflow_args, config, check=False).returncode)
    handler = {
        "demo": cmd_demo,
        "generate": cmd_generate,
        "setup": cmd_setup,
        "run": cmd_run,
        "backfill": cmd_backfill,
        "status": cmd_status,
        "query": cmd_query,
        "forget": cmd_forget,
        "spark-submit": cmd_spark_submit,
        "import": cmd_import,
    }[args.command]
    result = handler(args, config)
    if args.command in ("generate", "import"):
        print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
