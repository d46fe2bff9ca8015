"""Run one Great Expectations checkpoint over all tables of a layer ("marts" or "outputs").

    python -m expectations.checkpoints --layer marts --table user_features=/p/user_features.parquet ... \
        --docs-dir /p/reports/ds=D/data_docs/marts --ds D [--top-k 10] [--spark-min-rows N]

Memory stays bounded whatever the data size: no table is loaded whole unless it is small.
- The cross-table rules of expectations/suites.py get their derived columns/frames from DuckDB, which reads the
  Parquet files (a file or a Spark folder of part files) out of core and writes the frames to a staging folder.
- Each table is validated by GX from those files: with pandas when it has at most `spark_min_rows` rows
  (configuration validation.spark_min_rows), else with GX's Spark datasource on the configured Spark
  (spark.master; validation.spark_driver_memory), which never holds the table in Python.
Same suites, one GX Checkpoint, the same Data Docs in --docs-dir whichever engine validated a table. Any failed
expectation raises DataQualityError whose message lists every failure as
`<layer>.<table>: <expectation> on column '<col>' failed (...)`; the CLI prints it and exits 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import duckdb  # noqa: E402

from expectations.data_docs import make_offline  # noqa: E402
from expectations.suites import LAYERS, expectations_for  # noqa: E402

# tables an output check reads only to evaluate a cross-table rule (they were validated as marts)
REFERENCE_TABLES = {"outputs": {"user_features", "interactions", "suppressions", "campaigns"}}
# frames built here from a validated table; validated whenever their base table is
DERIVED_FRAMES = {"recommendations_per_user", "audiences_per_campaign", "audiences_per_user"}
MAX_EXAMPLES = 5
# DuckDB derives the frames out of core: past this it spills to the staging folder instead of growing
DUCKDB_MEMORY_LIMIT = "1GB"


class DataQualityError(Exception):
    """A table broke an expectation (or could not be read); `summary` holds the per-table results."""

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary


# --- reading and derived frames (DuckDB) ----------------------------------------------------------
def _source_sql(layer: str, table: str, path: Path) -> str:
    """A table's Parquet as a DuckDB relation, rows in file order; a missing or unreadable file fails naming it."""
    if not path.exists():
        raise DataQualityError(f"{layer}.{table}: table file not found: {path}")
    files = f"{path}/*.parquet" if path.is_dir() else str(path)
    return f"read_parquet('{_quoted(files)}', filename = true, file_row_number = true)"


def _quoted(text: str) -> str:
    return str(text).replace("'", "''")


class _Tables:
    """The layer's tables as DuckDB relations, with the column checks a cross-table rule needs."""

    def __init__(self, con, layer: str, paths: Mapping[str, Path]):
        self.con, self.layer, self.paths, self.columns, self.types = con, layer, paths, {}, {}
        for table, path in paths.items():
            try:
                described = con.execute(f"describe select * from {_source_sql(layer, table, path)}").fetchall()
            except duckdb.Error as error:
                raise DataQualityError(f"{layer}.{table}: cannot read Parquet {path}: {error}") from error
            self.columns[table] = [row[0] for row in described if row[0] not in ("filename", "file_row_number")]
            self.types[table] = {row[0]: row[1] for row in described}
            con.execute(f'create view "src_{table}" as select * from {_source_sql(layer, table, path)}')

    def needs(self, table: str, needed: str, columns: list[str]) -> str:
        """Relation `needed` (the checked table itself or a reference), which a rule of `table` reads `columns` of."""
        if needed not in self.columns:
            raise DataQualityError(
                f"{self.layer}.{table}: checking it needs table '{needed}' (pass --table {needed}=PATH)"
            )
        missing = [c for c in columns if c not in self.columns[needed]]
        if missing:
            raise DataQualityError(f"{self.layer}.{table}: {self.paths[needed]} has no column {missing[0]!r}")
        return f'"src_{needed}"'

    def select(self, table: str) -> str:
        """The table's own columns (nanosecond timestamps, which pandas writes and Spark cannot read, as
        microseconds)."""
        return ", ".join(
            f'cast("{c}" as timestamp) as "{c}"' if self.types[table][c] == "TIMESTAMP_NS" else f'"{c}"'
            for c in self.columns[table]
        )


