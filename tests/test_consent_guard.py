"""The consent guard blocks audiences on a consent export that looks cut, partial or shifted."""

import pytest

from expectations.consent_guard import consent_guard

pytestmark = pytest.mark.fast  # make test-fast: no Spark session, Airflow run or browser

LIMITS = {"max_drop_share": 0.5, "max_unknown_user_share": 0.05, "min_rows": 100}
LAST = {"ds": "2026-03-09", "consent_rows": 20_000, "opt_out_rows": 1_000, "unknown_user_rows": 3}


def night(rows, opt_outs, unknown=0):
    return {"ds": "2026-03-10", "consent_rows": rows, "opt_out_rows": opt_outs, "unknown_user_rows": unknown}


def test_a_normal_night_passes():
    verdict = consent_guard(night(20_400, 1_020, 2), LAST, **LIMITS)
    assert verdict["passed"] and verdict["reasons"] == []


def test_an_export_cut_to_a_tenth_is_blocked_naming_the_figures():
    verdict = consent_guard(night(2_000, 100), LAST, **LIMITS)
    assert not verdict["passed"]
    assert verdict["reasons"] == [
        "consent rows fell from 20,000 (ds=2026-03-09) to 2,000 (-90%, limit -50%): a cut or partial consent export?",
        "opt-outs fell from 1,000 (ds=2026-03-09) to 100 (-90%, limit -50%): a cut or partial consent export?",
    ]


def test_a_header_only_export_is_blocked():
    assert not consent_guard(night(0, 0), LAST, **LIMITS)["passed"]


def test_rows_that_name_nobody_block_above_their_share():
    verdict = consent_guard(night(20_000, 1_000, unknown=1_500), LAST, **LIMITS)
    assert not verdict["passed"] and "1,500 of 20,000 consent rows (7.5%) name no known user" in verdict["reasons"][0]


def test_small_nights_and_first_nights_are_not_judged_on_shares():
    assert consent_guard(night(40, 2, unknown=10), None, **LIMITS)["passed"]  # 49 rows are noise, not evidence
    small_last = {**LAST, "consent_rows": 60, "opt_out_rows": 5}
    assert consent_guard(night(10, 0), small_last, **LIMITS)["passed"]
    assert consent_guard(night(20_000, 900), None, **LIMITS)["passed"]  # nothing to compare with yet


# ---- the ledger outlives the warehouse


def test_a_lost_ledger_blocks_audiences_naming_the_way_back():
    verdict = consent_guard(night(20_400, 1_020), LAST, **LIMITS, ledger_lost=True)
    assert not verdict["passed"] and verdict["reasons"][0].startswith("the consent ledger was lost")


def test_a_new_warehouse_starts_from_the_newest_ledger_backup_in_the_lake(tmp_path):
    import duckdb

    from precision_marketing.pipeline import RunPaths, carry_consent_ledger
    from precision_marketing.storage import LocalStorage

    lake = LocalStorage(tmp_path / "lake")
    paths = RunPaths(tmp_path / "work", "2026-03-10")
    assert carry_consent_ledger(paths, lake) == {"ledger": "new"}  # a first night: nothing to restore
    for day, status in (("2026-03-08", "opt_in"), ("2026-03-09", "opt_out"), ("2026-03-10", "opt_in")):
        backup = tmp_path / "lake" / "features" / "consent_ledger" / f"ds={day}" / "consent_ledger.parquet"
        backup.parent.mkdir(parents=True, exist_ok=True)
        duckdb.sql(
            f"copy (select '17' as user_id, 'email' as channel, '{status}' as status, "
            f"timestamp '{day} 10:00:00' as updated_ts, date '{day}' as stated_on) to '{backup}' (format parquet)"
        )
    paths.warehouse.unlink()  # the work dir was lost
    state = carry_consent_ledger(paths, lake)
    # the newest backup before tonight: a rerun of a night never starts from its own earlier output
    assert state == {
        "ledger": "restored",
        "from": "features/consent_ledger/ds=2026-03-09/consent_ledger.parquet",
        "rows": 1,
    }
    con = duckdb.connect(str(paths.warehouse))
    assert con.execute("select status from marts.consent_ledger").fetchall() == [("opt_out",)]
    con.close()
    assert carry_consent_ledger(paths, lake) == {"ledger": "kept"}
