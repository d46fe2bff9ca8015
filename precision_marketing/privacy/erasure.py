"""`pm forget --user ID [--user ...]`: a person removed from everything the platform keeps.

What is removed, by zone (the delivered ids as staging canonicalises them, so 17850, '017850.0' and ' 17850' are
one person; the internal keys the marts and models use; the person's e-mail and its hash):

  erasure register  written first: `privacy/forgotten_users.json` in the lake holds the SHA-256 of each canonical
                    id, and ingest drops their rows from every later landing (counted as `erased_rows` in the
                    landing status), so a shop export that still lists them never brings them back and no campaign
                    can reach them. A stopped command is completed by running it again.
  raw zone          the delivered landing files are rewritten without the person's records (every other byte
                    kept); `forget.keep_raw_landing: true` keeps them, where a retention duty applies to deliveries
  work dir          every Parquet file (landed partitions, features, quarantine, model outputs, publish staging);
                    landed partitions get their counts and fingerprints updated, so staging retypes them once
  warehouse         every table of warehouse.duckdb, the key tables, the consent ledger and the quarantine included
  lake              quarantine/, features/, models/ files, and every published partition of marts/ (republished
                    atomically in place, with its manifest)

The audit record (`privacy/erasures/<UTC time>.json`) holds the time, the operator's reference (a ticket number),
how many ids were asked for and found, and the rows removed per place: no id, hash or e-mail. Run it when no night
is running: a running night holds the warehouse, and the command says so.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from precision_marketing.contract import SOURCES, canonical_id, canonical_id_sql, erased_id_digest
from precision_marketing.ingest.files import match_header, open_binary, read_records
from precision_marketing.ingest.land import Erased, landed_dir, local_raw_dir
from precision_marketing.ingest.mapping import mapping_from_config
from precision_marketing.publish.catalog import sql_literal
from precision_marketing.publish.ids import id_kind
from precision_marketing.publish.partitions import MANIFEST, partition_prefix, publish_table, read_manifest
from precision_marketing.storage import Storage, storage_from_config

REGISTER_KEY = "privacy/forgotten_users.json"
AUDIT_PREFIX = "privacy/erasures/"
INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}


class ErasureError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------- register
def read_register(storage: Storage) -> set[str]:
    if not storage.exists(REGISTER_KEY):
        return set()
    return set(json.loads(storage.get_bytes(REGISTER_KEY))["sha256"])


def erased_for_ingest(config: Mapping, storage: Storage) -> Erased | None:
    """The register as ingest applies it (None when nobody was forgotten)."""
    digests = read_register(storage)
    if not digests:
        return None
    return Erased(frozenset(digests), mapping_from_config(config).ids["user_id"])


# ---------------------------------------------------------------------------------------------- who
@dataclass
class Person:
    """Everything that names the people being forgotten, as SQL predicates over any table's columns."""

    ids: set[str]  # canonical delivered ids
    id_type: str
    keys: set[int] = field(default_factory=set)  # internal keys (marts, models)
    emails: set[str] = field(default_factory=set)  # lower(trim(email))
    email_hashes: set[str] = field(default_factory=set)

    def predicate(self, columns: Iterable[tuple[str, str]], published: bool) -> str | None:
        """SQL true on a row naming one of the people, or None when no column can. Published tables carry
        delivered ids whatever their type; elsewhere an integer user column holds the internal key."""
        ids, keys = _in_list(self.ids), _in_list(self.keys)
        parts = []
        for name, kind in columns:
            column = f'"{name}"'
            held = id_kind(name)
            integer = kind.upper() in INTEGER_TYPES
            if held == ("user", False):
                if published or not integer:
                    parts.append(f"{canonical_id_sql(column, self.id_type)} IN ({ids})")
                elif self.keys:
                    parts.append(f"{column} IN ({keys})")
            elif held == ("user", True):
                values = f"list_transform({column}, x -> {canonical_id_sql('x', self.id_type)})"
                if published or not kind.upper().startswith(tuple(INTEGER_TYPES)):
                    parts.append(f"len(list_filter({values}, x -> x IN ({ids}))) > 0")
                elif self.keys:
                    parts.append(f"len(list_filter({column}, x -> x IN ({keys}))) > 0")
            elif name == "email" and self.emails:
                parts.append(f"lower(trim({column})) IN ({_in_list(self.emails)})")
            elif name == "email_sha256" and self.email_hashes:
                parts.append(f"{column} IN ({_in_list(self.email_hashes)})")
        return " OR ".join(f"coalesce({part}, false)" for part in parts) or None


