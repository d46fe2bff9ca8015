"""End to end on real data: two weeks of the UCI Online Retail export (orders only: no users, products, campaigns,
consent or impressions) landed by `pm import online-retail`, read through config/mappings/online-retail.yaml,
through one real `airflow dags test` run. Recommendations and segments come out with the shop's own ids, the
audiences step is skipped (not failed), and every landed line is accounted for.

The expected figures are computed here from the landing files with plain DuckDB, independently of the ingest
step and the dbt models. Data: ../shared/data/online-retail (CC BY 4.0, Chen, Sain and Guo, UCI).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from precision_marketing.publish.catalog import open_catalog
from precision_marketing.publish.partitions import read_manifest
from precision_marketing.storage import LocalStorage

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
FIRST, DS, HISTORY = "2011-11-15", "2011-11-28", 14
TOP_K = 10
PM = str(Path(sys.executable).with_name("pm"))
NOT_PRODUCTS = (
    "POST",
    "DOT",
    "M",
    "m",
    "C2",
    "D",
    "S",
    "B",
    "BANK CHARGES",
    "AMAZONFEE",
    "CRUK",
    "PADS",
    "gift_0001_10",
    "gift_0001_20",
    "gift_0001_30",
    "gift_0001_40",
    "gift_0001_50",
)


def online_retail_export() -> Path | None:
    """PM_ONLINE_RETAIL, else shared/data/online-retail/ next to the checkout or one of its parents."""
    if os.environ.get("PM_ONLINE_RETAIL"):
        return Path(os.environ["PM_ONLINE_RETAIL"])
    for parent in REPO.parents:
        candidate = parent / "shared" / "data" / "online-retail" / "online_retail.csv.gz"
        if candidate.exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    export = online_retail_export()
    if export is None:
        pytest.skip("the Online Retail export is not here: set PM_ONLINE_RETAIL=/path/to/online_retail.csv.gz")
    state = tmp_path_factory.mktemp("online_retail")
    env = {
        **os.environ,
        "PM__WORK_DIR": str(state / "work"),
        "PM__LAKE__LOCAL_ROOT": str(state / "lake"),
        "PM__INGEST__MAPPING": str(REPO / "config" / "mappings" / "online-retail.yaml"),
        "PM__DBT__HISTORY_DAYS": str(HISTORY),
        "PM__SPARK__MASTER": "local[2]",
        "PM__SPARK__DRIVER_MEMORY": "2g",
        "PM__SPARK__SHUFFLE_PARTITIONS": "4",
    }
    imported = subprocess.run(
        [PM, "import", "online-retail", str(export), "--from", FIRST, "--to", DS],
        env=env,
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr[-3000:]
    result = subprocess.run(
        [PM, "run", "--ds", DS], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    (state / "run.log").write_text(result.stdout)
    assert result.returncode == 0, f"nightly run failed; log: {state / 'run.log'}\n" + result.stdout[-6000:]
    lake = LocalStorage(state / "lake")
    con = open_catalog(lake, ["recommendations", "audiences", "user_segments"])
    # the landing files as delivered, read without the platform's ingest step
    con.execute(f"""CREATE VIEW landed AS SELECT * FROM read_csv('{state}/lake/raw/orders/ds=*/orders.csv',
                    all_varchar = true, header = true)""")
    features = state / "lake" / "features"
    for table in ("user_features", "data_reconciliation"):
        con.execute(f"CREATE VIEW f_{table} AS SELECT * FROM read_parquet('{features}/{table}/ds={DS}/*.parquet')")
    yield {
        "lake": lake,
        "con": con,
        "state": state,
        "env": env,
        "import": json.loads(imported.stdout),
        "log": result.stdout,
    }
    con.close()


def scalar(run, sql):
    return run["con"].execute(sql).fetchone()[0]


def test_the_import_landed_one_partition_per_day(run):
    assert run["import"]["partitions_written"] == HISTORY
    assert scalar(run, "select count(*) from landed") == run["import"]["rows_written"] > 30_000


def test_every_landed_line_is_accounted_for(run):
    source, delivered, raw, clean, quarantined, duplicates = (
        run["con"]
        .execute(
            "select source, delivered, raw_rows, clean_rows, quarantined_rows, duplicate_rows from f_data_reconciliation "
            "where source = 'orders'"
        )
        .fetchone()
    )
    assert delivered and raw == scalar(run, "select count(*) from landed") == clean + quarantined + duplicates
    quarantine = run["state"] / "lake" / "quarantine" / "orders"
    reasons = dict(
        duckdb.sql(
            f"select reject_reason, count(*) from read_parquet('{quarantine}/*/*.parquet') group by 1"
        ).fetchall()
    )
    assert sum(reasons.values()) == quarantined
    # the mapping's exclusions (postage, fees, ...) come first, then guest checkouts (no CustomerID)
    excluded = sum(n for reason, n in reasons.items() if reason.startswith("excluded by the mapping"))
    assert excluded == scalar(run, f"select count(*) from landed where StockCode in {NOT_PRODUCTS}") > 0
    assert reasons["user_id is null"] == scalar(
        run,
        f"""select count(*) from landed where CustomerID is null
                                                        and StockCode not in {NOT_PRODUCTS}""",
    )
    assert duplicates > 0  # the export repeats some lines verbatim


def test_recommendations_carry_the_shops_ids(run):
    con = run["con"]
    types = dict(con.execute("select column_name, column_type from (describe recommendations)").fetchall())
    assert types["user_id"] == "BIGINT" and types["product_id"] == "VARCHAR"
    customers = {
        int(float(c))
        for (c,) in con.execute("select distinct CustomerID from landed where CustomerID is not null").fetchall()
    }
    recommended_users = {u for (u,) in con.execute("select distinct user_id from recommendations").fetchall()}
    assert recommended_users <= customers and len(recommended_users) > 900
    assert scalar(run, "select count(*) from recommendations") == len(recommended_users) * TOP_K
    assert (
        scalar(
            run,
            "select count(*) from recommendations r left join (select distinct StockCode from landed) l "
            "on l.StockCode = r.product_id where l.StockCode is null",
        )
        == 0
    )
    assert scalar(run, f"select count(*) from recommendations where product_id in {NOT_PRODUCTS}") == 0
    assert scalar(run, "select count(*) from recommendations where regexp_matches(product_id, '[A-Z]$')") > 0  # SKUs


def test_segments_cover_every_customer_with_a_clean_line(run):
    expected = scalar(
        run,
        f"""select count(distinct CustomerID) from landed
                              where CustomerID is not null and StockCode not in {NOT_PRODUCTS}
                              and try_cast(UnitPrice as double) > 0 and try_cast(Quantity as integer) <> 0""",
    )
    assert scalar(run, "select count(*) from user_segments") == expected
    assert scalar(run, "select count(distinct segment) from user_segments") == 5
    # cancellations (C... invoices, negative quantities) are returns, not purchases
    assert scalar(run, "select sum(n_returns) from f_user_features") == scalar(
        run,
        f"""select count(*) from (select distinct InvoiceNo, StockCode, Quantity, UnitPrice, InvoiceDate, CustomerID
                 from landed where InvoiceNo like 'C%' and CustomerID is not null
                 and StockCode not in {NOT_PRODUCTS} and try_cast(UnitPrice as double) > 0)""",
    )


def test_audiences_are_skipped_not_failed(run):
    lake = run["lake"]
    assert read_manifest(lake, "audiences", DS) is None
    run_id = read_manifest(lake, "recommendations", DS)["run_id"]
    states = subprocess.run(
        [PM, "airflow", "tasks", "states-for-dag-run", "nightly_marketing", run_id, "--output", "json"],
        env=run["env"],
        capture_output=True,
        text=True,
    )
    assert states.returncode == 0, states.stderr[-2000:]
    by_task = {t["task_id"]: t["state"] for t in json.loads(states.stdout[states.stdout.index("[") :])}
    assert by_task["train_ctr_and_build_audiences"] == "skipped"
    assert {
        by_task[t] for t in ("train_als", "segment_users", "validate_outputs", "publish", "refresh_catalog_and_report")
    } == {"success"}
    report = json.loads(lake.get_bytes(f"reports/ds={DS}/report.json"))
    assert report["published"]["audiences"] is None
    assert any(
        note.startswith("audiences skipped: source(s) impressions, campaigns, consent not delivered")
        for note in report["notes"]
    )
    # pm run's line for the step says it was skipped and why
    [ctr_line] = [line for line in run["log"].splitlines() if line.split()[:1] == ["train_ctr_and_build_audiences"]]
    assert ctr_line.split()[1] == "skipped" and "(audiences skipped: source(s) impressions" in ctr_line
