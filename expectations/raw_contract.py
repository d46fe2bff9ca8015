"""The raw-zone data contract as code, and the file-level check that runs before anything is transformed.

`SOURCES` is the one place that says which sources exist, what each is for (dimension, behaviour,
audience), which columns they carry and which values are allowed (with their built-in synonyms).
docs/data_contract.md documents it (a test keeps the two in agreement), the synthetic generator writes
it, precision_marketing/ingest.py reads landing files into it through a mapping, and dbt staging
enforces the row-level rules.

`plan_window` / `check_raw` check files and headers only: which sources are delivered, that a delivered
source has its ds partition, that every landing file is non-empty and has every required column (after
the mapping's renames). All problems are collected into one `RawContractError` naming each file.

    python -m expectations.raw_contract --raw-root lake/raw --ds 2026-11-23 --history-days 30 [--mapping m.yaml]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import zlib
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

SNAPSHOT = "snapshot"
INCREMENT = "increment"

# What a source is for. At least one behaviour source is required; dimensions are derived from behaviour
# when not delivered; the audience sources together enable the CTR model and audiences.
DIMENSION = "dimension"
BEHAVIOUR = "behaviour"
AUDIENCE = "audience"

EVENT_TYPES = ("view", "cart", "purchase", "favourite")
PLACEMENTS = ("homepage_banner", "product_page", "search_results", "email", "push")
CAMPAIGN_CHANNELS = ("email", "push", "onsite")
CONSENT_CHANNELS = ("email", "push", "onsite", "all")
CONSENT_STATUSES = ("opt_in", "opt_out")
CLICKED_VALUES = ("0", "1")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
DATE_FORMAT = "%Y-%m-%d"

# Built-in synonyms of the enumerations (compared after trim + lower case, like the values themselves).
# A mapping file can add its own (docs/data_contract.md, "Mapping file").
CHANNEL_SYNONYMS = {"e-mail": "email", "mail": "email", "newsletter": "email", "push_notification": "push",
                    "push notification": "push", "mobile_push": "push", "web": "onsite", "site": "onsite",
                    "on-site": "onsite", "on_site": "onsite"}
SYNONYMS: dict[str, dict[str, str]] = {
    "event_type": {"favorite": "favourite", "add_to_cart": "cart", "addtocart": "cart",
                   "transaction": "purchase", "pageview": "view", "page_view": "view"},
    "clicked": {"true": "1", "false": "0", "yes": "1", "no": "0", "y": "1", "n": "0", "t": "1", "f": "0",
                "1.0": "1", "0.0": "0"},
    "campaign_channel": CHANNEL_SYNONYMS,
    "consent_channel": {**CHANNEL_SYNONYMS, "any": "all", "every": "all", "global": "all", "*": "all"},
    "status": {"optin": "opt_in", "opt-in": "opt_in", "opt in": "opt_in", "subscribed": "opt_in",
               "granted": "opt_in", "yes": "opt_in", "true": "opt_in", "y": "opt_in", "1": "opt_in",
               "optout": "opt_out", "opt-out": "opt_out", "opt out": "opt_out", "unsubscribed": "opt_out",
               "revoked": "opt_out", "denied": "opt_out", "withdrawn": "opt_out", "no": "opt_out",
               "false": "opt_out", "n": "opt_out", "0": "opt_out"},
}


class RawContractError(Exception):
    """The raw zone breaks the contract; `problems` lists every problem, one line each."""

    def __init__(self, ds: str, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"raw data contract failed for ds={ds} ({len(self.problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # id | string | integer | decimal | date | timestamp (enumerations: string with `allowed`)
    required: bool = True
    allowed: tuple[str, ...] = ()
    rule: str = ""
    synonyms: str = ""  # key of SYNONYMS applied before the allowed values are checked

    @property
    def is_enum(self) -> bool:
        return bool(self.allowed)


@dataclass(frozen=True)
class SourceContract:
    name: str
    kind: str  # SNAPSHOT or INCREMENT
    role: str  # DIMENSION, BEHAVIOUR or AUDIENCE
    columns: tuple[Column, ...]
    key: tuple[str, ...] = field(default=())

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def required_columns(self) -> list[str]:
        return [column.name for column in self.columns if column.required]

    def column(self, name: str) -> Column:
        return next(column for column in self.columns if column.name == name)

    def partition_dir(self, ds: str) -> Path:
        return Path(self.name) / f"ds={ds}"

    def relative_path(self, ds: str) -> Path:
        """Where the generator (and the contract's default mapping) puts the landing file of ds."""
        return self.partition_dir(ds) / f"{self.name}.csv"


SOURCES: dict[str, SourceContract] = {
    source.name: source
    for source in (
        SourceContract("users", SNAPSHOT, DIMENSION, (
            Column("user_id", "id", rule="unique, not null"),
            Column("email", "string", rule="not null"),
            Column("country", "string", rule="ISO-3166 alpha-2"),
            Column("signup_date", "date", rule="valid date"),
        ), key=("user_id",)),
        SourceContract("products", SNAPSHOT, DIMENSION, (
            Column("product_id", "id", rule="unique, not null"),
            Column("title", "string", required=False),
            Column("category", "string", rule="not null"),
            Column("brand", "string"),
            Column("price", "decimal", rule="> 0, at most 1,000,000"),
        ), key=("product_id",)),
        SourceContract("events", INCREMENT, BEHAVIOUR, (
            Column("event_id", "string", required=False, rule="unique; without it a row is identified by its content"),
            Column("user_id", "id", rule="known user"),
            Column("product_id", "id", rule="known product"),
            Column("event_type", "string", allowed=EVENT_TYPES, rule="one of the values", synonyms="event_type"),
            Column("event_ts", "timestamp", rule="valid, not in the future"),
            Column("session_id", "string", required=False, rule="empty = one session per user and day"),
        ), key=("event_id",)),
        SourceContract("orders", INCREMENT, BEHAVIOUR, (
            Column("order_id", "string", rule="not null"),
            Column("line", "string", required=False,
                   rule="(order_id, line) unique; without it a line is identified by its content"),
            Column("user_id", "id", rule="known user"),
            Column("product_id", "id", rule="known product"),
            Column("quantity", "integer", rule="not 0, at most 100,000 either way; < 0 = a return"),
            Column("unit_price", "decimal", rule="> 0, at most 1,000,000"),
            Column("order_ts", "timestamp", rule="valid, not in the future"),
        ), key=("order_id", "line")),
        SourceContract("impressions", INCREMENT, AUDIENCE, (
            Column("impression_id", "string", rule="unique, not null"),
            Column("user_id", "id", rule="known user"),
            Column("campaign_id", "string", rule="known campaign"),
            Column("placement", "string", allowed=PLACEMENTS, rule="one of the values"),
            Column("impression_ts", "timestamp", rule="valid, not in the future"),
            Column("clicked", "integer", allowed=CLICKED_VALUES, rule="one of the values", synonyms="clicked"),
        ), key=("impression_id",)),
        SourceContract("campaigns", SNAPSHOT, AUDIENCE, (
            Column("campaign_id", "string", rule="unique, not null"),
            Column("name", "string"),
            Column("target_category", "string"),
            Column("channel", "string", allowed=CAMPAIGN_CHANNELS, rule="one of the values",
                   synonyms="campaign_channel"),
            Column("placement", "string", allowed=PLACEMENTS, rule="one of the values"),
            Column("start_date", "date", rule="valid date"),
            Column("end_date", "date", rule=">= start_date"),
            Column("audience_size", "integer", rule="> 0, at most 100,000,000"),
        ), key=("campaign_id",)),
        SourceContract("consent", SNAPSHOT, AUDIENCE, (
            Column("user_id", "id", rule="known user"),
            Column("channel", "string", allowed=CONSENT_CHANNELS, rule="one of the values; invalid = all channels",
                   synonyms="consent_channel"),
            Column("status", "string", allowed=CONSENT_STATUSES, rule="one of the values; invalid = opt_out",
                   synonyms="status"),
            Column("updated_ts", "timestamp", rule="valid; the latest row per (user_id, channel) wins"),
        ), key=("user_id", "channel", "updated_ts")),
    )
}
BEHAVIOUR_SOURCES = tuple(name for name, source in SOURCES.items() if source.role == BEHAVIOUR)
AUDIENCE_SOURCES = tuple(name for name, source in SOURCES.items() if source.role == AUDIENCE)


def _parse_ds(ds: str | date) -> date:
    if isinstance(ds, date):
        return ds
    try:
        return date.fromisoformat(ds)
    except ValueError:
        raise ValueError(f"ds must be a date YYYY-MM-DD, got {ds!r}") from None


def _count_data_lines(path: Path) -> int:
    """Lines after the header (a quoted field with a newline counts twice: cheap, not exact)."""
    from precision_marketing.ingest import open_binary

    newlines, last = 0, b"\n"
    with open_binary(path) as handle:
        while chunk := handle.read(1 << 20):
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    lines = newlines + (0 if last == b"\n" else 1)
    return max(lines - 1, 0)


def _header_problems(path: Path, relative: str, source: SourceContract, mapping) -> list[str]:
    """File-level problems of one landing file: empty, no header, a required column missing (after the
    mapping's renames), a column twice, or a delimiter that is not the mapping's."""
    from precision_marketing.ingest import match_header, read_header

    requires = f"(source '{source.name}' requires: {', '.join(source.required_columns)})"
    if path.stat().st_size == 0:
        return [f"{relative}: file is empty (0 bytes); a day without rows must still have the header line"]
    try:
        header = read_header(path, mapping)
    except (OSError, EOFError, zlib.error) as error:  # e.g. a truncated .gz
        return [f"{relative}: cannot be read ({error})"]
    if not any(name.strip() for name in header):
        return [f"{relative}: first line is empty, expected a header {requires}"]
    present = match_header(header, source, mapping)
    missing = [name for name in source.required_columns if name not in present]
    if missing and len(header) == 1:
        for other in (";", "\t", "|", ",", ":"):
            if other != mapping.delimiter and header[0].count(other) >= len(source.required_columns) - 1:
                shown = "\\t" if other == "\t" else other
                return [f"{relative}: the header has one column {header[0][:80]!r}: the file looks "
                        f"'{shown}'-delimited, the mapping says '{mapping.delimiter}' (set sources.{source.name}"
                        f".delimiter in the mapping file)"]
    problems = []
    for name in missing:
        header_name = mapping.header_name(name)
        via = f" (the mapping reads it from header '{header_name}')" if header_name != name else ""
        problems.append(f"{relative}: missing required column '{name}'{via} {requires}")
    lowered = [name.strip().lower() for name in header]
    problems += [f"{relative}: column '{mapping.header_name(name)}' appears {lowered.count(mapping.header_name(name).strip().lower())} "
                 "times in the header"
                 for name in source.column_names if lowered.count(mapping.header_name(name).strip().lower()) > 1]
    return problems


def window_days(ds: str | date, history_days: int) -> list[str]:
    """The `history_days` dates up to and including ds, oldest first."""
    end = _parse_ds(ds)
    return [(end - timedelta(days=offset)).isoformat() for offset in range(history_days - 1, -1, -1)]


def _landing_files(partition: Path, patterns: tuple[str, ...]) -> list[Path]:
    found = {path for pattern in patterns for path in partition.glob(pattern)
             if path.is_file() and not path.name.startswith((".", "_"))}
    return sorted(found)


def plan_window(raw_root: Path, ds: str, history_days: int, mapping=None) -> dict:
    """Which landing files the run for `ds` reads, which sources are delivered, what the run can build.

    A source is delivered when it has a partition in the window (ds - history_days, ds]. A delivered
    source must have its ds partition (a late delivery stops the run rather than being mistaken for an
    absent source); a missing earlier increment day is a warning. At least one behaviour source
    (events, orders) must be delivered; the audience sources (impressions, campaigns, consent) together
    enable the CTR model and audiences. Raises RawContractError listing every file-level problem.
    """
    from precision_marketing.mapping import Mapping

    mapping = mapping or Mapping()
    raw_root = Path(raw_root)
    ds = _parse_ds(ds).isoformat()
    if history_days < 1:
        raise ValueError(f"history_days must be >= 1, got {history_days}")
    if not raw_root.is_dir():
        raise RawContractError(ds, [f"{raw_root}: raw root is not a directory"])
    window = window_days(ds, history_days)
    problems: list[str] = []
    warnings: list[str] = []
    sources: dict[str, dict] = {}
    for name, source in SOURCES.items():
        source_mapping = mapping.source(name)
        present = [day for day in window if (raw_root / source.partition_dir(day)).is_dir()]
        partitions: dict[str, list[str]] = {}
        sources[name] = {"delivered": bool(present), "partitions": partitions}
        if not present:
            continue
        for day in window if source.kind == INCREMENT else [ds]:
            partition = raw_root / source.partition_dir(day)
            relative_dir = source.partition_dir(day).as_posix()
            if not partition.is_dir():
                if day == ds:
                    problems.append(f"{relative_dir}/: missing partition (source '{name}' was delivered in the "
                                    f"window, so the run for ds={ds} needs its {source.kind} for that day)")
                else:
                    warnings.append(f"{relative_dir}/: missing partition (day {day} of the {history_days}-day "
                                    f"window of source '{name}' is skipped)")
                continue
            files = _landing_files(partition, source_mapping.files)
            if not files:
                problems.append(f"{relative_dir}/: no landing file matching {' or '.join(source_mapping.files)}")
                continue
            for path in files:
                problems += _header_problems(path, path.relative_to(raw_root).as_posix(), source, source_mapping)
            partitions[day] = [path.relative_to(raw_root).as_posix() for path in files]
    behaviour = [name for name in BEHAVIOUR_SOURCES if sources[name]["delivered"]]
    if not behaviour:
        problems.append(f"no behaviour source delivered: the run needs {' or '.join(BEHAVIOUR_SOURCES)} "
                        f"(raw/<source>/ds=YYYY-MM-DD/ for ds={ds} and the {history_days} days before)")
    if problems:
        raise RawContractError(ds, problems)
    missing_audience = [name for name in AUDIENCE_SOURCES if not sources[name]["delivered"]]
    notes = []
    if missing_audience:
        notes.append(f"audiences skipped: source(s) {', '.join(missing_audience)} not delivered in the window "
                     f"(CTR model and audiences need {', '.join(AUDIENCE_SOURCES)})")
    for name in ("users", "products"):
        if not sources[name]["delivered"]:
            notes.append(f"{name} not delivered: derived from the behaviour sources ({', '.join(behaviour)})")
    capabilities = {"recommendations": True, "segments": True, "audiences": not missing_audience}
    return {"ds": ds, "window": window, "sources": sources, "warnings": warnings, "notes": notes,
            "capabilities": capabilities}


def check_raw(raw_root: Path, ds: str, history_days: int, mapping=None) -> dict:
    """Check every landing file the run for `ds` reads; raise RawContractError listing all problems.

    Returns a report: files checked with their data-line counts, warnings, delivered sources, notes.
    """
    plan = plan_window(raw_root, ds, history_days, mapping)
    files = [{"source": name, "ds": day, "path": path, "rows": _count_data_lines(Path(raw_root) / path)}
             for name, source in plan["sources"].items()
             for day, paths in source["partitions"].items() for path in paths]
    return {"raw_root": str(raw_root), "ds": plan["ds"], "history_days": history_days,
            "files_checked": len(files), "files": files, "warnings": plan["warnings"],
            "delivered": [name for name, source in plan["sources"].items() if source["delivered"]],
            "capabilities": plan["capabilities"], "notes": plan["notes"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m expectations.raw_contract", description=__doc__.split("\n")[0])
    parser.add_argument("--raw-root", required=True, type=Path, help="folder holding <source>/ds=YYYY-MM-DD/")
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    parser.add_argument("--history-days", type=int, default=30, help="days of increments the run reads")
    parser.add_argument("--mapping", type=Path, default=None, help="mapping file of your exports (docs/data_contract.md)")
    args = parser.parse_args(argv)
    try:
        from precision_marketing.mapping import load_mapping

        report = check_raw(args.raw_root, args.ds, args.history_days, load_mapping(args.mapping))
    except (RawContractError, ValueError) as error:
        print(error, file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
