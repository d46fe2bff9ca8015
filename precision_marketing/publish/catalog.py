"""SQL over the published tables: DuckDB views built from the committed manifests.

For each published table T:
  T          the latest committed partition (what the nightly consumers want)
  T_history  every committed partition, with a `ds` column
Views read exactly the files a manifest lists, so a partition being republished or half-written
is never visible; partitions without _SUCCESS are ignored.

Data-quality views over what every run exports beside the tables (not published through manifests: a
night being rerun shows its new files as they land):
  quarantine_<source>    every quarantined row of every ds, with its reject_reason and ds
  data_reconciliation    per ds and source: raw = clean + quarantined + duplicates
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import duckdb

from precision_marketing.publish.partitions import partition_prefix, published_partitions, read_manifest
from precision_marketing.storage import Storage


def sql_literal(text) -> str:
    """A SQL string literal of text (a path, a URI): single quotes doubled."""
    return "'" + str(text).replace("'", "''") + "'"


def parquet_source_sql(path) -> str:
    """A quoted read_parquet() argument for a local Parquet file or a folder of part files (a Spark output)."""
    from pathlib import Path

    path = Path(path)
    return sql_literal(f"{path}/**/*.parquet" if path.is_dir() else str(path))


def _partition_select(storage: Storage, table: str, ds: str) -> str | None:
    manifest = read_manifest(storage, table, ds)
    if not manifest or not manifest["files"]:
        return None
    dt.date.fromisoformat(ds)  # the ds comes from a key: make sure it is a date before it reaches SQL
    files = ", ".join(sql_literal(storage.uri(partition_prefix(table, ds) + f["file"])) for f in manifest["files"])
    return f"SELECT *, DATE '{ds}' AS ds FROM read_parquet([{files}], hive_partitioning = false)"


def view_statements(storage: Storage, tables: Iterable[str]) -> list[str]:
    """CREATE VIEW statements for every table that has at least one committed partition."""
    statements = []
    for table in tables:
        selects = [
            s for ds in published_partitions(storage, table) if (s := _partition_select(storage, table, ds)) is not None
        ]
        if not selects:
            continue
        statements.append(f"CREATE OR REPLACE VIEW {table}_history AS\n" + "\nUNION ALL BY NAME\n".join(selects))
        statements.append(f"CREATE OR REPLACE VIEW {table} AS {selects[-1]}")
    return statements


def quality_view_statements(storage: Storage) -> list[str]:
    """CREATE VIEW statements for the quarantine tables and the reconciliation, where the lake has them."""
    from precision_marketing.contract import SOURCES

    statements = []
    for source in SOURCES:
        prefix = f"quarantine/{source}/"
        if any(k.endswith(".parquet") for k in storage.list_keys(prefix)):
            files = sql_literal(storage.uri(prefix + "ds=*/*.parquet"))
            statements.append(
                f"CREATE OR REPLACE VIEW quarantine_{source} AS SELECT * FROM "
                f"read_parquet({files}, hive_partitioning = false, union_by_name = true)"
            )
    prefix = "features/data_reconciliation/"
    if any(k.endswith(".parquet") for k in storage.list_keys(prefix)):
        files = sql_literal(storage.uri(prefix + "ds=*/*.parquet"))
        statements.append(
            "CREATE OR REPLACE VIEW data_reconciliation AS SELECT * REPLACE (CAST(ds AS DATE) AS ds) "
            f"FROM read_parquet({files}, hive_partitioning = true)"
        )
    return statements


class QueryError(ValueError):
    """SQL that cannot give a result table (empty, only a comment) or is not one SELECT; the message says so."""


# what `pm query` may read: the published tables and the data-quality exports (quarantine without raw e-mails)
READABLE_PREFIXES = ("marts/", "quarantine/", "features/data_reconciliation/")


def lock_down(con: duckdb.DuckDBPyConnection, storage: Storage) -> None:
    """From here on the connection reads the lake's published prefixes and nothing else: no other file, no
    ATTACH of the warehouse, no extension install, and no setting can be changed back (lock_configuration)."""
    readable = ", ".join(sql_literal(storage.uri(prefix)) for prefix in READABLE_PREFIXES)
    con.execute(f"SET allowed_directories = [{readable}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def single_select(sql: str) -> str:
    """The one SELECT `pm query` runs, or QueryError: a COPY could overwrite a published file (the lake's
    published prefixes are readable, hence writable to DuckDB), and SET/ATTACH/INSTALL have no business here."""
    if not sql or not sql.strip():
        raise QueryError('no SQL given: pm query "select * from recommendations limit 5"')
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise QueryError(str(error).splitlines()[0]) from None
    if not statements:
        raise QueryError(
            "the SQL returns no rows to show (it is empty, only a comment, or a statement without a result)"
        )
    if len(statements) > 1:
        raise QueryError(f"one statement at a time, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise QueryError(f"pm query runs one SELECT over the published tables, not {kind.name}")
    return sql


def open_catalog(
    storage: Storage, tables: Iterable[str], con: duckdb.DuckDBPyConnection | None = None
) -> duckdb.DuckDBPyConnection:
    con = con or duckdb.connect()
    storage.configure_duckdb(con)
    for statement in view_statements(storage, tables) + quality_view_statements(storage):
        con.execute(statement)
    return con


def run_query(storage: Storage, tables: Iterable[str], sql: str, max_rows: int = 1000):
    """(column names, first max_rows rows, whether there were more) of sql run over the catalog."""
    sql = single_select(sql)
    con = open_catalog(storage, tables)
    lock_down(con, storage)
    try:
        result = con.execute(sql)
        if result is None or result.description is None:
            raise QueryError(
                "the SQL returns no rows to show (it is empty, only a comment, or a statement without a result)"
            )
        rows = result.fetchmany(max_rows + 1)
        return [d[0] for d in result.description], rows[:max_rows], len(rows) > max_rows
    finally:
        con.close()


def format_table(columns: list[str], rows: list[tuple], truncated: bool = False) -> str:
    shown = [tuple("" if v is None else str(v) for v in row) for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in shown]) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in shown]
    lines.append(f"(first {len(rows)} rows; more not shown)" if truncated else f"({len(rows)} rows)")
    return "\n".join(lines)