def _in_list(values: Iterable) -> str:
    return ", ".join(sql_literal(v) if isinstance(v, str) else str(int(v)) for v in sorted(values)) or "NULL"


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> list[tuple[str, str]]:
    return [(row[0], row[1]) for row in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]


# ---------------------------------------------------------------------------------------------- Parquet files
def _parquet(path: Path) -> str:
    return f"read_parquet({sql_literal(str(path))}, hive_partitioning = false)"


def scrub_parquet(path: Path, person: Person, published: bool) -> int:
    """Rewrite a Parquet file without the person's rows (mode kept, Spark's checksum file dropped); rows removed."""
    con = duckdb.connect()
    try:
        predicate = person.predicate(_columns(con, _parquet(path)), published)
        if predicate is None:
            return 0
        removed = con.execute(f"SELECT count(*) FROM {_parquet(path)} WHERE {predicate}").fetchone()[0]
        if removed:
            tmp = path.with_name(f".erasing-{path.name}")
            con.execute(
                f"COPY (SELECT * FROM {_parquet(path)} WHERE NOT ({predicate})) TO {sql_literal(str(tmp))} "
                "(FORMAT parquet)"
            )
            os.chmod(tmp, path.stat().st_mode & 0o777)
            os.replace(tmp, path)
            path.with_name(f".{path.name}.crc").unlink(missing_ok=True)  # a stale checksum fails Spark's read
        return removed
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------- raw files
def scrub_landing_file(path: Path, source: str, mapping, person: Person) -> int:
    """Rewrite a delivered landing file without the records naming the person: every other byte is kept (header,
    quoting, line endings, encoding; gzip re-compressed). Returns the records removed."""
    source_mapping = mapping.source(source)
    header, records = read_records(path, source_mapping)
    position = match_header(header, SOURCES[source], source_mapping).get("user_id")
    if position is None:
        records.close()
        return 0
    starts, drop = [], []
    for record in records:
        starts.append(record.byte_offset)
        value = record.fields[position] if position < len(record.fields) else None
        drop.append(canonical_id(value, person.id_type) in person.ids)
    if not any(drop):
        return 0
    with open_binary(path) as handle:
        content = handle.read()
    kept, cursor = [], 0
    for index, start in enumerate(starts):
        if drop[index]:
            kept.append(content[cursor:start])
            cursor = starts[index + 1] if index + 1 < len(starts) else len(content)
    kept.append(content[cursor:])
    data = b"".join(kept)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".erasing-")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, path.stat().st_mode & 0o777)
    os.replace(tmp, path)
    return sum(drop)


def _landing_source(relative: str) -> str | None:
    """The contract source of a raw-zone path 'source/ds=D/file' that can name a user, else None."""
    parts = relative.split("/")
    if len(parts) < 3 or not parts[1].startswith("ds=") or parts[-1].startswith(("_", ".")):
        return None
    source = SOURCES.get(parts[0])
    return parts[0] if source is not None and "user_id" in source.column_names else None


