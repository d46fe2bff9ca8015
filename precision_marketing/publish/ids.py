"""Original ids back on published tables.

Marts and the Spark jobs work on internal 32-bit keys (dbt's append-only `user_keys` / `product_keys`), so ids
of any shape (SKUs such as '85123A', 64-bit customer numbers) never reach MLlib. Just before publishing, every
column that holds a key is replaced, in place and under the same name, by the delivered id:

  user_id, *_user_id          -> user_keys.user_id
  product_id, *_product_id    -> product_keys.product_id
  *_user_ids, *_product_ids   -> lists of keys: each element, order kept (e.g. audience_exports.top_product_ids)

typed by the mapping's `ids` (integer -> BIGINT, as the demo has always published; string -> VARCHAR).
This is generic: any table a job writes with such columns gets its ids restored, with no change to the job.
A key that is not in its key table stops the publish, naming the table, the column and an example key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import duckdb

from precision_marketing.publish.catalog import sql_literal
from precision_marketing.publish.partitions import PublishError, parquet_files

ID_KINDS = {"user": ("user_keys", "user_key", "user_id"), "product": ("product_keys", "product_key", "product_id")}


def id_kind(column: str) -> tuple[str, bool] | None:
    """(kind, is_list) of a column holding keys, else None."""
    for kind, (_, _, id_column) in ID_KINDS.items():
        if column == id_column or column.endswith("_" + id_column):
            return kind, False
        if column.endswith("_" + id_column + "s"):
            return kind, True
    return None


def restore_original_ids(
    table: str, source: Path, key_tables: Mapping[str, Path], id_types: Mapping[str, str], target: Path
) -> Path:
    """Write `source` (Parquet file or folder) to `target` (a Parquet file) with original ids; return the path
    to publish: `target`, or `source` itself when the table has no id column."""
    files = [str(path) for path in parquet_files(source)]
    # hive_partitioning off: the outputs live under ds=YYYY-MM-DD/ folders, which are not columns
    outputs = f"read_parquet([{', '.join(map(sql_literal, files))}], hive_partitioning = false)"
    con = duckdb.connect()
    try:
        columns = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {outputs}").fetchall()]
        id_columns = {column: kind for column in columns if (kind := id_kind(column))}
        if not id_columns:
            return Path(source)
        # the outputs with a row number, materialised once: list columns are unnested and gathered back by it
        ctes = [f"o AS MATERIALIZED (SELECT row_number() OVER () AS __row, * FROM {outputs})"]
        selects, joins, checks = [], [], []
        for position, column in enumerate(columns):
            if column not in id_columns:
                selects.append(f'o."{column}"')
                continue
            kind, is_list = id_columns[column]
            key_table, key_column, id_column = ID_KINDS[kind]
            if kind not in key_tables or not Path(key_tables[kind]).exists():
                raise PublishError(
                    f"{table}: column {column!r} holds {kind} keys but the {key_table} table is "
                    f"missing ({key_tables.get(kind)})"
                )
            alias = f"k{position}"
            keys = f"read_parquet({sql_literal(key_tables[kind])}, hive_partitioning = false)"
            sql_type = "BIGINT" if id_types.get(id_column, "integer") == "integer" else "VARCHAR"
            if not is_list:
                selects.append(f'CAST({alias}."{id_column}" AS {sql_type}) AS "{column}"')
                joins.append(f'LEFT JOIN {keys} AS {alias} ON o."{column}" = {alias}."{key_column}"')
                checks.append(
                    (
                        column,
                        key_table,
                        f'SELECT count(*), min(o."{column}") FROM o {" ".join(joins[-1:])} '
                        f'WHERE o."{column}" IS NOT NULL AND {alias}."{key_column}" IS NULL',
                    )
                )
                continue
            unnested = (
                f'SELECT __row, unnest(o."{column}") AS __key, generate_subscripts(o."{column}", 1) AS __pos FROM o'
            )
            ctes.append(
                f'{alias} AS (SELECT u.__row, list(CAST(k."{id_column}" AS {sql_type}) ORDER BY u.__pos) AS ids, '
                f'count(*) FILTER (WHERE k."{key_column}" IS NULL) AS unmatched, '
                f'min(u.__key) FILTER (WHERE k."{key_column}" IS NULL) AS example '
                f'FROM ({unnested}) AS u LEFT JOIN {keys} AS k ON u.__key = k."{key_column}" GROUP BY u.__row)'
            )
            selects.append(
                f'CASE WHEN o."{column}" IS NULL THEN NULL '
                f'ELSE coalesce({alias}.ids, []::{sql_type}[]) END AS "{column}"'
            )
            joins.append(f"LEFT JOIN {alias} ON {alias}.__row = o.__row")
            checks.append(
                (column, key_table, f"SELECT count(*) FILTER (WHERE unmatched > 0), min(example) FROM {alias}")
            )
        with_clause = "WITH " + ", ".join(ctes)
        query = f"{with_clause} SELECT {', '.join(selects)} FROM o {' '.join(joins)} ORDER BY o.__row"
        for column, key_table, count_unmatched in checks:
            bad = con.execute(f"{with_clause} {count_unmatched}").fetchone()
            if bad[0]:
                raise PublishError(
                    f"{table}: {bad[0]} row(s) have a {column} that is not a key of {key_table} "
                    f"(e.g. {bad[1]}): the outputs and the marts of this run disagree"
                )
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        con.execute(f"COPY ({query}) TO {sql_literal(target)} (FORMAT parquet)")
        return target
    finally:
        con.close()
