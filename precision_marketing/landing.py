"""What the run for `ds` waits for before it starts: the day's landing file of every raw source.

A source is ready when `raw/<source>/ds=D/<source>.csv` is in the lake (local folder or S3). A source
that lands in several files, or whose files are written in place, can use the `_READY` marker
convention instead: list it under `landing.ready_marker_sources` and its partition counts as ready
only once `raw/<source>/ds=D/_READY` exists (the delivering job writes it last).
"""
from __future__ import annotations

from typing import Iterable

from precision_marketing.storage import Storage

READY_MARKER = "_READY"


def expected_landing_keys(ds: str, ready_marker_sources: Iterable[str] = ()) -> dict[str, str]:
    """source -> the lake key whose presence means the source's day has landed."""
    from expectations.raw_contract import SOURCES

    markers = set(ready_marker_sources)
    unknown = markers - set(SOURCES)
    if unknown:
        raise ValueError(f"landing.ready_marker_sources names unknown source(s) {sorted(unknown)}; "
                         f"sources are {sorted(SOURCES)}")
    return {name: (f"raw/{name}/ds={ds}/{READY_MARKER}" if name in markers
                   else "raw/" + source.relative_path(ds).as_posix())
            for name, source in SOURCES.items()}


def missing_landing_keys(storage: Storage, ds: str, ready_marker_sources: Iterable[str] = ()) -> list[str]:
    """The expected keys that are not in the lake yet (one listing per source partition, no downloads)."""
    missing = []
    for source, key in expected_landing_keys(ds, ready_marker_sources).items():
        if key not in storage.list_keys(f"raw/{source}/ds={ds}/"):
            missing.append(key)
    return sorted(missing)
