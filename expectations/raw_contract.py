"""The raw-zone data contract as code, and the header check that runs before anything is transformed.

`SOURCES` is the one place that says which landing files exist, which columns they must carry and
which values are allowed. docs/data_contract.md documents it (a test keeps the two in agreement),
the synthetic generator writes it, and dbt staging enforces the row-level rules.

`check_raw` checks files and headers only: every file the run for `ds` reads exists, is not empty and
has every required column. It collects all problems and raises one `RawContractError` naming each file.

    python -m expectations.raw_contract --raw-root lake/raw --ds 2026-11-23 --history-days 30
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

SNAPSHOT = "snapshot"
INCREMENT = "increment"

EVENT_TYPES = ("view", "cart", "purchase", "favourite")
PLACEMENTS = ("homepage_banner", "product_page", "search_results", "email", "push")
CAMPAIGN_CHANNELS = ("email", "push", "onsite")
CONSENT_CHANNELS = ("email", "push", "onsite", "all")
CONSENT_STATUSES = ("opt_in", "opt_out")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
DATE_FORMAT = "%Y-%m-%d"


class RawContractError(Exception):
    """The raw zone breaks the contract; `problems` lists every problem, one line each."""

    def __init__(self, ds: str, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"raw data contract failed for ds={ds} ({len(self.problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = True
    allowed: tuple[str, ...] = ()
    rule: str = ""


@dataclass(frozen=True)
class SourceContract:
    name: str
    kind: str  # SNAPSHOT or INCREMENT
    columns: tuple[Column, ...]
    key: tuple[str, ...] = field(default=())

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def required_columns(self) -> list[str]:
        return [column.name for column in self.columns if column.required]

    def relative_path(self, ds: str) -> Path:
        return Path(self.name) / f"ds={ds}" / f"{self.name}.csv"


SOURCES: dict[str, SourceContract] = {
    source.name: source
    for source in (
        SourceContract("users", SNAPSHOT, (
            Column("user_id", "integer", rule="unique, not null"),
            Column("email", "string", rule="not null"),
            Column("country", "string", rule="ISO-3166 alpha-2"),
            Column("signup_date", "date", rule="valid date"),
        ), key=("user_id",)),
        SourceContract("products", SNAPSHOT, (
            Column("product_id", "integer", rule="unique, not null"),
            Column("title", "string", required=False),
            Column("category", "string", rule="not null"),
            Column("brand", "string"),
            Column("price", "decimal", rule="> 0"),
        ), key=("product_id",)),
        SourceContract("events", INCREMENT, (
            Column("event_id", "string", rule="unique, not null"),
            Column("user_id", "integer", rule="known user"),
            Column("product_id", "integer", rule="known product"),
            Column("event_type", "string", allowed=EVENT_TYPES, rule="one of the values"),
            Column("event_ts", "timestamp", rule="valid timestamp"),
            Column("session_id", "string", rule="not null"),
        ), key=("event_id",)),
        SourceContract("impressions", INCREMENT, (
            Column("impression_id", "string", rule="unique, not null"),
            Column("user_id", "integer", rule="known user"),
            Column("campaign_id", "string", rule="known campaign"),
            Column("placement", "string", allowed=PLACEMENTS, rule="one of the values"),
            Column("impression_ts", "timestamp", rule="valid timestamp"),
            Column("clicked", "integer", allowed=("0", "1"), rule="one of the values"),
        ), key=("impression_id",)),
        SourceContract("campaigns", SNAPSHOT, (
            Column("campaign_id", "string", rule="unique, not null"),
            Column("name", "string"),
            Column("target_category", "string"),
            Column("channel", "string", allowed=CAMPAIGN_CHANNELS, rule="one of the values"),
            Column("placement", "string", allowed=PLACEMENTS, rule="one of the values"),
            Column("start_date", "date", rule="valid date"),
            Column("end_date", "date", rule=">= start_date"),
            Column("audience_size", "integer", rule="> 0"),
        ), key=("campaign_id",)),
        SourceContract("consent", SNAPSHOT, (
            Column("user_id", "integer", rule="known user"),
            Column("channel", "string", allowed=CONSENT_CHANNELS, rule="one of the values"),
            Column("status", "string", allowed=CONSENT_STATUSES, rule="one of the values"),
            Column("updated_ts", "timestamp", rule="valid; the latest row per (user_id, channel) wins"),
        ), key=("user_id", "channel", "updated_ts")),
    )
}


def _parse_ds(ds: str | date) -> date:
    if isinstance(ds, date):
        return ds
    try:
        return date.fromisoformat(ds)
    except ValueError:
        raise ValueError(f"ds must be a date YYYY-MM-DD, got {ds!r}") from None


def _count_data_lines(path: Path) -> int:
    """Lines after the header (a quoted field with a newline counts twice: cheap, not exact)."""
    newlines, last = 0, b"\n"
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    lines = newlines + (0 if last == b"\n" else 1)
    return max(lines - 1, 0)


def _header_problems(path: Path, relative: str, source: SourceContract) -> list[str]:
    requires = f"(source '{source.name}' requires: {', '.join(source.required_columns)})"
    if path.stat().st_size == 0:
        return [f"{relative}: file is empty (0 bytes); a day without rows must still have the header line"]
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except UnicodeDecodeError as error:
        return [f"{relative}: header is not valid UTF-8 ({error.reason} at byte {error.start})"]
    except csv.Error as error:
        return [f"{relative}: header line is not valid CSV ({error})"]
    if not any(name.strip() for name in header):
        return [f"{relative}: first line is empty, expected a header {requires}"]
    present = set(header)
    problems = [f"{relative}: missing required column '{name}' {requires}"
                for name in source.required_columns if name not in present]
    problems += [f"{relative}: column '{name}' appears {header.count(name)} times in the header"
                 for name in source.column_names if header.count(name) > 1]
    return problems


def window_days(ds: str | date, history_days: int) -> list[str]:
    """The `history_days` dates up to and including ds, oldest first."""
    end = _parse_ds(ds)
    return [(end - timedelta(days=offset)).isoformat() for offset in range(history_days - 1, -1, -1)]


def check_raw(raw_root: Path, ds: str, history_days: int) -> dict:
    """Check every landing file the run for `ds` reads; raise RawContractError listing all problems.

    Snapshots: the file of `ds`. Increments: the file of `ds` is required; a missing earlier day of
    the window is a warning. Returns a report: files checked with their data-line counts, warnings.
    """
    raw_root = Path(raw_root)
    ds = _parse_ds(ds).isoformat()
    if history_days < 1:
        raise ValueError(f"history_days must be >= 1, got {history_days}")
    if not raw_root.is_dir():
        raise RawContractError(ds, [f"{raw_root}: raw root is not a directory"])

    problems: list[str] = []
    warnings: list[str] = []
    files: list[dict] = []
    for source in SOURCES.values():
        days = window_days(ds, history_days) if source.kind == INCREMENT else [ds]
        for day in days:
            relative = source.relative_path(day).as_posix()
            path = raw_root / relative
            if not path.is_file():
                if day == ds:
                    problems.append(f"{relative}: missing file (the run for ds={ds} reads the "
                                    f"{source.kind} of source '{source.name}' for that day)")
                else:
                    warnings.append(f"{relative}: missing file (day {day} of the {history_days}-day "
                                    f"window of source '{source.name}' is skipped)")
                continue
            file_problems = _header_problems(path, relative, source)
            problems += file_problems
            files.append({"source": source.name, "ds": day, "path": relative,
                          "rows": None if file_problems else _count_data_lines(path)})
    if problems:
        raise RawContractError(ds, problems)
    return {"raw_root": str(raw_root), "ds": ds, "history_days": history_days,
            "files_checked": len(files), "files": files, "warnings": warnings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m expectations.raw_contract", description=__doc__.split("\n")[0])
    parser.add_argument("--raw-root", required=True, type=Path, help="folder holding <source>/ds=YYYY-MM-DD/")
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    parser.add_argument("--history-days", type=int, default=30, help="days of increments the run reads")
    args = parser.parse_args(argv)
    try:
        report = check_raw(args.raw_root, args.ds, args.history_days)
    except (RawContractError, ValueError) as error:
        print(error, file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
