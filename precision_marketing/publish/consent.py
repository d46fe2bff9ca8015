"""Published audiences re-checked against tonight's consent.

When a night's audiences are not published (skipped, blocked by the consent guard, failed), the latest published
audiences and audience_exports stay what consumers read, and a person who opted out today would still be in them.
So the publish step re-filters that latest partition with tonight's suppressions and publishes it again in place
(atomically, same ds, tonight's run id): only rows of people suppressed since are removed.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from precision_marketing.publish.catalog import sql_literal
from precision_marketing.publish.partitions import partition_prefix, publish_table, published_partitions, read_manifest
from precision_marketing.storage import Storage

# the published tables with one row per (campaign, user, channel) a tool may act on
REFILTERED_TABLES = ("audiences", "audience_exports")


def refilter_latest(
    storage: Storage, table: str, suppressions: Path, user_keys: Path, work_dir: Path, run_id: str
) -> dict | None:
    """Remove from the latest published partition of `table` the rows whose user is suppressed tonight on the
    row's channel or on all channels; republish it when anything was removed. Returns what happened, or None
    when nothing of the table is published yet."""
    partitions = published_partitions(storage, table)
    if not partitions:
        return None
    ds = partitions[-1]
    manifest = read_manifest(storage, table, ds)
    local = Path(work_dir) / "refilter" / table / f"ds={ds}"
    local.mkdir(parents=True, exist_ok=True)
    files = []
    for entry in manifest["files"]:
        target = local / entry["file"]
        target.write_bytes(storage.get_bytes(partition_prefix(table, ds) + entry["file"]))
        files.append(sql_literal(target))
    con = duckdb.connect()
    try:
        # published rows carry the delivered ids, suppressions the internal keys: user_keys joins the two
        con.execute(
            f"""create view published as select * from read_parquet([{", ".join(files)}]);
            create view suppressed as
                select cast(k.user_id as varchar) as user_id, s.channel
                from read_parquet({sql_literal(suppressions)}) s
                join read_parquet({sql_literal(user_keys)}) k on s.user_id = k.user_key"""
        )
        keep = """select p.* from published p
                  where not exists (select 1 from suppressed s where s.user_id = cast(p.user_id as varchar)
                                    and s.channel in (p.channel, 'all'))"""
        before = con.execute("select count(*) from published").fetchone()[0]
        after = con.execute(f"select count(*) from ({keep})").fetchone()[0]
        if after == before:
            return {"ds": ds, "removed": 0}
        filtered = local / "refiltered.parquet"
        con.execute(f"copy ({keep}) to {sql_literal(filtered)} (format parquet)")
    finally:
        con.close()
    publish_table(storage, table, ds, filtered, run_id)
    return {"ds": ds, "removed": before - after}
