"""Atomic, idempotent publication of a table partition to the lake.

Layout: marts/<table>/ds=YYYY-MM-DD/part-<run_id>-NNNNN.parquet + _manifest.json + _SUCCESS.

The manifest is the commit point. New parts are uploaded under run-unique names next to the old
ones; one PUT of _manifest.json (atomic on S3 and, via rename, on disk) switches readers to them;
_SUCCESS follows; only then are files the manifest does not list deleted. A run killed at any step
therefore leaves either the previous partition or the new one visible, never a mix, and the next
publish of the same ds removes its leftovers. A partition without _SUCCESS does not exist for readers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq

from precision_marketing.storage import Storage

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"


class PublishError(RuntimeError):
    pass


def partition_prefix(table: str, ds: str) -> str:
    return f"marts/{table}/ds={ds}/"


def parquet_files(source: Path) -> list[Path]:
    """A Parquet file, or the part files of a folder (a Spark output, skipping its _SUCCESS and .crc files)."""
    source = Path(source)
    if source.is_file():
        return [source]
    files = sorted(p for p in source.rglob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise PublishError(f"nothing to publish: no .parquet files under {source}")
    return files


def _describe(files: list[Path], table: str) -> tuple[list[dict], list[dict]]:
    """Per-file row counts and the common schema, read from Parquet footers only (no data loaded)."""
    described, schema = [], None
    for path in files:
        try:
            meta = pq.read_metadata(path)
        except Exception as exc:  # a truncated or foreign file: name it
            raise PublishError(f"{table}: {path} is not a readable Parquet file ({exc})") from exc
        file_schema = [{"name": f.name, "type": str(f.type)} for f in meta.schema.to_arrow_schema()]
        if schema is None:
            schema = file_schema
        elif file_schema != schema:
            raise PublishError(f"{table}: {path} has schema {file_schema}, other parts have {schema}")
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        described.append({"rows": meta.num_rows, "bytes": path.stat().st_size, "sha256": digest})
    return described, schema or []


def publish_table(storage: Storage, table: str, ds: str, source: Path, run_id: str) -> dict:
    """Publish the Parquet file(s) at `source` as partition ds of `table`, replacing any earlier one."""
    files = parquet_files(source)
    described, schema = _describe(files, table)
    prefix = partition_prefix(table, ds)
    safe_run_id = "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)

    entries = []
    for index, (path, info) in enumerate(zip(files, described)):
        name = f"part-{safe_run_id}-{index:05d}.parquet"
        storage.put_file(prefix + name, path)
        entries.append({"file": name, **info})

    manifest = {
        "table": table,
        "ds": ds,
        "run_id": run_id,
        "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "row_count": sum(e["rows"] for e in entries),
        "files": entries,
        "schema": schema,
    }
    storage.put_bytes(prefix + MANIFEST, json.dumps(manifest, indent=2).encode())
    storage.put_bytes(prefix + SUCCESS, run_id.encode())

    keep = {prefix + MANIFEST, prefix + SUCCESS} | {prefix + e["file"] for e in entries}
    storage.delete_keys(k for k in storage.list_keys(prefix) if k not in keep)
    return manifest


def read_manifest(storage: Storage, table: str, ds: str) -> dict | None:
    """The committed manifest of a partition, or None when the partition is not published (no _SUCCESS)."""
    prefix = partition_prefix(table, ds)
    if not storage.exists(prefix + SUCCESS):
        return None
    return json.loads(storage.get_bytes(prefix + MANIFEST))


def published_partitions(storage: Storage, table: str) -> list[str]:
    """ds values of the committed partitions of a table, oldest first."""
    marker = "/" + SUCCESS
    return sorted(
        key.split("/ds=")[1].split("/")[0]
        for key in storage.list_keys(f"marts/{table}/")
        if key.endswith(marker) and "/ds=" in key
    )
