"""The real dbt project (dbt-duckdb) on a tiny hand-made raw zone.

The raw zone plants one defect per bad row (an exact duplicate, a NULL user_id, an unknown product_id,
a malformed timestamp, an invalid event_type, ...) beside clean rows whose features are computed by
hand below. The ingest step lands it (precision_marketing/ingest/land.py), then one `dbt build` (models, data
tests, unit tests) runs per module; the assertions read the DuckDB warehouse it wrote. Marts carry internal
keys: users 1, 2, 3 keep 1, 2, 3; products 10, 11, 12 become keys 1, 2, 3 (PRODUCT_KEY).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from precision_marketing.ingest.land import land_window
from precision_marketing.ingest.mapping import Mapping
from precision_marketing.orchestration.dbt import dbt_layers

PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"
DBT = Path(sys.executable).with_name("dbt")
DS = "2026-01-03"
DAY1, DAY2, DAY3 = "2026-01-01", "2026-01-02", "2026-01-03"
PRODUCT_KEY = {10: 1, 11: 2, 12: 3}  # keys follow the ids' numeric order

# <source>/ds=<day> -> CSV text. Comments name the defect a row carries; line numbers matter (source_row).
RAW_FILES = {
    ("users", DS): [
        "user_id,email,country,signup_date",
        '1," Ann@Example.com ",US,2025-12-01',
        "2,bob@example.com,GB,2025-12-20",
        "3,cy@example.com,DE,2025-12-24",
        ",nobody@example.com,US,2025-01-01",  # row 4: user_id is null
        "2,bob.again@example.com,GB,2025-12-20",  # row 5: duplicate key of row 2
        "4,dee@example.com,usa,2025-12-01",  # row 6: invalid country
        "5.5,eve@example.com,US,2025-12-01",  # row 7: malformed user_id (not an integer)
    ],
    ("products", DS): [
        "product_id,title,category,brand,price,warehouse_note",  # an extra column is ignored
        "10,Book A,books,acme,10.00,x",
        "11,Toy B,toys,fun,4.50,",
        "12,Book C,books,acme,20,",
        "13,Free thing,books,acme,0,",  # row 4: non-positive price
    ],
    ("campaigns", DS): [
        "campaign_id,name,target_category,channel,placement,start_date,end_date,audience_size",
        "c1,Books by email,books,email,email,2026-01-01,2026-01-31,100",
        "c2,Toys by push,toys,push,push,2026-01-03,2026-01-10,50",
        "c3,Old banner,books,onsite,homepage_banner,2025-12-01,2025-12-31,10",  # not active on ds
        "c4,Backwards,books,email,email,2026-01-10,2026-01-01,10",  # row 4: end before start
    ],
    ("consent", DS): [
        "user_id,channel,status,updated_ts",
        "1,email,opt_out,2026-01-01 09:00:00",
        "1,email,opt_in,2026-01-02 09:00:00",  # latest for (1, email): not suppressed
        "2,all,opt_out,2026-01-02 10:00:00",  # user 2 suppressed on every channel
        "3,push,opt_in,2026-01-01 10:00:00",
        "3,push,opt_out,2026-01-03 08:00:00",  # latest for (3, push): suppressed for push only
        "99,email,opt_out,2026-01-01 00:00:00",  # row 6: unknown user_id, an opt-out the ledger keeps for 99
        "3,push,opt_out,2026-01-03 08:00:00",  # row 7: duplicate of row 5
    ],
    ("events", "2025-12-04"): [  # ds - 30 days: just outside the window
        "event_id,user_id,product_id,event_type,event_ts,session_id",
        "e_old,1,10,purchase,2025-12-04 10:00:00,s_old",
    ],
    ("events", DAY1): [
        "event_id,user_id,product_id,event_type,event_ts,session_id",
        "e1,1,10,view,2026-01-01 10:00:00,s1",
        "e2,1,10,purchase,2026-01-01 10:05:00,s1",
        "e3,1,11,cart,2026-01-01 11:00:00,s2",
        "e3,1,11,cart,2026-01-01 11:00:00,s2",  # row 4: exact duplicate
        "e4,,10,view,2026-01-01 12:00:00,s3",  # row 5: user_id is null
    ],
    ("events", DAY2): [  # columns in another order: matched by name
        "session_id,event_ts,event_type,product_id,user_id,event_id",
        "s4,2026-01-02 09:00:00,view,999,2,e5",  # row 1: unknown product_id
        "s4,2026-01-02 09:01:00,view,12,2,e6",
        "s5,2026-13-45 25:61:00,view,12,1,e7",  # row 3: malformed event_ts
        "s5,2026-01-02 10:00:00,click,12,1,e8",  # row 4: invalid event_type
        "s6,2026-01-02 11:00:00,purchase,12,1,e9",
        "s6,2026-01-02 11:01:00,favourite,11,1,e10",
        "s7,2026-01-02 12:00:00",  # row 7: a short line
    ],
    ("events", DAY3): ["event_id,user_id,product_id,event_type,event_ts,session_id"],  # empty day
    ("events", "2026-01-04"): [  # after ds: not read
        "event_id,user_id,product_id,event_type,event_ts,session_id",
        "e_future,1,10,purchase,2026-01-04 10:00:00,s_future",
    ],
    ("impressions", DAY1): [
        "impression_id,user_id,campaign_id,placement,impression_ts,clicked",
        "i1,1,c1,email,2026-01-01 08:00:00,1",
        "i2,3,c1,email,2026-01-01 08:00:00,0",
        "i3,1,cX,email,2026-01-01 08:00:00,0",  # row 3: unknown campaign_id
    ],
    ("impressions", DAY2): [
        "impression_id,user_id,campaign_id,placement,impression_ts,clicked",
        "i4,2,c1,sidebar,2026-01-02 08:00:00,0",  # row 1: invalid placement
        "i5,1,c2,push,2026-01-02 09:00:00,2",  # row 2: invalid clicked
        "i1,1,c1,email,2026-01-01 08:00:00,1",  # row 3: duplicate of day 1's i1
    ],
    ("impressions", DAY3): ["impression_id,user_id,campaign_id,placement,impression_ts,clicked"],
}

EXPECTED_RECONCILIATION = {  # source: (raw, clean, quarantined, duplicates)
    "users": (7, 3, 3, 1),
    "products": (4, 3, 1, 0),
    "campaigns": (4, 3, 1, 0),
    "consent": (7, 5, 1, 1),
    "events": (12, 6, 5, 1),
    "orders": (0, 0, 0, 0),
    "impressions": (6, 2, 3, 1),
}


def write_raw_zone(root: Path) -> Path:
    for (source, day), lines in RAW_FILES.items():
        path = root / source / f"ds={day}" / f"{source}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return root


def run_dbt(
    command: str, work: Path, *args: str, check: bool = True, project: Path = PROJECT_DIR
) -> subprocess.CompletedProcess:
    """One dbt CLI invocation on the real project (or a copy of it); artifacts and logs stay in the test's work dir."""
    result = subprocess.run(
        [
            str(DBT),
            command,
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(PROJECT_DIR),
            "--target",
            "ci",
            "--target-path",
            str(work / "target"),
            "--log-path",
            str(work / "logs"),
            *args,
        ],
        env={
            **os.environ,
            "PM_DUCKDB_PATH": str(work / "warehouse.duckdb"),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "DO_NOT_TRACK": "1",
        },
        cwd=work,
        capture_output=True,
        text=True,
    )
    if check and result.returncode != 0:
        pytest.fail(f"dbt {command} failed ({result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}")
    return result