def _derived_sql(layer: str, tables: _Tables, validated: list[str]) -> dict[str, str]:
    """SQL of the validated tables that need derived columns, and of the derived frames their cross-table rules
    are stated on (expectations/suites.py); every other validated table is validated as it is."""
    out: dict[str, str] = {}
    order = "order by filename, file_row_number"  # the table's own row order, so examples read as in the file

    if "data_reconciliation" in validated:
        parts = ["raw_rows", "clean_rows", "quarantined_rows", "duplicate_rows"]
        if set(parts) <= set(
            tables.columns["data_reconciliation"]
        ):  # else the column-set expectation says what is missing
            out["data_reconciliation"] = (
                f"select {tables.select('data_reconciliation')}, "
                "coalesce(raw_rows = clean_rows + quarantined_rows + duplicate_rows, false) as reconciles "
                f"from src_data_reconciliation {order}"
            )

    if layer == "outputs" and "recommendations" in validated:
        recs = tables.needs("recommendations", "recommendations", ["user_id", "product_id"])
        interactions = tables.needs("recommendations", "interactions", ["user_id", "product_id", "n_purchases"])
        users = tables.needs("recommendations", "user_features", ["user_id"])
        out["recommendations"] = (
            f"select {tables.select('recommendations')}, exists (select 1 from {interactions} as i "
            "where i.n_purchases > 0 and i.user_id = r.user_id and i.product_id = r.product_id) as purchased_in_window "
            f"from {recs} as r {order}"
        )
        out["recommendations_per_user"] = (
            "select u.user_id, count(r.user_id) as n_recommendations "
            f"from (select distinct user_id from {users}) as u left join {recs} as r on r.user_id = u.user_id "
            "group by u.user_id order by u.user_id"
        )

    if layer == "outputs" and "audiences" in validated:
        audiences = tables.needs("audiences", "audiences", ["campaign_id", "user_id", "channel"])
        suppressions = tables.needs("audiences", "suppressions", ["user_id", "channel"])
        campaigns = tables.needs("audiences", "campaigns", ["campaign_id", "audience_size"])
        out["audiences"] = (
            f"select {tables.select('audiences')}, exists (select 1 from {suppressions} as s "
            "where s.user_id = a.user_id and s.channel in (a.channel, 'all')) as is_suppressed "
            f"from {audiences} as a {order}"
        )
        out["audiences_per_campaign"] = (
            "select a.campaign_id, a.n_users, c.audience_size "
            f"from (select campaign_id, count(*) as n_users from {audiences} group by campaign_id) as a "
            f"left join (select campaign_id, any_value(audience_size) as audience_size from {campaigns} "
            "group by campaign_id) as c on a.campaign_id = c.campaign_id order by a.campaign_id"
        )
        out["audiences_per_user"] = (
            f"select user_id, count(*) as n_audiences from {audiences} group by user_id order by user_id"
        )

    if layer == "outputs" and "audience_exports" in validated:
        exports = tables.needs("audience_exports", "audience_exports", ["campaign_id", "user_id"])
        audiences = tables.needs("audience_exports", "audiences", ["campaign_id", "user_id", "experiment_group"])
        out["audience_exports"] = (
            f"select {tables.select('audience_exports')}, not exists (select 1 from {audiences} as a "
            "where a.experiment_group = 'treatment' and a.campaign_id = e.campaign_id and a.user_id = e.user_id) "
            f"as exported_control from {exports} as e {order}"
        )
    return out


def _stage(
    con, layer: str, tables: _Tables, validated: list[str], staging: Path, spark_min_rows: int | None
) -> dict[str, tuple[Path, int, str]]:
    """Every table to validate as one Parquet file in `staging`, with its row count and engine (pandas, or spark
    above spark_min_rows rows). A table validated as it is with pandas is linked, not copied; DuckDB writes the
    others (derived columns; and timestamps in microseconds, the unit Spark reads)."""
    derived = _derived_sql(layer, tables, validated)
    staged = {}
    for table in validated + [t for t in derived if t not in validated]:
        target = staging / f"{table}.parquet"
        sql = derived.get(table) or f"select {tables.select(table)} from src_{table} order by filename, file_row_number"
        rows = con.execute(f"select count(*) from ({sql})").fetchone()[0]
        engine = "spark" if spark_min_rows is not None and rows > spark_min_rows else "pandas"
        source = tables.paths.get(table)
        if table not in derived and engine == "pandas" and source is not None and source.is_file():
            target.symlink_to(source)
        else:
            con.execute(f"copy ({sql}) to '{_quoted(target)}' (format parquet)")
        staged[table] = (target, rows, engine)
    return staged


