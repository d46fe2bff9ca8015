"""Plumbing shared by the Spark jobs: their settings, the session, shipping this package to the executors,
reading dbt feature tables with readable errors, and writing metrics.json."""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import io
import json
import math
import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

PLATFORM_YAML = Path(__file__).resolve().parents[1] / "config" / "platform.yaml"


def platform_section(name: str) -> dict:
    """A section of config/platform.yaml in this checkout (the jobs' defaults when run by hand, tests)."""
    return yaml.safe_load(PLATFORM_YAML.read_text())[name]


def add_settings_arguments(parser: argparse.ArgumentParser, sections: Sequence[str]) -> None:
    """--config and --set: a job's settings are sections of the platform configuration, never a list of flags
    kept by hand (config/platform.yaml documents every key, precision_marketing/config/schema.py checks them)."""
    names = ", ".join(sections)
    parser.add_argument(
        "--config",
        type=Path,
        default=PLATFORM_YAML,
        help=f"the settings: a JSON holding the sections {names} (what the pipeline step writes from "
        f"the checked configuration) or a platform.yaml (default: {PLATFORM_YAML})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="change one setting, the value in YAML, e.g. --set " + sections[0] + ".seed=7 "
        "(repeatable; nested keys with dots)",
    )


def job_settings(args: argparse.Namespace, sections: Sequence[str], parser: argparse.ArgumentParser) -> dict:
    """The sections of --config with every --set applied; a missing section, an unknown key or an unreadable
    file stops the job with the file and key named."""
    path = Path(args.config)
    try:
        text = path.read_text()
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        parser.error(f"--config {path}: {error}")
    missing = [name for name in sections if not isinstance((document or {}).get(name), dict)]
    if missing:
        parser.error(f"--config {path}: no section {', '.join(missing)} (expected {', '.join(sections)})")
    settings = {name: copy.deepcopy(document[name]) for name in sections}
    for item in args.overrides:
        key, sep, raw = item.partition("=")
        keys = key.strip().split(".")
        if not sep or len(keys) < 2 or keys[0] not in settings:
            parser.error(f"--set {item!r}: expected SECTION.KEY=VALUE with SECTION one of {', '.join(sections)}")
        node = settings[keys[0]]
        for name in keys[1:-1]:
            if not isinstance(node.get(name), dict):
                parser.error(f"--set {item!r}: {name!r} is not a group of settings in {keys[0]}")
            node = node[name]
        if keys[-1] not in node:
            parser.error(f"--set {item!r}: unknown setting {key.strip()} (known here: {', '.join(node)})")
        try:
            node[keys[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            parser.error(f"--set {item!r}: the value is not YAML ({error})")
    return settings


def iso_date(value: str) -> dt.date:
    """argparse type for --ds: a YYYY-MM-DD date."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {value!r}") from None


def get_spark(app_name: str) -> SparkSession:
    """The active session or a new one; the master comes from spark-submit / the environment, never from here."""
    spark = SparkSession.builder.appName(app_name).config("spark.sql.session.timeZone", "UTC").getOrCreate()
    # An already running session (tests, notebooks) ignores builder options: set the time zone explicitly.
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    context = spark.sparkContext
    # the id to find the job by in the cluster's UI and logs, in the task log
    print(
        f"spark application {context.applicationId} on {context.master} (UI: {context.uiWebUrl or 'off'})", flush=True
    )
    return spark


def log_progress(job: str, message: str) -> None:
    """One progress line for the task log (the job's stdout), with the job's name and the time."""
    print(f"[{job} {time.strftime('%H:%M:%S')}] {message}", flush=True)


def choose_job_engine(
    requested: str, *, inprocess: str, n_rows: int, max_rows: int, master: str, rows: str
) -> tuple[str, str]:
    """(engine, why) for a job with an in-process engine and Spark MLlib: `auto` runs in this process when the
    job's `rows` fit the driver (n_rows <= max_rows) and the master is local, MLlib beyond that or on a cluster."""
    if requested != "auto":
        return requested, f"engine {requested} configured"
    if not master.startswith("local"):
        return "mllib", f"the run targets a cluster ({master})"
    if n_rows > max_rows:
        return "mllib", f"{n_rows:,} {rows} > inprocess_max_rows {max_rows:,}"
    return inprocess, f"{n_rows:,} {rows} fit the driver (inprocess_max_rows {max_rows:,})"


def ship_package(spark: SparkSession) -> str:
    """Make `spark_jobs` importable by the executors' Python workers (mapInPandas code lives here), on
    local[*] and on a cluster alike, without --py-files: a zip of the package, named by its content so a
    changed package is a new file, added once per SparkContext."""
    package = Path(__file__).resolve().parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for source in sorted(package.glob("*.py")):
            archive.writestr(zipfile.ZipInfo(f"spark_jobs/{source.name}", (2026, 1, 1, 0, 0, 0)), source.read_bytes())
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"spark_jobs-{digest}.zip"
    if not target.exists():
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(buffer.getvalue())
        partial.replace(target)
    if target.name not in {Path(path).name for path in spark.sparkContext.listFiles}:
        spark.sparkContext.addPyFile(str(target))
    return str(target)


def feature_table_path(features_dir: str, table: str, ds: dt.date) -> str:
    """`<features_dir>/<table>/ds=YYYY-MM-DD` (string join so s3a:// and file:// URIs stay intact)."""
    return f"{str(features_dir).rstrip('/')}/{table}/ds={ds.isoformat()}"


def read_parquet_table(spark: SparkSession, path: str, table: str, columns: Sequence[str]) -> DataFrame:
    """Read a Parquet file or directory and select `columns`; a missing path or column exits with a
    message naming the table, the path and the problem instead of a Java stack trace."""
    try:
        frame = spark.read.parquet(path)
    except AnalysisException as error:
        reason = str(error).strip().splitlines()[0]
        raise SystemExit(f"input table {table!r} cannot be read at {path}: {reason}") from None
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise SystemExit(
            f"input table {table!r} at {path} is missing required column(s) {missing} (has {frame.columns})"
        )
    return frame.select(*columns)


def read_feature_table(
    spark: SparkSession, features_dir: str, table: str, ds: dt.date, columns: Sequence[str]
) -> DataFrame:
    return read_parquet_table(spark, feature_table_path(features_dir, table, ds), table, columns)


def check_columns(
    frame: DataFrame,
    *,
    table: str,
    path: str,
    not_null: Sequence[str] = (),
    non_negative: Sequence[str] = (),
    allowed_values: Mapping[str, Sequence[Any]] | None = None,
) -> int:
    """Count rule violations per column in one pass; exit naming table, path, column and rule if any.
    Returns the row count (callers need it anyway)."""
    rules: dict[str, Column] = {}
    for name in not_null:
        rules[f"{name} is null"] = F.col(name).isNull()
    for name in non_negative:
        rules[f"{name} < 0"] = F.col(name) < 0
    for name, values in (allowed_values or {}).items():
        rules[f"{name} not in {list(values)}"] = ~F.col(name).isin(list(values))
    aggregates = [F.count(F.lit(1)).alias("__rows")] + [
        F.sum(F.when(condition, 1).otherwise(0)).alias(f"__rule{index}")
        for index, condition in enumerate(rules.values())
    ]
    counts = frame.agg(*aggregates).first()
    violations = [
        f"{counts[f'__rule{index}']} row(s) where {rule}"
        for index, rule in enumerate(rules)
        if counts[f"__rule{index}"]
    ]
    if violations:
        raise SystemExit(f"input table {table!r} at {path} breaks its contract: " + "; ".join(violations))
    return counts["__rows"]


def finite_or_none(value: float | None, digits: int = 6) -> float | None:
    """JSON-safe metric: NaN/inf/None become null, floats are rounded for readable diffs."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), digits)


def json_safe(value):
    """Metrics as plain JSON: numpy scalars to Python, non-finite floats to null, keys to text."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return finite_or_none(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_metrics(path: str | os.PathLike, metrics: Mapping[str, Any]) -> None:
    """metrics.json on the driver's local disk (the work dir); publishing copies it to the lake."""
    target = Path(str(path).removeprefix("file://"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False) + "\n")


def run_as_script(main: Callable[[], Any]) -> None:
    """spark-submit entry point: run the job, then stop the session it created (tests call main() and keep theirs)."""
    try:
        main()
    finally:
        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()