# ---------------------------------------------------------------------------------------------- the command
def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class _Forget:
    def __init__(self, config: Mapping, person: Person):
        self.config, self.person = config, person
        self.storage = storage_from_config(config)
        self.work = Path(config["work_dir"])
        self.work.mkdir(parents=True, exist_ok=True)  # scratch for S3 objects being rewritten
        self.mapping = mapping_from_config(config)
        self.removed: dict[str, int] = {}
        self.touched_landed: set[Path] = set()

    def count(self, place: str, rows: int) -> None:
        if rows:
            self.removed[place] = self.removed.get(place, 0) + rows

    # -- the warehouse: find keys and e-mails first, then delete
    def warehouse(self) -> None:
        path = self.work / "warehouse.duckdb"
        if not path.exists():
            return
        try:
            con = duckdb.connect(str(path))
        except duckdb.IOException as error:
            raise ErasureError(
                f"the warehouse {path} is in use ({str(error).splitlines()[0]}): a night is probably running; "
                "run pm forget again when it has finished (the register already keeps the person out of new data)"
            ) from None
        try:
            tables = con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                "ORDER BY 1, 2"
            ).fetchall()
            relations = {f'"{schema}"."{name}"': _columns(con, f'"{schema}"."{name}"') for schema, name in tables}
            self._identify(con, relations)
            for relation, columns in relations.items():
                predicate = self.person.predicate(columns, published=False)
                if predicate:
                    removed = con.execute(f"DELETE FROM {relation} WHERE {predicate}").fetchone()[0]
                    self.count("warehouse:" + relation.replace('"', ""), removed)
        finally:
            con.close()

    def _identify(self, con, relations: Mapping[str, list[tuple[str, str]]]) -> None:
        """The person's internal keys and e-mails, from whichever tables hold them next to the delivered id."""
        person = self.person
        ids = _in_list(person.ids)

        def values(sql: str) -> set:
            return {row[0] for row in con.execute(sql).fetchall()}

        for relation, columns in relations.items():
            names = {name for name, _ in columns}
            if {"user_key", "user_id"} <= names:
                person.keys |= values(
                    f"SELECT user_key FROM {relation} WHERE {canonical_id_sql('user_id', person.id_type)} IN ({ids})"
                )
        for relation, columns in relations.items():
            names = {name for name, _ in columns}
            predicate = person.predicate([(n, k) for n, k in columns if id_kind(n) == ("user", False)], False)
            if predicate and "email" in names:
                found = f"SELECT DISTINCT lower(trim(email)) FROM {relation} WHERE ({predicate}) AND email IS NOT NULL"
                person.emails |= values(found)
            if predicate and "email_sha256" in names:
                found = f"SELECT DISTINCT email_sha256 FROM {relation} WHERE ({predicate}) AND email_sha256 IS NOT NULL"
                person.email_hashes |= values(found)
        person.email_hashes |= {hashlib.sha256(email.encode()).hexdigest() for email in person.emails}

    # -- delivered landing files
    def raw_zone(self) -> None:
        if self.config["forget"]["keep_raw_landing"]:
            return
        for key in self.storage.list_keys("raw/"):
            source = _landing_source(key[len("raw/") :])
            if source is None:
                continue
            self.count(
                f"lake:raw/{source}",
                self.rewrite_object(
                    key, lambda path, source=source: scrub_landing_file(path, source, self.mapping, self.person)
                ),
            )
        staged = self.work / "raw"  # an S3 lake's raw partitions staged on local disk for ingest
        if self.config["lake"]["backend"] != "local" and staged.is_dir():
            for path in sorted(p for p in staged.rglob("*") if p.is_file()):
                source = _landing_source(path.relative_to(staged).as_posix())
                if source is not None:
                    self.count(f"work:raw/{source}", scrub_landing_file(path, source, self.mapping, self.person))

    # -- the work dir's Parquet files
    def work_files(self) -> None:
        if not self.work.is_dir():
            return
        for path in sorted(self.work.rglob("*.parquet")):
            if path.name.startswith("."):
                continue
            relative = path.relative_to(self.work)
            published = relative.parts[0] in ("publish", "refilter")
            removed = scrub_parquet(path, self.person, published)
            self.count(f"work:{'/'.join(relative.parts[:2])}", removed)
            if removed and relative.parts[0] == "landed":
                self.touched_landed.add(path.parent)

    def landed_markers(self) -> None:
        """Counts and landing-file digests of the landed partitions brought in line with their files, so the
        next night does not land them again, and dbt retypes exactly the partitions that changed."""
        landed = landed_dir(self.config)
        if not landed.is_dir():
            return
        raw_root = local_raw_dir(self.config)
        for marker in sorted(landed.glob("*/ds=*/_landed.json")):
            state = json.loads(marker.read_text())
            files = state["fingerprint"]["files"]
            digests = [[name, _sha256(raw_root / name) if (raw_root / name).exists() else sha] for name, sha in files]
            if digests == files and marker.parent not in self.touched_landed:
                continue
            state["fingerprint"]["files"] = digests
            parts = [str(p) for p in sorted(marker.parent.glob("part-*.parquet"))]
            if parts:
                rows, errors = duckdb.sql(
                    f"SELECT count(*), count(ingest_error) FROM read_parquet({parts}, hive_partitioning = false)"
                ).fetchone()
                state["counts"].update(rows=rows, ingest_errors=errors)
            marker.write_text(json.dumps(state, indent=2))

    # -- the lake's Parquet zones and the published history
    def lake_files(self) -> None:
        for key in self.storage.list_keys(""):
            zone = key.split("/", 1)[0]
            if not key.endswith(".parquet") or zone in ("marts", "raw", "privacy") or key.rsplit("/", 1)[-1][0] == ".":
                continue
            self.count(
                f"lake:{'/'.join(key.split('/')[:2])}",
                self.rewrite_object(key, lambda path: scrub_parquet(path, self.person, published=False)),
            )

    def rewrite_object(self, key: str, scrub) -> int:
        """scrub(path) on a lake file: in place on a local lake, else on a downloaded copy put back when it changed."""
        local = getattr(self.storage, "path", None)
        if local is not None:
            return scrub(local(key))
        with tempfile.TemporaryDirectory(dir=self.work) as tmp:
            copy = Path(tmp) / key.rsplit("/", 1)[-1]
            copy.write_bytes(self.storage.get_bytes(key))
            removed = scrub(copy)
            if removed:
                self.storage.put_file(key, copy)
            return removed

    def published(self, run_id: str) -> None:
        manifests = [k for k in self.storage.list_keys("marts/") if k.endswith("/" + MANIFEST)]
        for key in manifests:
            _, table, partition, _ = key.split("/")
            ds = partition[len("ds=") :]
            manifest = read_manifest(self.storage, table, ds)
            if manifest is None:
                continue
            with tempfile.TemporaryDirectory(dir=self.work) as tmp:
                removed = 0
                for entry in manifest["files"]:
                    copy = Path(tmp) / entry["file"]
                    copy.write_bytes(self.storage.get_bytes(partition_prefix(table, ds) + entry["file"]))
                    removed += scrub_parquet(copy, self.person, published=True)
                if removed:
                    publish_table(self.storage, table, ds, Path(tmp), run_id)
                self.count(f"lake:marts/{table}", removed)


