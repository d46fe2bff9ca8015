"""Landing files -> normalised Parquet that dbt reads: the mapping applied, every row kept.

For each landing file of the run's window (ingest/plan.py decides which, and stops on
file-level problems), a file that parses cleanly (UTF-8, one line per record, the header's field count, strict
quoting) is read whole by Arrow and normalised once per distinct value (ingest/columnar.py: the fast path, with
the same output); any other file is read one record at a time so that one bad row never costs the file:

- bytes are decoded per line with the mapping's encoding; a line that does not decode is kept with
  `ingest_error` = "undecodable byte 0xE9 at byte 1234 of the file (utf-8: invalid continuation byte)";
- records follow CSV quoting (embedded delimiters, quotes and newlines); a record whose quoting is
  broken, or whose field count differs from the header's, is kept with the reason;
- headers are matched to the contract by name (case and surrounding spaces ignored) after the
  mapping's renames; extra columns are ignored, column order does not matter;
- enumerations are matched case-insensitively, then through the mapping's and the contract's synonyms;
- timestamps are parsed with the mapping's formats (ISO-8601 with offsets by default, epoch on request),
  converted to UTC and written as 'YYYY-MM-DDTHH:MM:SSZ'; dates with the mapping's formats to 'YYYY-MM-DD';
- a value the mapping excludes marks the row (`excluded by the mapping: product_id = 'POST'`).

A value that cannot be parsed is left exactly as delivered: dbt's rules then quarantine the row with
the raw value. Blank lines are not rows. Output per landing partition:
`<landed>/<source>/ds=D/part-NNNNN.parquet` (every contract column as text, source_file, source_row,
ingest_error) + `_landed.json`; a partition whose landing files and mapping are unchanged is not read
again (landing files are immutable). `<landed>/_status/ds=D.json` records what was delivered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq

from precision_marketing.contract import SOURCES, SYNONYMS, SourceContract, canonical_id, erased_id_digest
from precision_marketing.ingest.columnar import normalise_table, read_clean_file
from precision_marketing.ingest.files import match_header, read_records
from precision_marketing.ingest.mapping import ISO, Mapping, SourceMapping
from precision_marketing.ingest.plan import plan_window

INGEST_VERSION = "2"  # bump when the normalisation changes: cached partitions are then rebuilt (2: sub-second times)
BATCH_ROWS = 65_536
_ISO_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?\s*([Zz]|[+-]\d{2}(:?\d{2})?)?")
_CANONICAL_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EPOCH = re.compile(r"-?\d+(\.\d+)?")
_PLAIN_UTC = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


def canonical_timestamp(moment: dt.datetime) -> str:
    """UTC as 'YYYY-MM-DDTHH:MM:SS[.ffffff]Z' (explicit UTC: a raw value the mapping could not parse never passes
    for one). Fractions are kept (two consent changes within one second must
    keep their order), whole seconds are written without one."""
    utc = moment.astimezone(dt.UTC)
    fraction = f".{utc.microsecond:06d}" if utc.microsecond else ""
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


@dataclass(frozen=True)
class Erased:
    """The people of the erasure register (privacy/erasure.py) as ingest sees them: digests of canonical ids."""

    digests: frozenset[str]
    id_type: str = "integer"

    def names(self, value: str) -> bool:
        canonical = canonical_id(value, self.id_type)
        return canonical is not None and erased_id_digest(canonical) in self.digests


def landed_schema(source: SourceContract) -> pa.Schema:
    return pa.schema(
        [
            *[(name, pa.string()) for name in source.column_names],
            ("source_file", pa.string()),
            ("source_row", pa.int64()),
            ("ingest_error", pa.string()),
        ]
    )


class _Normaliser:
    """Per-column functions text -> text (None = NULL) built once per source from the contract and mapping."""

    def __init__(self, source: SourceContract, mapping: SourceMapping):
        self.source, self.mapping = source, mapping
        self.zone = ZoneInfo(mapping.timestamps.timezone)
        # 'YYYY-MM-DD HH:MM:SS' read as ISO in UTC needs no parsing (the bulk of the contract's own files)
        self.canonical_is_utc = (
            mapping.timestamps.formats[:1] == (ISO,)
            and mapping.timestamps.timezone == "UTC"
            and not mapping.timestamps.epoch
        )
        self.functions = {column.name: self._function(column) for column in source.columns}
        self.excluded = {column: {v.strip() for v in values} for column, values in mapping.exclude.items()}

    def plain_utc_columns(self) -> frozenset[str]:
        """Timestamp columns whose rule starts with the plain-UTC shortcut of _timestamp (no value remapping)."""
        if not self.canonical_is_utc:
            return frozenset()
        return frozenset(c.name for c in self.source.columns if self.functions[c.name] == self._timestamp)

    def _function(self, column):
        mapped = {k.strip(): v for k, v in self.mapping.values.get(column.name, {}).items()}
        if column.is_enum:
            allowed = set(column.allowed)
            lookup = {**SYNONYMS.get(column.synonyms, {}), **{k.lower(): v for k, v in mapped.items()}}
            cache: dict[str, str] = {}

            def enum(value: str) -> str:
                if value not in cache:
                    key = value.strip().lower()
                    cache[value] = key if key in allowed else lookup.get(key, value)
                return cache[value]

            return enum
        base = {"timestamp": self._timestamp, "date": self._date}.get(column.type, None)
        if mapped:

            def remapped(value: str) -> str:
                value = mapped.get(value.strip(), value)
                return base(value) if base else value

            return remapped
        return base

    def _timestamp(self, value: str) -> str:
        text = value.strip()
        rule = self.mapping.timestamps
        if self.canonical_is_utc and _PLAIN_UTC.fullmatch(text):
            try:
                dt.datetime.fromisoformat(text)  # a real time (not 2026-13-45 25:61:00): already UTC, no conversion
                return f"{text[:10]}T{text[11:]}Z"
            except ValueError:
                return value
        if rule.epoch and _EPOCH.fullmatch(text):
            seconds = float(text) / (1000 if rule.epoch == "milliseconds" else 1)
            try:
                return canonical_timestamp(dt.datetime.fromtimestamp(seconds, dt.UTC))
            except (OverflowError, OSError, ValueError):
                return value
        for fmt in rule.formats:
            try:
                if fmt == ISO:
                    if not _ISO_TIMESTAMP.fullmatch(text):
                        continue
                    text_iso = re.sub(r"(\.\d{6})\d+", r"\1", text.replace(" Z", "Z").replace("z", "Z"))
                    parsed = dt.datetime.fromisoformat(text_iso.replace("t", "T"))
                else:
                    parsed = dt.datetime.strptime(text, fmt)
            except ValueError:
                continue
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=self.zone)
            return canonical_timestamp(parsed)
        return value

    def _date(self, value: str) -> str:
        text = value.strip()
        if _CANONICAL_DATE.fullmatch(text):
            return text  # dbt checks it is a real date
        for fmt in self.mapping.dates.formats:
            try:
                return dt.datetime.strptime(text, fmt).date().isoformat()
            except ValueError:
                continue
        return value


def normalise_file(
    path: Path,
    relative: str,
    source: SourceContract,
    mapping: SourceMapping,
    out: Path,
    erased: Erased | None = None,
    *,
    fast: bool = True,
) -> dict:
    """Write one landing file as normalised Parquet at `out`; return its counts. Rows of people in the erasure
    register (`pm forget`) are not landed: they are counted as `erased_rows`, nothing else of them is kept.
    fast: try the fast path first (fast_files = 1 when it took the file)."""
    clean = read_clean_file(path, mapping) if fast else None
    header, records = (clean[0], None) if clean is not None else read_records(path, mapping)
    positions = match_header(header, source, mapping)
    normaliser = _Normaliser(source, mapping)
    if clean is not None:
        landed, counts = normalise_table(
            clean[1],
            schema=landed_schema(source),
            columns=source.column_names,
            positions=positions,
            functions=normaliser.functions,
            excluded=normaliser.excluded,
            relative=relative,
            erased=erased.names if erased else None,
            user_position=positions.get("user_id") if erased else None,
            plain_utc=normaliser.plain_utc_columns(),
        )
        pq.write_table(landed, out, row_group_size=BATCH_ROWS)
        return {**counts, "fast_files": 1}
    schema = landed_schema(source)
    n_fields = len(header)
    counts = {"rows": 0, "ingest_errors": 0, "erased_rows": 0, "fast_files": 0}
    user_position = positions.get("user_id") if erased else None
    columns = {name: [] for name in schema.names}
    writer = pq.ParquetWriter(out, schema)

    def flush():
        writer.write_table(pa.table(columns, schema=schema))
        for values in columns.values():
            values.clear()

    # per column: where it is in the row, its output list, its normalising function (None = text as is)
    plan = [(positions.get(column), columns[column], normaliser.functions[column]) for column in source.column_names]
    excluded = [(columns[column], column, values) for column, values in normaliser.excluded.items()]
    files, rows, errors = columns["source_file"], columns["source_row"], columns["ingest_error"]
    try:
        for record in records:
            fields = record.fields
            if user_position is not None and user_position < len(fields) and erased.names(fields[user_position]):
                counts["erased_rows"] += 1
                continue
            error = record.error
            if error is None and len(fields) != n_fields:
                extra_empty = len(fields) > n_fields and not any(f.strip() for f in fields[n_fields:])
                if not extra_empty:
                    error = f"row has {len(fields)} fields, the header has {n_fields}"
            for index, output, function in plan:
                value = fields[index] if index is not None and index < len(fields) else None
                if value is not None and not value.strip():
                    value = None  # empty (or blank) field = NULL
                elif value is not None and function is not None and error is None:
                    value = function(value)
                output.append(value)
            if error is None:
                for output, column, values in excluded:
                    if output[-1] is not None and output[-1].strip() in values:
                        error = f"excluded by the mapping: {column} = '{output[-1].strip()}'"
                        break
            files.append(relative)
            rows.append(record.row)
            errors.append(error)
            counts["rows"] += 1
            counts["ingest_errors"] += error is not None
            if len(rows) >= BATCH_ROWS:
                flush()
        flush()
    finally:
        writer.close()
    return counts


# ------------------------------------------------------------------------------------------ landing
def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def land_partition(
    raw_root: Path,
    landed_root: Path,
    source: SourceContract,
    day: str,
    files: list[Path],
    mapping: SourceMapping,
    erased: Erased | None = None,
    fast: bool = True,
) -> dict:
    """Normalise the landing files of one partition unless the same files were landed with the same mapping."""
    target = landed_root / source.name / f"ds={day}"
    fingerprint = {
        "version": INGEST_VERSION,
        "mapping": mapping.fingerprint(),
        "files": [[path.relative_to(raw_root).as_posix(), _sha256(path)] for path in files],
    }
    # what dbt's incremental staging compares to decide whether a partition must be typed again
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:32]
    marker = target / "_landed.json"
    if marker.exists():
        landed = json.loads(marker.read_text())
        if landed.get("fingerprint") == fingerprint:
            return {**landed["counts"], "cached": True, "fingerprint": digest}
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    counts = {"rows": 0, "ingest_errors": 0, "erased_rows": 0, "fast_files": 0}
    for index, path in enumerate(files):
        relative = "raw/" + path.relative_to(raw_root).as_posix()
        file_counts = normalise_file(
            path, relative, source, mapping, target / f"part-{index:05d}.parquet", erased, fast=fast
        )
        for key in counts:
            counts[key] += file_counts[key]
    if not files:  # a source not delivered: an empty table with the schema, so dbt always has a file to read
        pq.write_table(landed_schema(source).empty_table(), target / "part-00000.parquet")
    marker.write_text(json.dumps({"fingerprint": fingerprint, "counts": counts}, indent=2))
    return {**counts, "cached": False, "fingerprint": digest}


def local_raw_dir(config: dict) -> Path:
    """The raw zone as a local folder the ingest step can read: the lake itself when it is local, else a staged copy."""
    if config["lake"]["backend"] == "local":
        return Path(config["lake"]["local_root"]) / "raw"
    return Path(config["work_dir"]) / "raw"


def landed_dir(config: dict) -> Path:
    """Where the ingest step writes the normalised landing files dbt reads (land_window below)."""
    return Path(config["work_dir"]) / "landed"


def status_path(landed_root: Path, ds: str) -> Path:
    return Path(landed_root) / "_status" / f"ds={ds}.json"


def partitions_path(landed_root: Path, ds: str) -> Path:
    return Path(landed_root) / "_status" / f"ds={ds}.partitions.ndjson"


def land_window(
    raw_root: Path,
    landed_root: Path,
    ds: str,
    history_days: int,
    mapping: Mapping,
    erased: Erased | None = None,
    fast: bool = True,
) -> dict:
    """Check the window's landing files (raising RawContractError on file-level problems), normalise them
    into `landed_root` (without the rows of people in `erased`), remove landed partitions of the window whose
    landing partition is gone, and write the status of ds. Returns that status. fast=False: every file by the
    careful path (the benchmark's comparison)."""
    raw_root, landed_root = Path(raw_root), Path(landed_root)
    plan = plan_window(raw_root, ds, history_days, mapping)
    sources, partitions = [], []
    for name, source in SOURCES.items():
        planned = plan["sources"][name]
        source_mapping = mapping.source(name)
        rows = rows_ds = errors = cached = erased_rows = fast_files = 0
        landed_days = set()
        for day, files in planned["partitions"].items():
            counts = land_partition(
                raw_root, landed_root, source, day, [raw_root / f for f in files], source_mapping, erased, fast
            )
            landed_days.add(day)
            partitions.append(
                {"source": name, "partition_date": day, "fingerprint": counts["fingerprint"], "rows": counts["rows"]}
            )
            rows += counts["rows"]
            errors += counts["ingest_errors"]
            cached += counts["cached"]
            erased_rows += counts.get("erased_rows", 0)
            fast_files += 0 if counts["cached"] else counts.get("fast_files", 0)
            if day == ds:
                rows_ds = counts["rows"]
        if not planned["delivered"]:
            counts = land_partition(raw_root, landed_root, source, ds, [], source_mapping)
            partitions.append({"source": name, "partition_date": ds, "fingerprint": counts["fingerprint"], "rows": 0})
            landed_days.add(ds)
        for day in plan["window"] if source.kind == "increment" else [ds]:
            if day not in landed_days:  # its landing partition was removed: so is what was landed from it
                shutil.rmtree(landed_root / name / f"ds={day}", ignore_errors=True)
        sources.append(
            {
                "source": name,
                "kind": source.kind,
                "role": source.role,
                "delivered": planned["delivered"],
                "files": sum(len(f) for f in planned["partitions"].values()),
                "rows": rows,
                "rows_ds": rows_ds,
                "ingest_errors": errors,
                "partitions_cached": cached,
                "erased_rows": erased_rows,  # rows of forgotten people (pm forget) not landed
                "files_fast": fast_files,  # files landed tonight by the fast path (ingest/columnar.py)
            }
        )
    status = {
        "ds": ds,
        "history_days": history_days,
        "mapping": mapping.path,
        "ids": dict(mapping.ids),
        "sources": sources,
        "capabilities": plan["capabilities"],
        "notes": plan["notes"],
        "warnings": plan["warnings"],
    }
    path = status_path(landed_root, ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(status, indent=2))
    # the same rows as JSON lines for dbt (model landed_sources), and the landed partitions of the run with their
    # fingerprints (landing files, mapping, ingest version): dbt's incremental staging types a partition again
    # when its fingerprint changed (macros/incremental.sql)
    path.with_suffix(".ndjson").write_text("".join(json.dumps(s) + "\n" for s in sources))
    partitions_path(landed_root, ds).write_text("".join(json.dumps(p) + "\n" for p in partitions))
    return status


def read_status(landed_root: Path, ds: str) -> dict:
    path = status_path(landed_root, ds)
    if not path.exists():
        raise FileNotFoundError(f"no landing status for ds={ds} at {path}: the check_raw step has not run for it")
    return json.loads(path.read_text())
