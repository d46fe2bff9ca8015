"""Incremental staging (dbt_project/macros/incremental.sql) against a full refresh, on generated data.

One warehouse lives through the nights a shop has: a first night (with one day of the window still missing), a
normal night (one new day, one day leaving the window, an event repeated from an earlier day), a replayed day (a
landing file delivered again with other content), a late day (the missing day arrives) and a night whose users
snapshot no longer knows a user with history. After each incremental night the test checks that dbt typed only the
partitions that were new or changed, that raw = clean + quarantined + duplicates per partition and for the
window, and that every staging, quarantine, mart and audit relation equals what `--full-refresh` builds from the
same state (a copy of the warehouse, so the append-only key tables are the same).
"""

from __future__ import annotations

import csv
import io
import re
import shutil
from pathlib import Path

import duckdb
import pytest
from test_dbt_project import query, run_dbt

from precision_marketing.datagen import generate
from precision_marketing.ingest.land import land_window
from precision_marketing.ingest.mapping import Mapping

HISTORY_DAYS = 5
NIGHT1, NIGHT2 = "2026-03-09", "2026-03-10"
LATE_DAY, REPLAYED_DAY, LEAVING_DAY = "2026-03-07", "2026-03-08", "2026-03-05"
INCREMENTS = ("events", "orders", "impressions")
SCHEMAS = ("staging", "quarantine", "marts", "audit")


def landing_file(raw: Path, source: str, day: str) -> Path:
    return raw / source / f"ds={day}" / f"{source}.csv"


def read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


class Shop:
    """A raw zone, its landed zone and one warehouse that lives through several nights."""

    def __init__(self, root: Path):
        self.root, self.raw, self.landed, self.work = root, root / "raw", root / "landed", root / "work"
        self.work.mkdir(parents=True)

    def night(self, ds: str, *args: str, work: Path | None = None) -> Path:
        """Land the window of ds and run every dbt model on it; returns the work dir it ran in."""
        land_window(self.raw, self.landed, ds, HISTORY_DAYS, Mapping())
        work = work or self.work
        run_dbt(
            "run", work, "--vars", f"{{ds: '{ds}', landed_dir: '{self.landed}', history_days: {HISTORY_DAYS}}}", *args
        )
        return work

    def full_refresh(self, ds: str) -> Path:
        """The same night rebuilt with --full-refresh from a copy of the warehouse (same key tables)."""
        copy = self.root / "full_refresh"
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir()
        shutil.copy(self.work / "warehouse.duckdb", copy / "warehouse.duckdb")
        return self.night(ds, "--full-refresh", work=copy)


def typed_partitions(work: Path, source: str) -> list[str]:
    """The landing partitions the last run of typed_<source> read (its compiled SQL)."""
    compiled = (
        work / "target" / "compiled" / "precision_marketing" / "models" / "staging" / "typed" / f"typed_{source}.sql"
    )
    return sorted(set(re.findall(rf"/{source}/ds=(\d{{4}}-\d\d-\d\d)/\*\.parquet", compiled.read_text())))


def relations(con) -> list[str]:
    return [
        f"{schema}.{name}"
        for schema, name in con.execute(
            "select table_schema, table_name from information_schema.tables where table_schema in ? "
            "and table_name not like 'typed_%' order by 1, 2",
            [list(SCHEMAS)],
        ).fetchall()
    ]


def contents(work: Path) -> dict[str, list[tuple]]:
    """Every relation's rows, sorted, without landed_row_id (ids are assigned anew by a full refresh); floating-point
    values to 9 significant digits (a sum over rows stored in another order differs in the last bits)."""
    con = duckdb.connect(str(work / "warehouse.duckdb"), read_only=True)
    try:
        out = {}
        for relation in relations(con):
            schema, name = relation.split(".")
            columns = [
                f"round({c}, 9 - cast(ceil(log10(abs({c}) + 1)) as integer))"
                if kind in ("DOUBLE", "FLOAT")
                else f'"{c}"'
                for c, kind in con.execute(
                    "select column_name, data_type from information_schema.columns where table_schema = ? "
                    "and table_name = ? and column_name <> 'landed_row_id' order by ordinal_position",
                    [schema, name],
                ).fetchall()
            ]
            out[relation] = sorted(con.execute(f"select {', '.join(columns)} from {relation}").fetchall(), key=repr)
        return out
    finally:
        con.close()


def assert_same_as_full_refresh(shop: Shop, ds: str) -> dict[str, list[tuple]]:
    incremental = contents(shop.work)
    full = contents(shop.full_refresh(ds))
    assert set(incremental) == set(full)
    different = [relation for relation in incremental if incremental[relation] != full[relation]]
    assert different == [], f"incremental night differs from --full-refresh in {different}"
    assert len(incremental["marts.interactions"]) > 0 and len(incremental["staging.stg_events"]) > 0
    return incremental


