"""Which landing files the run for a day reads, and the file-level half of the raw contract: which sources
are delivered, that a delivered source has its ds partition, that every landing file is non-empty and has
every required column (after the mapping's renames). All problems are collected into one RawContractError."""

from __future__ import annotations

import zlib
from datetime import date, timedelta
from pathlib import Path

from precision_marketing.contract import (
    AUDIENCE_SOURCES,
    BEHAVIOUR_SOURCES,
    INCREMENT,
    SOURCES,
    RawContractError,
    SourceContract,
)
from precision_marketing.ingest.files import match_header, read_header
from precision_marketing.ingest.mapping import Mapping


def _parse_ds(ds: str | date) -> date:
    if isinstance(ds, date):
        return ds
    try:
        return date.fromisoformat(ds)
    except ValueError:
        raise ValueError(f"ds must be a date YYYY-MM-DD, got {ds!r}") from None


def _header_problems(path: Path, relative: str, source: SourceContract, mapping) -> list[str]:
    """File-level problems of one landing file: empty, no header, a required column missing (after the
    mapping's renames), a column twice, or a delimiter that is not the mapping's."""
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
                return [
                    f"{relative}: the header has one column {header[0][:80]!r}: the file looks "
                    f"'{shown}'-delimited, the mapping says '{mapping.delimiter}' (set sources.{source.name}"
                    f".delimiter in the mapping file)"
                ]
    problems = []
    for name in missing:
        header_name = mapping.header_name(name)
        via = f" (the mapping reads it from header '{header_name}')" if header_name != name else ""
        problems.append(f"{relative}: missing required column '{name}'{via} {requires}")
    lowered = [name.strip().lower() for name in header]
    problems += [
        f"{relative}: column '{mapping.header_name(name)}' appears {lowered.count(mapping.header_name(name).strip().lower())} "
        "times in the header"
        for name in source.column_names
        if lowered.count(mapping.header_name(name).strip().lower()) > 1
    ]
    return problems


def window_days(ds: str | date, history_days: int) -> list[str]:
    """The `history_days` dates up to and including ds, oldest first."""
    end = _parse_ds(ds)
    return [(end - timedelta(days=offset)).isoformat() for offset in range(history_days - 1, -1, -1)]


def _landing_files(partition: Path, patterns: tuple[str, ...]) -> list[Path]:
    """The files of a landing partition the patterns match; never one outside it (a symlink out included)."""
    inside = partition.resolve()
    found = {
        path
        for pattern in patterns
        for path in partition.glob(pattern)
        if path.is_file() and not path.name.startswith((".", "_")) and path.resolve().is_relative_to(inside)
    }
    return sorted(found)


def plan_window(raw_root: Path, ds: str, history_days: int, mapping=None) -> dict:
    """Which landing files the run for `ds` reads, which sources are delivered, what the run can build.

    A source is delivered when it has a partition in the window (ds - history_days, ds]. A delivered
    source must have its ds partition (a late delivery stops the run rather than being mistaken for an
    absent source); a missing earlier increment day is a warning. At least one behaviour source
    (events, orders) must be delivered; the audience sources (impressions, campaigns, consent) together
    enable the CTR model and audiences. Raises RawContractError listing every file-level problem.
    """
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
                    problems.append(
                        f"{relative_dir}/: missing partition (source '{name}' was delivered in the "
                        f"window, so the run for ds={ds} needs its {source.kind} for that day)"
                    )
                else:
                    warnings.append(
                        f"{relative_dir}/: missing partition (day {day} of the {history_days}-day "
                        f"window of source '{name}' is skipped)"
                    )
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
        problems.append(
            f"no behaviour source delivered: the run needs {' or '.join(BEHAVIOUR_SOURCES)} "
            f"(raw/<source>/ds=YYYY-MM-DD/ for ds={ds} and the {history_days} days before)"
        )
    if problems:
        raise RawContractError(ds, problems)
    missing_audience = [name for name in AUDIENCE_SOURCES if not sources[name]["delivered"]]
    notes = []
    if missing_audience:
        notes.append(
            f"audiences skipped: source(s) {', '.join(missing_audience)} not delivered in the window "
            f"(CTR model and audiences need {', '.join(AUDIENCE_SOURCES)})"
        )
    for name in ("users", "products"):
        if not sources[name]["delivered"]:
            notes.append(f"{name} not delivered: derived from the behaviour sources ({', '.join(behaviour)})")
    capabilities = {"recommendations": True, "segments": True, "audiences": not missing_audience}
    return {
        "ds": ds,
        "window": window,
        "sources": sources,
        "warnings": warnings,
        "notes": notes,
        "capabilities": capabilities,
    }