def forget(config: Mapping, user_ids: Iterable[str], reference: str | None = None) -> dict:
    """Remove the people from every zone, the warehouse and the published history; returns the audit record."""
    id_type = mapping_from_config(config).ids["user_id"]
    asked = list(user_ids)
    if not asked:
        raise ErasureError("name at least one person: pm forget --user ID")
    ids = set()
    for value in asked:
        canonical = canonical_id(value, id_type)
        if canonical is None:
            raise ErasureError(f"{value!r} is not a user id of the configured shape ({id_type}, the mapping's ids)")
        ids.add(canonical)
    if reference is not None and ("@" in reference or len(reference) > 80):
        raise ErasureError("--reference is a ticket number (at most 80 characters, no e-mail address)")
    job = _Forget(config, Person(ids=ids, id_type=id_type))
    at = dt.datetime.now(dt.UTC)
    stamp = at.strftime("%Y%m%dT%H%M%S%fZ")
    # the register first: whatever happens below, ingest keeps them out from now on (and a re-run completes this)
    register = read_register(job.storage) | {erased_id_digest(i) for i in ids}
    job.storage.put_bytes(REGISTER_KEY, json.dumps({"version": 1, "sha256": sorted(register)}, indent=0).encode())
    job.warehouse()
    job.raw_zone()
    job.work_files()
    job.landed_markers()
    job.lake_files()
    job.published(run_id=f"erasure-{stamp}")
    record = {
        "at": at.isoformat(timespec="seconds"),
        "reference": reference,
        "people_asked": len(ids),
        "people_found": len(job.person.keys),
        "raw_landing": "kept (forget.keep_raw_landing)" if config["forget"]["keep_raw_landing"] else "rewritten",
        "register_size": len(register),
        "rows_removed": dict(sorted(job.removed.items())),
    }
    job.storage.put_bytes(f"{AUDIT_PREFIX}{stamp}.json", json.dumps(record, indent=2).encode())
    return record