def run_vars(raw_dir: Path, ds: str = DS, history_days: int = 30, mapping: Mapping | None = None) -> str:
    """Land the raw zone for ds (as the check_raw step does) and return the dbt vars that read it."""
    mapping = mapping or Mapping()
    landed = raw_dir.parent / "landed"
    land_window(raw_dir, landed, ds, history_days, mapping)
    return json.dumps(
        {"ds": ds, "landed_dir": str(landed), "history_days": history_days, "id_types": mapping.as_dbt_var()}
    )


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    work = tmp_path_factory.mktemp("dbt_work")
    raw_dir = write_raw_zone(work / "raw")
    dbt_vars = run_vars(raw_dir)
    for layer in dbt_layers(PROJECT_DIR):  # as the night builds it: one `dbt build` per layer, in order
        run_dbt("build", work, "--selector", layer, "--vars", dbt_vars)
    return work


def query(work: Path, sql: str, params=None) -> list[tuple]:
    con = duckdb.connect(str(work / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def reconciliation(work: Path) -> dict[str, tuple]:
    rows = query(
        work, "select source, raw_rows, clean_rows, quarantined_rows, duplicate_rows from audit.data_reconciliation"
    )
    return {source: tuple(counts) for source, *counts in rows}


def test_reconciliation_counts_every_raw_row_once(warehouse):
    counts = reconciliation(warehouse)
    assert counts == EXPECTED_RECONCILIATION
    for source, (raw, clean, quarantined, duplicates) in counts.items():
        assert raw == clean + quarantined + duplicates, source
        assert query(warehouse, f"select count(*) from quarantine.quarantine_{source}")[0][0] == quarantined


@pytest.mark.parametrize(
    "source, day, source_row, reason",
    [
        ("events", DAY1, 5, "user_id is null"),
        ("events", DAY2, 1, "unknown product_id"),
        ("events", DAY2, 3, "malformed event_ts"),
        ("events", DAY2, 4, "invalid event_type"),
        ("users", DS, 4, "user_id is null"),
        ("users", DS, 6, "invalid country"),
        ("users", DS, 7, "malformed user_id"),
        ("events", DAY2, 7, "row has 2 fields, the header has 6"),
        ("products", DS, 4, "non-positive price"),
        ("campaigns", DS, 4, "end_date before start_date"),
        ("consent", DS, 6, "unknown user_id; user suppressed on email"),
        ("impressions", DAY1, 3, "unknown campaign_id"),
        ("impressions", DAY2, 1, "invalid placement"),
        ("impressions", DAY2, 2, "invalid clicked"),
    ],
)
def test_each_planted_bad_row_is_quarantined_with_its_reason(warehouse, source, day, source_row, reason):
    rows = query(
        warehouse,
        f"select source_file, reject_reason from quarantine.quarantine_{source} "
        "where source_row = ? and source_file like ?",
        [source_row, f"%/ds={day}/%"],
    )
    assert [r[1] for r in rows] == [reason]
    assert rows[0][0].endswith(f"{source}/ds={day}/{source}.csv")


def test_quarantine_keeps_the_raw_values_as_delivered(warehouse):
    rows = query(
        warehouse,
        "select event_id, user_id, event_ts, session_id from quarantine.quarantine_events "
        "where reject_reason = 'malformed event_ts'",
    )
    assert rows == [("e7", "1", "2026-13-45 25:61:00", "s5")]
    types = dict(
        query(
            warehouse,
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'quarantine' and table_name = 'quarantine_events'",
        )
    )
    assert types == {
        "event_id": "VARCHAR",
        "user_id": "VARCHAR",
        "product_id": "VARCHAR",
        "event_type": "VARCHAR",
        "event_ts": "VARCHAR",
        "session_id": "VARCHAR",
        "source_file": "VARCHAR",
        "source_row": "BIGINT",
        "reject_reason": "VARCHAR",
    }


def test_duplicates_are_counted_not_quarantined_and_first_row_wins(warehouse):
    assert query(warehouse, "select count(*) from quarantine.quarantine_events where event_id = 'e3'") == [(0,)]
    assert query(warehouse, "select source_row from staging.stg_events where event_id = 'e3'") == [(3,)]
    # user 2 is delivered twice: the first row (row 2) wins
    assert query(warehouse, "select email, source_row from staging.stg_users where user_id = 2") == [
        ("bob@example.com", 2)
    ]
    # i1 repeats on day 2: day 1's row wins
    assert query(warehouse, "select source_file from staging.stg_impressions where impression_id = 'i1'")[0][
        0
    ].endswith(f"ds={DAY1}/impressions.csv")


def test_window_reads_only_partitions_in_history(warehouse):
    event_ids = {r[0] for r in query(warehouse, "select event_id from staging.stg_events")}
    assert event_ids == {"e1", "e2", "e3", "e6", "e9", "e10"}


def test_user_features_match_hand_computed_values(warehouse):
    rows = query(
        warehouse,
        """
        select user_id, has_history, recency_days, frequency, monetary, n_views, n_carts, n_purchases,
               n_favourites, top_category, top_category_affinity
        from marts.user_features order by user_id""",
    )
    # user 1: e1 view(10) + e2 purchase(10, s1) on day 1, e3 cart(11); e9 purchase(12, s6) + e10 favourite(11)
    # on day 2 -> last event day 2, 2 purchase sessions, 10 + 20 spent; books 1+5+5 = 11, toys 3+2 = 5.
    # user 3 has no events: recency from signup 2025-12-24.
    assert rows == [
        (1, True, 1, 2, 30.0, 1, 1, 2, 1, "books", pytest.approx(11 / 16)),
        (2, True, 1, 0, 0.0, 1, 0, 0, 0, "books", 1.0),
        (3, False, 10, 0, 0.0, 0, 0, 0, 0, None, 0.0),
    ]
    email_hash = query(warehouse, "select email_sha256 from marts.user_features where user_id = 1")[0][0]
    assert email_hash == hashlib.sha256(b"ann@example.com").hexdigest()


def test_affinity_sums_to_one_per_user(warehouse):
    rows = query(
        warehouse, "select user_id, category, affinity from marts.user_category_affinity order by user_id, category"
    )
    assert rows == [(1, "books", pytest.approx(11 / 16)), (1, "toys", pytest.approx(5 / 16)), (2, "books", 1.0)]


def test_interaction_weights(warehouse):
    rows = query(
        warehouse,
        "select product_id, cast(event_date as varchar), weight, n_purchases "
        "from marts.interactions where user_id = 1 order by event_date, product_id",
    )
    assert rows == [
        (PRODUCT_KEY[10], DAY1, 6.0, 1),
        (PRODUCT_KEY[11], DAY1, 3.0, 0),
        (PRODUCT_KEY[11], DAY2, 2.0, 0),
        (PRODUCT_KEY[12], DAY2, 5.0, 1),
    ]


def test_item_features_and_popularity_rank(warehouse):
    rows = query(
        warehouse,
        "select product_id, n_views, n_carts, n_purchases, n_users, popularity_rank "
        "from marts.item_features order by product_id",
    )
    # total weight: product 10 = 6, 11 = 5, 12 = 6 (tie broken by the key)
    assert rows == [
        (PRODUCT_KEY[10], 1, 0, 1, 1, 1),
        (PRODUCT_KEY[11], 0, 1, 0, 1, 3),
        (PRODUCT_KEY[12], 1, 0, 1, 2, 2),
    ]


def test_suppressions_use_the_latest_consent(warehouse):
    assert query(warehouse, "select user_id, channel from marts.suppressions order by user_id") == [
        (2, "all"),
        (3, "push"),
    ]
    # user 99 is in no users file yet: their opt-out waits in the ledger, suppressing them the night they appear
    assert query(warehouse, "select status from marts.consent_ledger where user_id = '99' and channel = 'email'") == [
        ("opt_out",)
    ]


def test_ctr_score_has_active_campaigns_and_no_suppressed_users(warehouse):
    rows = query(
        warehouse, "select user_id, campaign_id, channel, affinity from marts.ctr_score order by user_id, campaign_id"
    )
    # active on ds: c1 (email), c2 (push); user 2 opted out of all, user 3 of push
    assert rows == [
        (1, "c1", "email", pytest.approx(11 / 16)),
        (1, "c2", "push", pytest.approx(5 / 16)),
        (3, "c1", "email", 0.0),
    ]


def test_ctr_train_has_one_row_per_clean_impression(warehouse):
    rows = query(
        warehouse,
        "select impression_id, user_id, campaign_id, target_category, affinity, "
        "recency_days, frequency, monetary, clicked from marts.ctr_train order by 1",
    )
    assert rows == [
        ("i1", 1, "c1", "books", pytest.approx(11 / 16), 1, 2, 30.0, 1),
        ("i2", 3, "c1", "books", 0.0, 10, 0, 0.0, 0),
    ]


def test_mart_columns_match_docs(warehouse):
    expected = {
        "user_features": [
            "user_id",
            "country",
            "signup_date",
            "email_sha256",
            "has_history",
            "recency_days",
            "frequency",
            "monetary",
            "n_views",
            "n_carts",
            "n_purchases",
            "n_favourites",
            "n_returns",
            "top_category",
            "top_category_affinity",
        ],
        "user_category_affinity": ["user_id", "category", "affinity"],
        "item_features": [
            "product_id",
            "title",
            "category",
            "brand",
            "price",
            "n_views",
            "n_carts",
            "n_purchases",
            "n_users",
            "popularity_rank",
        ],
        "interactions": ["user_id", "product_id", "event_date", "event_hour", "weight", "n_purchases"],
        "ctr_train": [
            "impression_id",
            "user_id",
            "campaign_id",
            "impression_date",
            "placement",
            "channel",
            "target_category",
            "affinity",
            "recency_days",
            "frequency",
            "monetary",
            "impression_hour",
            "category_recency_days",
            "clicked",
        ],
        "ctr_score": [
            "user_id",
            "campaign_id",
            "placement",
            "channel",
            "target_category",
            "affinity",
            "recency_days",
            "frequency",
            "monetary",
            "category_recency_days",
            "email_sha256",
        ],
        "campaigns": [
            "campaign_id",
            "name",
            "target_category",
            "channel",
            "placement",
            "start_date",
            "end_date",
            "audience_size",
        ],
        "suppressions": ["user_id", "channel"],
    }
    for table, columns in expected.items():
        actual = [
            r[0]
            for r in query(
                warehouse,
                "select column_name from information_schema.columns where "
                "table_schema = 'marts' and table_name = ? order by ordinal_position",
                [table],
            )
        ]
        assert actual == columns, table


def test_rebuilding_the_same_ds_replaces_tables(warehouse):
    before = {
        t: query(warehouse, f"select count(*) from marts.{t}")[0][0]
        for t in ("user_features", "interactions", "ctr_score", "ctr_train")
    }
    run_dbt("build", warehouse, "--vars", run_vars(warehouse / "raw"))
    assert reconciliation(warehouse) == EXPECTED_RECONCILIATION
    assert {t: query(warehouse, f"select count(*) from marts.{t}")[0][0] for t in before} == before


def test_a_later_ds_runs_on_the_same_warehouse(warehouse, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(warehouse, work, ignore=shutil.ignore_patterns("target", "logs"))
    next_ds = "2026-01-04"
    for source in ("users", "products", "campaigns", "consent"):
        shutil.copytree(work / "raw" / source / f"ds={DS}", work / "raw" / source / f"ds={next_ds}")
    empty_day = work / "raw" / "impressions" / f"ds={next_ds}" / "impressions.csv"
    empty_day.parent.mkdir(parents=True)
    empty_day.write_text(RAW_FILES[("impressions", DAY3)][0] + "\n")
    # a new product with a smaller id than the others: it gets the next key, the others keep theirs
    with (work / "raw" / "products" / f"ds={next_ds}" / "products.csv").open("a") as products:
        products.write("9,Early bird,books,acme,3.00,\n")
    keys_before = query(work, "select product_key, product_id, first_seen_ds from marts.product_keys order by 1")
    run_dbt("run", work, "--vars", run_vars(work / "raw", next_ds))
    # the window now includes day 4's e_future (user 1 buys product 10 for 10.00 in session s_future)
    assert reconciliation(work)["events"] == (13, 7, 5, 1)
    assert query(work, "select recency_days, frequency, monetary from marts.user_features where user_id = 1") == [
        (0, 3, 40.0)
    ]
    keys_after = query(
        work, "select product_key, product_id, cast(first_seen_ds as varchar) from marts.product_keys order by 1"
    )
    assert keys_after[:-1] == [(k, i, str(d)) for k, i, d in keys_before]
    assert keys_after[-1] == (4, "9", next_ds)


def test_missing_ds_var_fails_with_a_clear_message(warehouse):
    result = run_dbt("run", warehouse, "--select", "checked_users", check=False)
    assert result.returncode != 0
    assert "dbt var 'ds' is required" in result.stdout


def test_parse_works_without_vars_or_data(tmp_path):
    run_dbt("parse", tmp_path)
    assert (tmp_path / "target" / "manifest.json").exists()


def test_every_model_and_test_is_in_one_layer_and_models_read_only_their_own_or_earlier_layers(warehouse):
    """The layers of selectors.yml as dbt resolves them (the night runs `dbt build --selector <layer>` in order):
    a model or test in no layer would never run, in two would run twice, and a model (or test) that reads a later
    layer would read last night's table."""
    manifest = json.loads((warehouse / "target" / "manifest.json").read_text())
    nodes = {**manifest["nodes"], **manifest["unit_tests"]}
    runnable = {uid for uid, node in nodes.items() if node["resource_type"] in ("model", "test", "unit_test")}
    layer_of = {}
    for position, layer in enumerate(dbt_layers(PROJECT_DIR)):
        listed = run_dbt(
            "ls", warehouse, "--selector", layer, "--output", "json", "--output-keys", "unique_id", "--quiet"
        ).stdout
        for uid in (json.loads(line)["unique_id"] for line in listed.splitlines()):
            if uid in runnable:
                assert uid not in layer_of, f"{uid} is in two layers"
                layer_of[uid] = (position, layer)
    assert set(layer_of) == runnable, f"in no layer: {sorted(runnable - set(layer_of))}"
    for uid, (position, layer) in layer_of.items():
        for parent in nodes[uid]["depends_on"]["nodes"]:
            if parent in layer_of:
                assert layer_of[parent][0] <= position, f"{uid} ({layer}) reads {parent} ({layer_of[parent][1]})"
