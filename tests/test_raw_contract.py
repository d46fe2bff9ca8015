"""The raw-zone file check: every problem named with its file and column, raised once; optional sources;
the mapping's renames, patterns and delimiter; and the doc agrees with the code."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from expectations.raw_contract import check_raw
from precision_marketing.contract import INCREMENT, SNAPSHOT, SOURCES, RawContractError
from precision_marketing.datagen import generate
from precision_marketing.ingest.mapping import load_mapping

pytestmark = pytest.mark.fast  # make test-fast: no Spark session, Airflow run or browser

REPO = Path(__file__).resolve().parents[1]
DS, EARLIER = "2026-11-23", "2026-11-22"
HISTORY = 3


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "raw"
    generate(root, DS, users=40, items=20, days=HISTORY, campaigns=3, dirty_rate=0.0, seed=1)
    return root


def contract_failure(raw_root: Path, history_days: int = HISTORY) -> str:
    with pytest.raises(RawContractError) as failure:
        check_raw(raw_root, DS, history_days)
    return str(failure.value)


def rewrite_header(path: Path, transform) -> None:
    header, rest = path.read_text().split("\n", 1)
    path.write_text(",".join(transform(header.split(","))) + "\n" + rest)


def test_missing_required_column_names_the_file_and_the_column(raw):
    rewrite_header(
        raw / f"events/ds={EARLIER}/events.csv", lambda names: ["kind" if n == "event_type" else n for n in names]
    )
    message = contract_failure(raw)
    assert (
        f"events/ds={EARLIER}/events.csv: missing required column 'event_type' (source 'events' requires: "
        "user_id, product_id, event_type, event_ts)"
    ) in message


def test_all_problems_are_reported_in_one_error(raw):
    (raw / f"users/ds={DS}/users.csv").write_bytes(b"")
    rewrite_header(raw / f"campaigns/ds={DS}/campaigns.csv", lambda names: [n for n in names if n != "channel"])
    shutil.rmtree(raw / f"impressions/ds={DS}")
    with pytest.raises(RawContractError) as failure:
        check_raw(raw, DS, HISTORY)
    assert len(failure.value.problems) == 3
    message = str(failure.value)
    assert f"users/ds={DS}/users.csv: file is empty (0 bytes)" in message
    assert f"campaigns/ds={DS}/campaigns.csv: missing required column 'channel'" in message
    assert f"impressions/ds={DS}/: missing partition" in message


@pytest.mark.parametrize("source", ["users", "consent", "events"])
def test_missing_ds_partition_is_an_error(raw, source):
    shutil.rmtree(raw / source / f"ds={DS}")
    assert f"{source}/ds={DS}/: missing partition (source '{source}' was delivered in the window" in contract_failure(
        raw
    )


def test_missing_earlier_increment_day_is_only_a_warning(raw):
    shutil.rmtree(raw / f"events/ds={EARLIER}")
    report = check_raw(raw, DS, HISTORY)
    assert report["warnings"] == [
        f"events/ds={EARLIER}/: missing partition (day {EARLIER} of the "
        f"{HISTORY}-day window of source 'events' is skipped)"
    ]
    # A window reaching before the first delivered day warns for each absent day, it does not fail.
    assert len(check_raw(raw, DS, HISTORY + 2)["warnings"]) == 1 + 2 * 2


def test_zero_byte_file_is_an_error_but_a_header_only_file_is_an_empty_day(raw):
    events = raw / f"events/ds={DS}/events.csv"
    events.write_text(events.read_text().split("\n", 1)[0] + "\n")
    report = check_raw(raw, DS, HISTORY)
    assert {f["path"]: f["rows"] for f in report["files"]}[f"events/ds={DS}/events.csv"] == 0

    events.write_bytes(b"")
    assert f"events/ds={DS}/events.csv: file is empty (0 bytes)" in contract_failure(raw)


def test_extra_and_reordered_columns_are_accepted(raw):
    path = raw / f"impressions/ds={DS}/impressions.csv"
    frame = pd.read_csv(path, dtype=str)
    frame = frame[list(reversed(frame.columns))].assign(note="vendor extra")
    frame.to_csv(path, index=False)
    report = check_raw(raw, DS, HISTORY)
    rows = {f["path"]: f["rows"] for f in report["files"]}
    assert rows[f"impressions/ds={DS}/impressions.csv"] == len(frame)
    assert report["files_checked"] == 4 + 2 * HISTORY


def test_optional_column_may_be_absent_but_a_quoted_header_is_read_as_csv(raw):
    rewrite_header(raw / f"products/ds={DS}/products.csv", lambda names: [f'"{n}"' for n in names if n != "title"])
    report = check_raw(raw, DS, HISTORY)
    assert report["warnings"] == []


def test_bad_arguments_raise_a_clear_value_error(raw, tmp_path):
    with pytest.raises(ValueError, match="ds must be a date YYYY-MM-DD, got '23/11/2026'"):
        check_raw(raw, "23/11/2026", HISTORY)
    with pytest.raises(ValueError, match="history_days must be >= 1, got 0"):
        check_raw(raw, DS, 0)
    with pytest.raises(RawContractError, match="raw root is not a directory"):
        check_raw(tmp_path / "nowhere", DS, HISTORY)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "expectations.raw_contract", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_exits_1_with_a_readable_message_and_0_with_a_report(raw):
    ok = run_cli("--raw-root", str(raw), "--ds", DS, "--history-days", str(HISTORY))
    assert ok.returncode == 0, ok.stderr
    assert f'"path": "events/ds={DS}/events.csv"' in ok.stdout

    rewrite_header(raw / f"events/ds={DS}/events.csv", lambda names: [n for n in names if n != "product_id"])
    failed = run_cli("--raw-root", str(raw), "--ds", DS, "--history-days", str(HISTORY))
    assert failed.returncode == 1
    assert f"events/ds={DS}/events.csv: missing required column 'product_id'" in failed.stderr
    assert "Traceback" not in failed.stderr


def documented_contract() -> dict[str, dict]:
    """The source table of docs/data_contract.md: per source its kind and (column, required, allowed values)."""
    lines = (REPO / "docs" / "data_contract.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| source | kind | column |"))
    documented, current = {}, None
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        source, kind, column, type_text, required = cells[:5]
        if source:
            current = documented.setdefault(source, {"kind": kind, "columns": []})
        current["columns"].append((column, required == "yes", tuple(re.findall(r"`([^`]+)`", type_text))))
    return documented


def test_documented_table_agrees_with_sources():
    documented = documented_contract()
    assert list(documented) == list(SOURCES)
    for name, source in SOURCES.items():
        assert documented[name]["kind"] == {SNAPSHOT: "snapshot", INCREMENT: "daily increment"}[source.kind], name
        assert documented[name]["columns"] == [(c.name, c.required, c.allowed) for c in source.columns], name


# ---- optional sources and the mapping


def test_only_a_behaviour_source_is_required(raw):
    for source in ("users", "products", "impressions", "campaigns", "consent"):
        shutil.rmtree(raw / source)
    report = check_raw(raw, DS, HISTORY)
    assert report["delivered"] == ["events"]
    assert report["capabilities"] == {"recommendations": True, "segments": True, "audiences": False}
    assert report["notes"][0] == (
        "audiences skipped: source(s) impressions, campaigns, consent not delivered in the "
        "window (CTR model and audiences need impressions, campaigns, consent)"
    )
    assert "users not delivered: derived from the behaviour sources (events)" in report["notes"]

    shutil.rmtree(raw / "events")
    assert "no behaviour source delivered: the run needs events or orders" in contract_failure(raw)


def test_a_source_last_delivered_before_the_window_is_not_delivered(raw):
    # consent of the first day only, outside a 1-day window: not delivered, so audiences are skipped
    for day in (DS, EARLIER):
        shutil.rmtree(raw / "consent" / f"ds={day}")
    report = check_raw(raw, DS, 1)
    assert "consent" not in report["delivered"] and report["capabilities"]["audiences"] is False
    # ... but inside the window a missing ds partition is a late delivery, not an absent source
    assert f"consent/ds={DS}/: missing partition" in contract_failure(raw, HISTORY)


def test_mapping_renames_patterns_and_delimiter(raw, tmp_path):
    for events in raw.glob("events/ds=*/events.csv"):  # the shop's own export: names, file name, delimiter
        frame = pd.read_csv(events, dtype=str).rename(columns={"event_type": "Kind", "user_id": "VisitorID"})
        events.unlink()
        frame.to_csv(events.with_name("export_part1.txt"), sep=";", index=False)
    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text(
        "sources:\n  events:\n    files: ['export_*.txt', '*.csv']\n    delimiter: ';'\n"
        "    columns: {event_type: kind, user_id: visitorid}\n"
    )
    report = check_raw(raw, DS, HISTORY, load_mapping(mapping_file))
    assert f"events/ds={DS}/export_part1.txt" in [f["path"] for f in report["files"]]

    # the same file read as comma-separated: one column, and the message says which delimiter it looks like
    mapping_file.write_text("sources:\n  events:\n    files: 'export_*.txt'\n    columns: {event_type: kind}\n")
    message = contract_failure_with(raw, load_mapping(mapping_file))
    assert f"events/ds={DS}/export_part1.txt: the header has one column" in message
    assert "looks ';'-delimited, the mapping says ','" in message

    mapping_file.write_text("sources:\n  events:\n    files: 'export_*.txt'\n    delimiter: ';'\n")
    message = contract_failure_with(raw, load_mapping(mapping_file))
    assert f"events/ds={DS}/export_part1.txt: missing required column 'user_id'" in message


def contract_failure_with(raw_root: Path, mapping) -> str:
    with pytest.raises(RawContractError) as failure:
        check_raw(raw_root, DS, HISTORY, mapping)
    return str(failure.value)


def test_no_file_matching_the_pattern_is_named(raw, tmp_path):
    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text("sources:\n  users:\n    files: 'customers_*.csv'\n")
    assert f"users/ds={DS}/: no landing file matching customers_*.csv" in contract_failure_with(
        raw, load_mapping(mapping_file)
    )


def test_every_built_in_synonym_is_documented():
    from precision_marketing.contract import SYNONYMS

    doc = (REPO / "docs" / "data_contract.md").read_text()
    section = doc[doc.index("built-in synonyms") : doc.index("- **Timestamps**")]
    missing = [
        f"{column}: {value}"
        for column, synonyms in SYNONYMS.items()
        for value in synonyms
        if f"`{value}`" not in section
    ]
    assert missing == []


def test_a_mapping_glob_never_reads_outside_the_landing_partition(tmp_path):
    from precision_marketing.ingest.mapping import MappingError, load_mapping
    from precision_marketing.ingest.plan import _landing_files

    for pattern in ("../../*.csv", "/etc/*", "sub/../../x.csv"):
        path = tmp_path / "mapping.yaml"
        path.write_text(f"sources:\n  events:\n    files: ['{pattern}']\n")
        with pytest.raises(MappingError, match="must match files inside the landing partition"):
            load_mapping(path)
    partition = tmp_path / "raw" / "events" / "ds=2026-11-22"
    partition.mkdir(parents=True)
    (tmp_path / "secret.csv").write_text("password\n")
    (partition / "events.csv").write_text("event_id\n")
    (partition / "link.csv").symlink_to(tmp_path / "secret.csv")  # a symlink out of the partition is not read
    assert [p.name for p in _landing_files(partition, ("*.csv",))] == ["events.csv"]