def assert_reconciles(work: Path) -> None:
    con = duckdb.connect(str(work / "warehouse.duckdb"), read_only=True)
    try:
        for table in ("audit.data_reconciliation", "audit.data_reconciliation_partitions"):
            broken = con.execute(
                f"select * from {table} where raw_rows <> clean_rows + quarantined_rows + duplicate_rows"
            ).fetchall()
            assert broken == [], table
        sums = con.execute("""select r.source, r.raw_rows, sum(p.raw_rows), r.duplicate_rows, sum(p.duplicate_rows)
                              from audit.data_reconciliation r join audit.data_reconciliation_partitions p using (source)
                              group by all having r.raw_rows <> sum(p.raw_rows)
                                  or r.duplicate_rows <> sum(p.duplicate_rows)""").fetchall()
        assert sums == []
    finally:
        con.close()


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """Six days of generated data (users, products, campaigns, consent, events, impressions) up to NIGHT2, with
    the LATE_DAY increments held back and one event of REPLAYED_DAY repeated in NIGHT2's delivery."""
    shop = Shop(tmp_path_factory.mktemp("incremental"))
    generate(shop.raw, NIGHT2, users=300, items=60, days=6, campaigns=3, dirty_rate=0.05, seed=11)
    held_back = shop.root / "held_back"
    for source in INCREMENTS:
        partition = shop.raw / source / f"ds={LATE_DAY}"
        if partition.exists():
            shutil.move(partition, held_back / source / f"ds={LATE_DAY}")
    night2_snapshots = {}  # NIGHT2's delivery arrives on night 2
    for source in ("users", "products", "campaigns", "consent", *INCREMENTS):
        partition = shop.raw / source / f"ds={NIGHT2}"
        if partition.exists():
            night2_snapshots[source] = shop.root / "later" / source / f"ds={NIGHT2}"
            shutil.move(partition, night2_snapshots[source])
    shop.held_back, shop.later = held_back, night2_snapshots
    shop.night(NIGHT1)
    assert typed_partitions(shop.work, "events") == ["2026-03-05", "2026-03-06", "2026-03-08", "2026-03-09"]
    assert_reconciles(shop.work)
    # two clean events of REPLAYED_DAY: one NIGHT2's delivery repeats, one the replay will break
    clean_rows = [
        row
        for (row,) in query(
            shop.work,
            "select source_row from staging.stg_events where partition_date = ? order by source_row",
            [REPLAYED_DAY],
        )
    ]
    rows = read_csv(landing_file(shop.raw, "events", REPLAYED_DAY))
    shop.repeated, shop.broken_row = rows[clean_rows[0] - 1], clean_rows[1]
    night2 = shop.later["events"] / "events.csv"
    write_csv(night2, read_csv(night2) + [shop.repeated])
    return shop


@pytest.fixture(scope="module")
def normal_night(shop):
    for source, partition in shop.later.items():
        shutil.move(partition, shop.raw / source / f"ds={NIGHT2}")
    shop.night(NIGHT2)
    return shop


def test_a_normal_night_types_only_the_new_day_and_equals_a_full_refresh(normal_night):
    shop = normal_night
    assert typed_partitions(shop.work, "events") == [NIGHT2]
    assert typed_partitions(shop.work, "impressions") == [NIGHT2]
    assert_reconciles(shop.work)
    tables = assert_same_as_full_refresh(shop, NIGHT2)
    days = {row[0] for row in query(shop.work, "select distinct partition_date::varchar from staging.typed_events")}
    assert LEAVING_DAY not in days and NIGHT2 in days  # the day that left the window is gone from staging
    assert tables["audit.data_reconciliation_partitions"]


def test_a_duplicate_across_days_is_still_caught(normal_night):
    shop = normal_night
    event_id = shop.repeated["event_id"]
    kept = query(shop.work, "select partition_date::varchar from staging.stg_events where event_key = ?", [event_id])
    assert kept == [(REPLAYED_DAY,)]  # the earlier delivery wins; tonight's copy is a duplicate
    duplicates = query(
        shop.work,
        "select duplicate_rows from audit.data_reconciliation_partitions "
        "where source = 'events' and partition_date = ?",
        [NIGHT2],
    )
    assert duplicates[0][0] >= 1


