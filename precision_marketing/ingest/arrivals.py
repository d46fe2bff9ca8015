"""What the run for `ds` waits for before it starts: the day's landing files of the sources it will read.

The rule is check_raw's (expectations/raw_contract.py): a source delivered on any earlier day of the window is
expected again for `ds`; a source never delivered is optional and not waited for. On a first night (no behaviour
source in the window yet) the run waits for any behaviour source (events or orders) of `ds`.

A source's day is ready when `raw/<source>/ds=D/` holds a file matching its mapping's patterns (default
`*.csv`, `*.csv.gz`; local folder or S3). A source that lands in several files, or writes them in place, can use
the `_READY` marker convention instead: list it under `landing.ready_marker_sources`, and its day counts as
ready only once `raw/<source>/ds=D/_READY` exists (the delivering job writes it last).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from fnmatch import fnmatch

from precision_marketing.storage import Storage

READY_MARKER = "_READY"


def _window_before(ds: str, history_days: int) -> set[str]:
    end = dt.date.fromisoformat(ds)
    return {(end - dt.timedelta(days=n)).isoformat() for n in range(1, history_days)}


def missing_landing(
    storage: Storage, ds: str, *, history_days: int, mapping=None, ready_marker_sources: Iterable[str] = ()
) -> list[str]:
    """What is not in the lake yet for `ds`, one readable entry per source (one listing per source)."""
    from precision_marketing.contract import BEHAVIOUR_SOURCES, SOURCES
    from precision_marketing.ingest.mapping import load_mapping

    markers = set(ready_marker_sources)
    unknown = markers - set(SOURCES)
    if unknown:
        raise ValueError(
            f"landing.ready_marker_sources names unknown source(s) {sorted(unknown)}; sources are {sorted(SOURCES)}"
        )
    mapping = mapping or load_mapping(None)
    earlier_days = _window_before(ds, history_days)
    delivered_before, ready = set(), set()
    for source in SOURCES:
        keys = storage.list_keys(f"raw/{source}/")
        days = {key.split("/")[2][3:] for key in keys if key.split("/")[2].startswith("ds=")}
        if days & earlier_days:
            delivered_before.add(source)
        today = [key.rsplit("/", 1)[-1] for key in keys if key.startswith(f"raw/{source}/ds={ds}/")]
        if source in markers:
            if READY_MARKER in today:
                ready.add(source)
        elif any(fnmatch(name, pattern) for name in today for pattern in mapping.source(source).files):
            ready.add(source)

    def wanted(source: str) -> str:
        if source in markers:
            return f"raw/{source}/ds={ds}/{READY_MARKER}"
        return f"raw/{source}/ds={ds}/ (a file matching {' or '.join(mapping.source(source).files)})"

    missing = [wanted(source) for source in sorted(delivered_before - ready)]
    if not (set(BEHAVIOUR_SOURCES) & (delivered_before | ready)):
        missing.append("a behaviour source: " + " or ".join(wanted(source) for source in BEHAVIOUR_SOURCES))
    return missing