def _spark_session(spark_config: Mapping | None, driver_memory: str | None):
    """The active SparkSession, or one on the configured master (True: this run started it and stops it)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    spark_config = spark_config or {"master": "local[*]", "shuffle_partitions": 8}
    builder = (
        SparkSession.builder.appName("gx-validation")
        .master(spark_config["master"])
        .config("spark.sql.shuffle.partitions", str(spark_config.get("shuffle_partitions", 8)))
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
    )
    if driver_memory:
        builder = builder.config("spark.driver.memory", str(driver_memory))
    for key, value in (spark_config.get("conf") or {}).items():
        builder = builder.config(key, str(value))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session, True


# --- failure messages ------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp: shown as Spark's validations show it
        value = value.to_pydatetime()
    value = value.item() if hasattr(value, "item") and callable(value.item) else value
    return None if isinstance(value, float) and value != value else value  # NaN is how pandas reads NULL


def _exception_message(exception_info: Any) -> str | None:
    """GX nests exception info either flat or per metric; find the first raised one."""
    if isinstance(exception_info, Mapping):
        if exception_info.get("raised_exception"):
            return str(exception_info.get("exception_message")).splitlines()[0]
        for nested in exception_info.values():
            message = _exception_message(nested)
            if message:
                return message
    return None


def _describe_failure(layer: str, table: str, result: Any) -> str:
    config = result.expectation_config
    kwargs = config.kwargs
    if "column" in kwargs:
        target = f" on column '{kwargs['column']}'"
    elif "column_list" in kwargs:
        target = f" on columns {list(kwargs['column_list'])}"
    elif "column_A" in kwargs:
        target = f" on columns '{kwargs['column_A']}' >= '{kwargs['column_B']}'"
    else:
        target = ""
    details = result.result or {}
    error = _exception_message(result.exception_info)
    if error:
        observed = f"error: {error.removeprefix('Error: ')}"
    elif "unexpected_count" in details:
        examples = _plain(details.get("partial_unexpected_list", [])[:MAX_EXAMPLES])
        observed = (
            f"{details['unexpected_count']} unexpected values of {details.get('element_count')} rows, e.g. {examples}"
        )
    elif details.get("details", {}).get("mismatched"):
        observed = f"columns {_plain(details['details']['mismatched'])}"
    else:
        observed = f"observed {_plain(details.get('observed_value'))}"
    rule = f" [{config.description}]" if config.description else ""
    return f"{layer}.{table}: {config.type}{target} failed ({observed}){rule}"


# keys of a validation result that hold row values (user ids, hashed e-mails): the task's error message shows a
# few to whoever runs the night; the Data Docs, which every DAG reader can open, show the counts only
SAMPLE_KEYS = (
    "partial_unexpected_list",
    "partial_unexpected_counts",
    "partial_unexpected_index_list",
    "unexpected_list",
    "unexpected_index_list",
    "unexpected_index_query",
)


def _docs_without_samples(context, result) -> None:
    """Store every validation result with its sample values removed, then build the Data Docs from the store."""
    import copy

    for identifier, validation in result.run_results.items():
        scrubbed = copy.deepcopy(validation)
        for expectation in scrubbed.results:
            for key in SAMPLE_KEYS:
                (expectation.result or {}).pop(key, None)
        context.validation_results_store.set(identifier, scrubbed)
    context.build_data_docs()


# --- the checkpoint --------------------------------------------------------------------------------
def _new_context(project_dir: Path, docs_dir: Path):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=project_dir)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.update_data_docs_site(
        "local_site",
        {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    return context


def run_checkpoint(
    layer: str,
    tables: Mapping[str, Path],
    *,
    docs_dir: Path,
    ds: str,
    top_k: int | None = None,
    max_audiences_per_user: int | None = None,
    spark_min_rows: int | None = None,
    spark_config: Mapping | None = None,
    spark_driver_memory: str | None = None,
) -> dict:
    """Validate the given tables of `layer`, build Data Docs into docs_dir (replaced), return a summary.

    tables: table name -> Parquet file or Spark Parquet directory; for "outputs" also the reference tables
    user_features, interactions (recommendations) and suppressions, campaigns (audiences).
    spark_min_rows: tables with more rows are validated with GX's Spark datasource (None: pandas for all), on
    the active SparkSession or one started from spark_config (the configuration's `spark` section).
    Raises DataQualityError listing every failure; ValueError for an unknown layer/table name.
    """
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}; expected one of {sorted(LAYERS)}")
    layer_tables = set(LAYERS[layer]) - DERIVED_FRAMES
    known = layer_tables | REFERENCE_TABLES.get(layer, set())
    unknown = sorted(set(tables) - known)
    if unknown:
        raise ValueError(f"unknown table(s) {unknown} for layer {layer!r}; expected some of {sorted(known)}")
    validated = [t for t in tables if t in layer_tables]
    if not validated:
        raise ValueError(f"no table of layer {layer!r} given; expected some of {sorted(layer_tables)}")

    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    docs_dir = Path(docs_dir).resolve()
    paths = {table: Path(path).resolve() for table, path in tables.items()}
    with tempfile.TemporaryDirectory(prefix="gx-") as tmp:
        staging = Path(tmp) / "frames"
        staging.mkdir()
        con = duckdb.connect()
        try:
            con.execute(
                f"set memory_limit = '{DUCKDB_MEMORY_LIMIT}'; set temp_directory = '{_quoted(Path(tmp) / 'spill')}'"
            )
            staged = _stage(con, layer, _Tables(con, layer, paths), validated, staging, spark_min_rows)
        finally:
            con.close()

        if (docs_dir / "index.html").exists():
            shutil.rmtree(docs_dir)  # a re-run of the ds replaces its docs
        docs_dir.mkdir(parents=True, exist_ok=True)
        context = _new_context(Path(tmp), docs_dir)
        # file datasources (not dataframe assets): a dataframe asset takes its frame as a run-time batch
        # parameter, which a Checkpoint shares across all of its validation definitions
        large = {t for t, (_, _, engine) in staged.items() if engine == "spark"}
        sources = {"pandas": context.data_sources.add_pandas_filesystem(name=layer, base_directory=staging)}
        session, started = (None, False)
        if large:
            session, started = _spark_session(spark_config, spark_driver_memory)
            sources["spark"] = context.data_sources.add_spark_filesystem(name=f"{layer}_spark", base_directory=staging)
        try:
            definitions = []
            for table, (path, _, _) in staged.items():
                source = sources["spark" if table in large else "pandas"]
                batch = source.add_parquet_asset(name=table).add_batch_definition_path(name=table, path=path.name)
                suite = context.suites.add(
                    gx.ExpectationSuite(
                        name=f"{layer}.{table}",
                        expectations=expectations_for(
                            layer, table, top_k=top_k, max_audiences_per_user=max_audiences_per_user
                        ),
                    )
                )
                definitions.append(
                    context.validation_definitions.add(
                        gx.ValidationDefinition(name=f"{layer}.{table}", data=batch, suite=suite)
                    )
                )
            checkpoint = context.checkpoints.add(
                gx.Checkpoint(
                    name=f"{layer}_checkpoint",
                    validation_definitions=definitions,
                    actions=[],  # Data Docs are built below, from results without sample values
                    result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES},
                )
            )
            result = checkpoint.run(run_id=RunIdentifier(run_name=f"{layer} ds={ds}", run_time=dt.datetime.now(dt.UTC)))
            _docs_without_samples(context, result)
        finally:
            if started:
                session.stop()
    make_offline(docs_dir)  # the pages load their scripts and styles from the docs folder, not from CDNs

    summary: dict = {
        "layer": layer,
        "ds": ds,
        "success": bool(result.success),
        "docs_index": str(docs_dir / "index.html"),
        "tables": {},
    }
    failures = []
    for validation in result.run_results.values():
        table = validation.suite_name.split(".", 1)[1]
        stats = validation.statistics
        summary["tables"][table] = {
            "success": bool(validation.success),
            "rows": staged[table][1],
            "engine": "spark" if table in large else "pandas",
            "evaluated_expectations": stats["evaluated_expectations"],
            "failed_expectations": stats["unsuccessful_expectations"],
        }
        failures += [_describe_failure(layer, table, r) for r in validation.results if not r.success]
    if failures:
        raise DataQualityError(
            f"{len(failures)} expectation(s) failed in layer {layer!r} (ds {ds}; "
            f"data docs: {summary['docs_index']}):\n" + "\n".join(failures),
            summary,
        )
    return summary


# --- CLI -------------------------------------------------------------------------------------------
def _table_argument(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m expectations.checkpoints", description=__doc__.split("\n")[0])
    parser.add_argument("--layer", required=True, choices=sorted(LAYERS))
    parser.add_argument(
        "--table",
        action="append",
        type=_table_argument,
        required=True,
        metavar="NAME=PATH",
        help="a table to validate (or a reference table for outputs); repeat",
    )
    parser.add_argument("--docs-dir", required=True, type=Path, help="Data Docs site folder (replaced)")
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    parser.add_argument("--top-k", type=int, default=None, help="recommendations per user (outputs layer)")
    parser.add_argument("--max-audiences-per-user", type=int, default=None, help="frequency cap (outputs layer)")
    parser.add_argument(
        "--spark-min-rows",
        type=int,
        default=None,
        help="tables with more rows are validated with GX's Spark datasource (default: pandas for all)",
    )
    parser.add_argument("--spark-master", default="local[*]", help="Spark master for those tables")
    args = parser.parse_args(argv)
    try:
        summary = run_checkpoint(
            args.layer,
            dict(args.table),
            docs_dir=args.docs_dir,
            ds=args.ds,
            top_k=args.top_k,
            max_audiences_per_user=args.max_audiences_per_user,
            spark_min_rows=args.spark_min_rows,
            spark_config={"master": args.spark_master, "shuffle_partitions": 8},
        )
    except (DataQualityError, ValueError) as error:
        print(f"data quality check failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