def test_a_replayed_day_is_typed_again_and_equals_a_full_refresh(normal_night):
    shop = normal_night
    path = landing_file(shop.raw, "events", REPLAYED_DAY)
    rows = read_csv(path)
    broken = rows[shop.broken_row - 1]["event_id"]
    replayed = [
        row if row["event_id"] != broken else {**row, "event_type": "teleport"}  # a row now breaks a rule
        for row in rows
        if row["event_id"] != shop.repeated["event_id"]
    ]  # and the repeated one is withdrawn
    write_csv(path, replayed)
    shop.night(NIGHT2)
    assert typed_partitions(shop.work, "events") == [REPLAYED_DAY]
    assert typed_partitions(shop.work, "impressions") == []
    assert_reconciles(shop.work)
    assert_same_as_full_refresh(shop, NIGHT2)
    # tonight's copy of the withdrawn event is now the first delivered one
    kept = query(
        shop.work,
        "select partition_date::varchar from staging.stg_events where event_key = ?",
        [shop.repeated["event_id"]],
    )
    assert kept == [(NIGHT2,)]
    reasons = query(shop.work, "select reject_reason from quarantine.quarantine_events where event_id = ?", [broken])
    assert reasons == [("invalid event_type",)]


def test_a_late_day_is_typed_when_it_arrives_and_equals_a_full_refresh(normal_night):
    shop = normal_night
    before = query(shop.work, "select count(*) from staging.stg_events")[0][0]
    for source in INCREMENTS:
        held = shop.held_back / source / f"ds={LATE_DAY}"
        if held.exists():
            shutil.move(held, shop.raw / source / f"ds={LATE_DAY}")
    shop.night(NIGHT2)
    assert typed_partitions(shop.work, "events") == [LATE_DAY]
    assert_reconciles(shop.work)
    assert_same_as_full_refresh(shop, NIGHT2)
    assert query(shop.work, "select count(*) from staging.stg_events")[0][0] > before


def test_a_changed_snapshot_rechecks_the_whole_window_and_equals_a_full_refresh(normal_night):
    """No partition changed, but tonight's users snapshot drops a user with history: the user's older events are
    quarantined as unknown, exactly as a full refresh would."""
    shop = normal_night
    path = landing_file(shop.raw, "users", NIGHT2)
    users = read_csv(path)
    active = {row[0] for row in query(shop.work, "select distinct user_id from staging.stg_events")}
    dropped = next(row["user_id"] for row in users if row["user_id"] in active)
    write_csv(path, [row for row in users if row["user_id"] != dropped])
    shop.night(NIGHT2)
    assert typed_partitions(shop.work, "events") == []
    assert_reconciles(shop.work)
    assert_same_as_full_refresh(shop, NIGHT2)
    assert query(shop.work, "select count(*) from staging.stg_events where user_id = ?", [dropped]) == [(0,)]
    unknown = query(
        shop.work,
        "select count(*) from quarantine.quarantine_events where user_id = ? and reject_reason = 'unknown user_id'",
        [dropped],
    )
    assert unknown[0][0] > 0


@pytest.mark.parametrize("warehouse", ["kept", "lost"])
def test_a_short_consent_export_releases_nobody(tmp_path, warehouse):
    """The demo's incident: a night whose consent export was cut to every tenth row (and carries no opt-in that
    could release anyone) still suppresses everyone the night before suppressed: the ledger keeps their opt-outs.
    The same when the warehouse was lost in between: the ledger comes back from its nightly backup in the lake."""
    shop = Shop(tmp_path)
    generate(shop.raw, NIGHT2, users=300, items=60, days=6, campaigns=3, dirty_rate=0.0, seed=12)
    later = {}
    for source in ("users", "products", "campaigns", "consent", *INCREMENTS):
        partition = shop.raw / source / f"ds={NIGHT2}"
        if partition.exists():
            later[source] = shop.root / "later" / source / f"ds={NIGHT2}"
            shutil.move(partition, later[source])
    shop.night(NIGHT1)
    before = set(query(shop.work, "select user_id, channel from marts.suppressions"))
    assert len(before) > 10
    for source, partition in later.items():
        shutil.move(partition, shop.raw / source / f"ds={NIGHT2}")
    if warehouse == "lost":
        from precision_marketing.pipeline import RunPaths, carry_consent_ledger
        from precision_marketing.storage import LocalStorage

        backup = shop.root / "lake" / "features" / "consent_ledger" / f"ds={NIGHT1}" / "consent_ledger.parquet"
        backup.parent.mkdir(parents=True)
        con = duckdb.connect(str(shop.work / "warehouse.duckdb"))
        con.execute(f"copy marts.consent_ledger to '{backup}' (format parquet)")  # what export_features writes
        con.close()
        (shop.work / "warehouse.duckdb").unlink()
        restored = carry_consent_ledger(RunPaths(shop.work, NIGHT2), LocalStorage(shop.root / "lake"))
        assert restored["ledger"] == "restored" and restored["rows"] > 0
    consent = landing_file(shop.raw, "consent", NIGHT2)
    rows = read_csv(consent)
    write_csv(consent, [row for row in rows[::10] if row["status"] != "opt_in"] or rows[:1])
    shop.night(NIGHT2)
    after = set(query(shop.work, "select user_id, channel from marts.suppressions"))
    assert before <= after, f"{len(before - after)} opted-out (user, channel) released by a short export"
