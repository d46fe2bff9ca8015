"""The ingest step's fast path (ingest/columnar.py) writes exactly what the careful path writes, or steps aside.

Every landing file of the bad-input suite (tests/test_bad_input.py: 40-odd kinds of real-export trouble under a
mapping with renames, timestamps in another zone, epoch times and an exclusion) and of a generated window is
landed both ways; the files the fast path takes must give identical tables and counts, and the files it must
not vouch for (broken quoting, quoted newlines, short and long rows, undecodable bytes, whitespace-only lines)
must go to the careful path."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from precision_marketing.contract import SOURCES, erased_id_digest
from precision_marketing.datagen import generate
from precision_marketing.ingest.land import Erased, normalise_file
from precision_marketing.ingest.mapping import Mapping, load_mapping
from tests.test_bad_input import BASE, KINDS, MAPPING, write_zone

pytestmark = pytest.mark.fast  # make test-fast: no Spark session, Airflow run or browser

# files of the suite the fast path leaves to the careful path, and why
CAREFUL_ONLY = {
    "short_row": "a row with fewer fields than the header",
    "long_row": "a row with more fields",
    "consent_garbled_row": "a row with more fields",
    "unterminated_quote": "the quote runs over lines",
    "embedded_newline": "a quoted newline: a record over two lines",
    "broken_quoting": '"..."x: Python\'s strict reader rejects it, Arrow would read it some way',
    "undecodable_byte": "not UTF-8",
    "consent_undecodable": "not UTF-8",
    "latin1_byte_in_title": "not UTF-8",
    "blank_lines": "a whitespace-only line (blank for the careful path, a one-field row for Arrow)",
    "header_only": "no data row: nothing to gain",
}


def land_both_ways(path: Path, relative: str, source, mapping, out: Path, erased=None) -> tuple[dict, dict]:
    out.mkdir(parents=True, exist_ok=True)
    fast = normalise_file(path, relative, source, mapping, out / "fast.parquet", erased)
    careful = normalise_file(path, relative, source, mapping, out / "careful.parquet", erased, fast=False)
    return fast, careful


def assert_same_landing(out: Path, fast: dict, careful: dict, name: str) -> None:
    assert careful.pop("fast_files") == 0
    took_fast = fast.pop("fast_files")
    assert fast == careful, name
    assert pq.read_table(out / "fast.parquet").equals(pq.read_table(out / "careful.parquet")), name
    return took_fast


def test_every_bad_input_file_lands_the_same_both_ways(tmp_path):
    write_zone(tmp_path, BASE + KINDS)
    (tmp_path / "mapping.yaml").write_text(MAPPING)
    mapping = load_mapping(tmp_path / "mapping.yaml")
    took = {}
    for kind in BASE + KINDS:
        path = tmp_path / kind.file
        fast, careful = land_both_ways(
            path, kind.file, SOURCES[kind.source], mapping.source(kind.source), tmp_path / "out" / kind.name
        )
        took[kind.name] = assert_same_landing(tmp_path / "out" / kind.name, fast, careful, kind.name)
    # the rest take it, including BOMs, CRLF, empty lines, quoted delimiters, synonyms, exclusions, time zones
    assert {name for name, fast in took.items() if not fast} == set(CAREFUL_ONLY)
    assert sum(took.values()) == len(BASE + KINDS) - len(CAREFUL_ONLY) >= 50


def test_a_generated_window_lands_the_same_both_ways_and_erased_people_are_left_out(tmp_path):
    raw = tmp_path / "raw"
    generate(raw, "2026-11-22", users=300, items=60, days=3, seed=5)  # with the generator's dirty rows
    mapping = Mapping()
    files = sorted(raw.glob("*/ds=*/*.csv*"))
    assert {f.parts[-3] for f in files} == set(SOURCES) - {"orders"}  # the generator delivers no order lines
    with next(raw.glob("users/ds=*/*.csv")).open() as users:
        someone = next(csv.DictReader(users))["user_id"]
    erased = Erased(frozenset({erased_id_digest(someone)}))
    took, erased_rows = [], 0
    for path in files:
        source = path.parts[-3]
        out = tmp_path / "out" / source / path.parent.name
        fast, careful = land_both_ways(path, path.name, SOURCES[source], mapping.source(source), out, erased=erased)
        took.append(assert_same_landing(out, fast, careful, str(path)))
        erased_rows += fast["erased_rows"]
    assert erased_rows > 0  # the erased person was in the deliveries, and is gone both ways
    assert sum(took) >= len(files) / 2, f"{sum(took)} of {len(files)} generated files took the fast path"


def test_edge_values_land_the_same_both_ways(tmp_path):
    """Values at the edges of the fast path's vectorised rules: Python's whitespace (what strip() removes,
    beyond ASCII), and 'YYYY-MM-DD HH:MM:SS' times that are not real or not plain."""
    header = "event_id,user_id,product_id,event_type,event_ts,session_id"
    rows = [
        "e1,1,P1,view,2026-11-22 10:00:00,s",  # plain UTC
        "e2,1,P1,VIEW,2026-02-30 10:00:00,s",  # no 30 February: kept as delivered
        "e3,1,P1,view,2026-11-22 24:00:00,s",  # no hour 24
        "e4,1,P1,view, 2026-11-22 10:00:00 ,s",  # spaces around: the careful rule strips them
        "e5,1,P1,view,2026-11-22T10:00:00+01:00,s",  # ISO with an offset
        "e6,1,P1,view,0000-01-01 10:00:00,s",  # no year 0
        "e7,\x1f,P1,view,2026-11-22 10:00:00,\u3000",  # blank for Python's strip()
        "e8,1,P1,add to cart,2026-11-22 10:00:00,\u00a0x",  # a synonym; a non-blank value with a space
        "e9,1,P1,view,,  ",
    ]
    path = tmp_path / "events.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    fast, careful = land_both_ways(path, "events.csv", SOURCES["events"], Mapping().source("events"), tmp_path)
    assert assert_same_landing(tmp_path, fast, careful, "edge values")
    landed = pq.read_table(tmp_path / "fast.parquet").to_pylist()
    assert [r["event_ts"] for r in landed][:3] == ["2026-11-22T10:00:00Z", "2026-02-30 10:00:00", "2026-11-22 24:00:00"]
    assert landed[6]["user_id"] is None and landed[6]["session_id"] is None
