"""End to end: synthetic raw data -> one real `airflow dags test` run of the nightly DAG (dbt, GE, Spark,
scikit-learn, publish) on small data -> assertions on the published tables, read back through the SQL catalog."""

import csv
import datetime as dt
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from precision_marketing.contract import erased_id_digest
from precision_marketing.pipeline import PUBLISHED_TABLES
from precision_marketing.publish.catalog import open_catalog
from precision_marketing.publish.partitions import published_partitions, read_manifest
from precision_marketing.storage import LocalStorage

pytestmark = pytest.mark.e2e

DS = "2026-11-22"
TOP_K = 10
PM = str(Path(sys.executable).with_name("pm"))


def pm(args, env, log: Path):
    result = subprocess.run([PM, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log.write_text(result.stdout)
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    state = tmp_path_factory.mktemp("e2e")
    env = {
        **os.environ,
        "PM__WORK_DIR": str(state / "work"),
        "PM__LAKE__LOCAL_ROOT": str(state / "lake"),
        "PM__SPARK__MASTER": "local[2]",
        "PM__SPARK__SHUFFLE_PARTITIONS": "4",
        "PM__ALS__TUNING__MAX_FITS": "3",
    }  # a small tuning budget keeps the test short
    # 5x the default impression rate: enough impressions (~13k) for the CTR evaluation to mean something
    generated = pm(
        [
            "generate",
            "--ds",
            DS,
            "--users",
            "800",
            "--items",
            "200",
            "--days",
            "21",
            "--seed",
            "7",
            "--impression-rate",
            "0.2",
        ],
        env,
        state / "generate.log",
    )
    assert generated.returncode == 0, generated.stdout[-3000:]
    summary = json.loads(generated.stdout[generated.stdout.index("{") :])
    result = pm(["run", "--ds", DS], env, state / "run.log")
    assert result.returncode == 0, f"nightly run failed; log: {state / 'run.log'}\n" + result.stdout[-6000:]
    lake = LocalStorage(state / "lake")
    con = open_catalog(lake, ["recommendations", "audiences", "user_segments", "audience_exports", "campaign_lift"])
    features = state / "lake" / "features"
    for table in ("user_features", "interactions", "suppressions", "campaigns", "data_reconciliation"):
        con.execute(f"CREATE VIEW f_{table} AS SELECT * FROM read_parquet('{features}/{table}/ds={DS}/*.parquet')")
    first_run_id = read_manifest(lake, "recommendations", DS)["run_id"]
    yield {
        "lake": lake,
        "con": con,
        "state": state,
        "summary": summary,
        "log": result.stdout,
        "env": env,
        "first_run_id": first_run_id,
    }
    con.close()


def scalar(run, sql):
    return run["con"].execute(sql).fetchone()[0]


def test_every_user_gets_k_distinct_recommendations(run):
    n_users = scalar(run, "select count(*) from f_user_features")
    assert n_users > 700
    bad = (
        run["con"]
        .execute(
            """
        select u.user_id, count(r.product_id) n, count(distinct r.product_id) nd
        from f_user_features u left join recommendations r using (user_id)
        group by u.user_id having n <> ? or nd <> ?""",
            [TOP_K, TOP_K],
        )
        .fetchall()
    )
    assert bad == []
    assert scalar(run, "select count(*) from recommendations") == n_users * TOP_K
    sources = {row[0] for row in run["con"].execute("select distinct source from recommendations").fetchall()}
    als = json.loads(run["lake"].get_bytes(f"models/als/ds={DS}/metrics.json"))
    assert als["model"] in sources and "popularity" in sources  # personalised, and cold-start users' fallback
    assert sources <= {als["model"], "category_popularity", "popularity"}


def test_no_already_bought_items_are_recommended(run):
    assert scalar(run, "select count(*) from f_interactions where n_purchases > 0") > 0
    assert (
        scalar(
            run,
            """select count(*) from recommendations r join f_interactions i
                          on i.user_id = r.user_id and i.product_id = r.product_id and i.n_purchases > 0""",
        )
        == 0
    )


def test_models_beat_trivial_baselines(run):
    als = json.loads(run["lake"].get_bytes(f"models/als/ds={DS}/metrics.json"))
    ctr = json.loads(run["lake"].get_bytes(f"models/ctr/ds={DS}/metrics.json"))
    lists = als["holdout"]["lists"]
    assert als["n_eval_users"] > 100 and als["engine"] == "implicit"
    assert lists["served"]["all"]["precision"] > 1.2 * lists["popularity"]["all"]["precision"], als
    # against the strongest non-personalised ranking: no evidence the served lists are worse
    assert als["gate"]["passed"] and als["holdout"]["served_vs_baseline"]["high"] >= 0
    assert als["tuning"]["tuned"] and als["tuning"]["n_candidates"] >= 30
    assert ctr["auc"] > 0.6 and ctr["auc"] > ctr["baseline_auc"], ctr


def test_audiences_never_include_suppressed_users(run):
    assert scalar(run, "select count(*) from f_suppressions") > 0
    assert scalar(run, "select count(*) from audiences") > 0
    assert (
        scalar(
            run,
            """select count(*) from audiences a join f_suppressions s
                          on s.user_id = a.user_id and s.channel in (a.channel, 'all')""",
        )
        == 0
    )
    oversized = run["con"].execute("""select a.campaign_id from audiences a join f_campaigns c using (campaign_id)
                                      group by a.campaign_id, c.audience_size having count(*) > c.audience_size""")
    assert oversized.fetchall() == []
    assert scalar(run, "select count(*) from audiences where segment is null") == 0


def test_audiences_hold_out_a_control_group_that_is_never_exported(run):
    groups = dict(run["con"].execute("select experiment_group, count(*) from audiences group by 1").fetchall())
    assert set(groups) == {"treatment", "control"}
    share = groups["control"] / sum(groups.values())
    assert 0.05 < share < 0.15, groups  # the configured 10 %
    assert scalar(run, "select count(*) from audience_exports") == groups["treatment"]
    assert (
        scalar(
            run,
            """select count(*) from audience_exports e left join audiences a
                          on a.campaign_id = e.campaign_id and a.user_id = e.user_id
                          where a.experiment_group is distinct from 'treatment'""",
        )
        == 0
    )
    # frequency cap (2 per night) and the bid formula with the default value 1.0, floor 0, cap 5
    assert scalar(run, "select max(n) from (select count(*) n from audiences group by user_id)") <= 2
    assert scalar(run, "select max(abs(expected_value - p_click)) from audiences") < 1e-12
    assert (
        scalar(run, "select count(*) from audiences where bid_hint <> least(5.0, greatest(0.0, expected_value))") == 0
    )


def test_exports_carry_products_of_the_campaign_category_and_a_subject(run):
    features = run["state"] / "lake" / "features"
    assert scalar(run, "select count(*) from audience_exports where subject_line is null or subject_line = ''") == 0
    assert scalar(run, "select count(*) from audience_exports where len(top_product_ids) > 0") > 0
    off_category = scalar(
        run,
        f"""
        select count(*) from (select e.campaign_id, unnest(e.top_product_ids) as product_id from audience_exports e) x
        join f_campaigns c using (campaign_id)
        join read_parquet('{features}/item_features/ds={DS}/*.parquet') i using (product_id)
        where i.category <> c.target_category""",
    )
    assert off_category == 0
    fallback = (
        run["con"]
        .execute("select bool_and(len(top_product_ids) = 0) from audience_exports where subject_is_fallback")
        .fetchone()[0]
    )
    assert fallback in (True, None)  # the fallback is used only when the row has no product


def test_first_night_lift_says_not_enough_data(run):
    statuses = [r[0] for r in run["con"].execute("select distinct status from campaign_lift").fetchall()]
    assert statuses and all(s.startswith("not enough data") for s in statuses)
    assert scalar(run, "select count(*) from campaign_lift where abs_lift is not null") == 0


def test_ctr_calibration_is_measured_and_reported(run):
    ctr = json.loads(run["lake"].get_bytes(f"models/ctr/ds={DS}/metrics.json"))
    calibration = ctr["calibration"]
    assert calibration["method"] in ("none", "platt", "isotonic")
    assert set(calibration["candidates"]) == {"none", "platt", "isotonic"}
    assert 0 < ctr["brier"] < 0.25 and 0 <= ctr["ece"] < 0.1
    report = run["lake"].get_bytes(f"reports/ds={DS}/report.md").decode()
    assert "CTR calibration" in report and "Measured lift" in report
    assert run["lake"].get_bytes(f"reports/ds={DS}/calibration.svg").startswith(b"<svg")


def test_manifest_row_counts_match_the_files(run):
    lake = run["lake"]
    for table in ("recommendations", "audiences", "user_segments", "audience_exports", "campaign_lift"):
        assert published_partitions(lake, table) == [DS]
        manifest = read_manifest(lake, table, DS)
        files = [str(lake.path(f"marts/{table}/ds={DS}/{f['file']}")) for f in manifest["files"]]
        assert manifest["row_count"] == duckdb.sql(f"select count(*) from read_parquet({files})").fetchone()[0]
        assert lake.exists(f"marts/{table}/ds={DS}/_SUCCESS")


def test_raw_rows_reconcile_and_dirty_rows_are_quarantined_with_a_reason(run):
    rows = (
        run["con"]
        .execute("select source, raw_rows, clean_rows, quarantined_rows, duplicate_rows from f_data_reconciliation")
        .fetchall()
    )
    assert {r[0] for r in rows} == {"users", "products", "events", "orders", "impressions", "campaigns", "consent"}
    for source, raw, clean, quarantined, duplicates in rows:
        assert raw == clean + quarantined + duplicates, source
    events = {r[0]: r for r in rows}["events"]
    assert events[3] > 0 and events[4] > 0
    quarantine = run["state"] / "lake" / "quarantine" / "events" / f"ds={DS}"
    reasons = duckdb.sql(
        f"select reject_reason, count(*) from read_parquet('{quarantine}/*.parquet') group by all"
    ).fetchall()
    assert sum(n for _, n in reasons) == events[3]
    assert all(reason for reason, _ in reasons)


def test_lineage_joins_the_raw_files_to_every_published_table(run):
    """The night's OpenLineage events (the provider's listener for the Python and Spark steps, Cosmos for each dbt
    layer's models), from the default file transport, form one graph: the raw landing files reach every published table
    through check_raw, the dbt sources and models, the feature export, the training jobs and publish."""
    from collections import defaultdict

    work, lake = (run["state"] / "work").resolve(), (run["state"] / "lake").resolve()
    lines = (work / "lineage" / "openlineage.ndjson").read_text().splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    assert all(e["job"]["namespace"] == "precision_marketing" for e in events)
    graph, jobs = defaultdict(set), {}
    for event in (e for e in events if e["eventType"] == "COMPLETE"):
        inputs = [(d["namespace"], d["name"]) for d in event.get("inputs", [])]
        outputs = [(d["namespace"], d["name"]) for d in event.get("outputs", [])]
        jobs[event["job"]["name"]] = (inputs, outputs)
        for source in inputs:
            graph[source].update(outputs)
    # Cosmos reports the dbt models, in the warehouse's namespace, from the sources check_raw reports writing
    warehouse = f"duckdb://{work / 'warehouse.duckdb'}"
    assert (warehouse, "warehouse.landed.events") in jobs["nightly_marketing.check_raw"][1]
    inputs, outputs = jobs["nightly_marketing.dbt.staging"]  # the layer's models and their tests
    assert (warehouse, "warehouse.landed.events") in inputs and (warehouse, "warehouse.staging.typed_events") in outputs
    assert not any(name.startswith("warehouse.marts.") for _, name in outputs)
    assert (warehouse, "warehouse.marts.interactions") in jobs["nightly_marketing.dbt.marts"][1]
    assert (warehouse, "warehouse.marts.interactions") in jobs["nightly_marketing.export_features"][0]
    # the Spark job's step: what it read and wrote
    assert ("file", str(work / "features" / "interactions")) in jobs["nightly_marketing.train_als"][0]
    assert jobs["nightly_marketing.train_als"][1] == [("file", str(work / "models" / "als" / "recommendations"))]
    reached, frontier = set(), [("file", str(lake / "raw" / "events"))]
    while frontier:
        for target in graph[frontier.pop()] - reached:
            reached.add(target)
            frontier.append(target)
    missing = [table for table in PUBLISHED_TABLES if ("file", str(lake / "marts" / table)) not in reached]
    assert not missing, f"no lineage path from raw/events to {missing}"


def test_run_report_and_data_docs_are_published(run):
    lake = run["lake"]
    report = json.loads(lake.get_bytes(f"reports/ds={DS}/report.json"))
    assert report["published"]["recommendations"] == scalar(run, "select count(*) from recommendations")
    assert lake.exists(f"reports/ds={DS}/report.md")
    page = lake.get_bytes(f"reports/ds={DS}/report.html").decode()
    assert page.count("<svg") == 6  # trends, audiences, quarantine, time per task, calibration: all have data
    assert {t["task_id"] for t in report["task_seconds"]} >= {"check_raw", "train_als", "publish", "dbt.marts"}
    # each dbt layer's models and tests, as dbt reported them in the night's build
    assert [r["layer"] for r in report["dbt"]["layers"]] == ["staging", "marts", "audit"]
    assert all(r["models"] > 0 and r["tests"] > 0 for r in report["dbt"]["layers"]) and not report["dbt"]["not_passed"]
    assert "dbt: models and tests per layer" in page
    assert lake.exists(f"reports/ds={DS}/data_docs/marts/index.html")
    assert lake.exists(f"reports/ds={DS}/data_docs/outputs/index.html")
    assert b"CREATE OR REPLACE VIEW recommendations" in lake.get_bytes("catalog/views.sql")


def test_query_command_over_the_published_tables(run):
    env = {**os.environ, "PM__WORK_DIR": str(run["state"] / "work"), "PM__LAKE__LOCAL_ROOT": str(run["state"] / "lake")}
    out = subprocess.run(
        [PM, "query", "select user_id, count(*) n from recommendations group by 1 order by 1 limit 3"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert f"| {TOP_K}" in out.stdout and "(3 rows)" in out.stdout
    bad = subprocess.run([PM, "query", "select * from no_such_table"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "no_such_table" in bad.stderr and "Traceback" not in bad.stderr


# ---- pm forget: a person who was exported, recommended and segmented is erased; the next night runs without them


def traces(state: Path, user_id: str, email: str) -> list[str]:
    """Every place under the run's state (lake, work dir, warehouse) that still names the person: any column with
    column holding the id (the demo's keys equal its ids, so this covers keys), any e-mail column
    holding the address or its hash, any landing file row for the id, any file containing the address. Id columns
    are named user_id, *_user_id, user_key or *_user_ids (a count such as n_users is no id)."""
    email_hash = hashlib.sha256(email.lower().encode()).hexdigest()
    found = []

    def check(con, relation, where):
        columns = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
        ids = [c for c, *_ in columns if c.lower().endswith(("user_id", "user_key"))]
        lists = [c for c, *_ in columns if c.lower().endswith("user_ids")]
        tests = [rf"""regexp_replace(trim(cast("{c}" as varchar)), '^0+|\.0+$', '', 'g') = '{user_id}'""" for c in ids]
        tests += [f"""list_contains(list_transform("{c}", x -> cast(x as varchar)), '{user_id}')""" for c in lists]
        tests += [
            f"""lower(trim(cast("{c}" as varchar))) in ('{email.lower()}', '{email_hash}')"""
            for c, *_ in columns
            if "email" in c.lower()
        ]
        if tests and con.execute(f"SELECT count(*) FROM {relation} WHERE {' OR '.join(tests)}").fetchone()[0]:
            found.append(where)

    con = duckdb.connect()
    for path in sorted(state.rglob("*.parquet")):
        check(con, f"read_parquet('{path}', hive_partitioning = false)", str(path.relative_to(state)))
    warehouse = duckdb.connect(str(state / "work" / "warehouse.duckdb"), read_only=True)
    for schema, table in warehouse.execute(
        "select table_schema, table_name from information_schema.tables where table_type = 'BASE TABLE'"
    ).fetchall():
        check(warehouse, f'"{schema}"."{table}"', f"warehouse {schema}.{table}")
    warehouse.close()
    for path in sorted((state / "lake" / "raw").rglob("*.csv")):
        text = path.read_text()
        rows = list(csv.DictReader(io.StringIO(text)))
        if email.lower() in text.lower() or any(r.get("user_id", "").strip().lstrip("0") == user_id for r in rows):
            found.append(str(path.relative_to(state)))
    return found


@pytest.fixture(scope="module")
def forgotten(run):
    state = run["state"]
    con = run["con"]
    user_id = str(
        scalar(
            run,
            f"""select e.user_id from audience_exports e
                join read_parquet('{state}/lake/features/user_keys/ds={DS}/*.parquet') k
                  on k.user_key = e.user_id and k.user_id = cast(e.user_id as varchar)
                join recommendations r on r.user_id = e.user_id
                order by 1 limit 1""",
        )
    )
    users_file = state / "lake" / "raw" / "users" / f"ds={DS}" / "users.csv"
    delivered = next(r for r in csv.DictReader(users_file.open()) if r["user_id"] == user_id)
    assert traces(state, user_id, delivered["email"])  # the scan sees them before: it can fail
    assert con.execute(f"select count(*) from user_segments where user_id = {user_id}").fetchone()[0] == 1
    result = pm(["forget", "--user", user_id, "--reference", "DSR-2026-001"], run["env"], state / "forget.log")
    assert result.returncode == 0, result.stdout[-3000:]
    return {"user_id": user_id, "user": delivered, "record": json.loads(result.stdout), "users_file": users_file}


def test_a_forgotten_person_is_gone_from_every_zone_table_and_published_partition(run, forgotten):
    assert traces(run["state"], forgotten["user_id"], forgotten["user"]["email"]) == []
    record = forgotten["record"]
    assert record["people_found"] == 1 and record["reference"] == "DSR-2026-001"
    for place in (
        "lake:marts/audience_exports",
        "lake:marts/recommendations",
        "warehouse:marts.user_keys",
        "lake:raw/users",
        "work:landed/events",
    ):
        assert record["rows_removed"].get(place, 0) > 0, place
    audits = run["lake"].list_keys("privacy/erasures/")
    assert len(audits) == 1
    audit = json.loads(run["lake"].get_bytes(audits[0]))
    assert audit == record
    # the audit holds times, a reference, counts and place names: no id, e-mail, hash or register digest
    assert set(audit) == {
        "at",
        "reference",
        "people_asked",
        "people_found",
        "raw_landing",
        "register_size",
        "rows_removed",
    }
    assert all(isinstance(n, int) for n in audit["rows_removed"].values())
    text = json.dumps(audit)
    email = forgotten["user"]["email"]
    for secret in (email, hashlib.sha256(email.lower().encode()).hexdigest(), erased_id_digest(forgotten["user_id"])):
        assert secret not in text


def test_the_next_night_runs_and_keeps_a_forgotten_person_out_of_a_later_delivery(rerun, forgotten):
    state = rerun["state"]
    # only the file the shop delivered again still lists them (kept as delivered; ingest dropped the row)
    redelivered = str(forgotten["users_file"].relative_to(state))
    assert traces(state, forgotten["user_id"], forgotten["user"]["email"]) == [redelivered]
    status = json.loads((state / "work" / "landed" / "_status" / f"ds={DS}.json").read_text())
    assert {s["source"]: s["erased_rows"] for s in status["sources"]}["users"] == 1
    report = (state / "lake" / "reports" / f"ds={DS}" / "report.md").read_text()
    assert "rows of people forgotten by pm forget were in tonight's deliveries and were not landed: users 1" in report
    assert scalar(rerun, "select count(*) from recommendations") > 0


# ---- the same ds again: an empty day for the behaviour sources and a different K through the DAG params


@pytest.fixture(scope="module")
def rerun(run, forgotten):
    state = run["state"]
    # the shop's next users export still lists the forgotten person: ingest must drop them again
    with forgotten["users_file"].open("a") as handle:
        handle.write(",".join(forgotten["user"].values()) + "\n")
    for source in ("events", "impressions"):
        landing = state / "lake" / "raw" / source / f"ds={DS}" / f"{source}.csv"
        header = landing.read_text().splitlines()[0]
        landing.write_text(header + "\n")  # nothing happened on ds: a header-only file is a valid empty day
    env = {
        **os.environ,
        "PM__WORK_DIR": str(state / "work"),
        "PM__LAKE__LOCAL_ROOT": str(state / "lake"),
        "PM__SPARK__MASTER": "local[2]",
        "PM__SPARK__SHUFFLE_PARTITIONS": "4",
        "PM__ALS__TUNING__MAX_FITS": "3",
    }  # a small tuning budget keeps the test short
    result = pm(["run", "--ds", DS, "--conf", '{"top_k": 5}'], env, state / "rerun.log")
    assert result.returncode == 0, f"rerun failed; log: {state / 'rerun.log'}\n" + result.stdout[-6000:]
    con = open_catalog(run["lake"], ["recommendations", "audiences", "user_segments"])
    yield {**run, "con": con, "env": env}
    con.close()


def test_rerun_of_the_same_ds_replaces_the_partitions_whole(rerun):
    lake = rerun["lake"]
    manifest = read_manifest(lake, "recommendations", DS)
    assert manifest["run_id"] != rerun["first_run_id"]
    files = lake.list_keys(f"marts/recommendations/ds={DS}/")
    assert all(
        f.rsplit("/", 1)[1] in {"_SUCCESS", "_manifest.json"} | {e["file"] for e in manifest["files"]} for f in files
    )
    n_users = scalar(
        rerun, f"select count(*) from read_parquet('{rerun['state']}/lake/features/user_features/ds={DS}/*.parquet')"
    )
    assert scalar(rerun, "select count(*) from recommendations_history") == n_users * 5 == manifest["row_count"]
    assert scalar(rerun, "select max(rank) from recommendations") == 5


def test_airflow_keeps_every_run_with_true_durations(rerun):
    """`pm run` used to replace the earlier run of the same day in Airflow and show it lasting days."""
    import sqlite3

    db = sqlite3.connect(rerun["state"] / "airflow" / "airflow.db")
    runs = db.execute(
        "select run_id, conf, logical_date, start_date, end_date from dag_run "
        "where dag_id = 'nightly_marketing' order by start_date"
    ).fetchall()
    published_by = {read_manifest(rerun["lake"], "recommendations", DS)["run_id"], rerun["first_run_id"]}
    assert published_by <= {r[0] for r in runs} and len(runs) >= 2  # the first run's record is still there
    for run_id, conf, logical_date, start, end in runs:
        assert json.loads(conf)["ds"] == DS
        started, ended = (dt.datetime.fromisoformat(v) for v in (start, end))
        assert abs((started - dt.datetime.fromisoformat(logical_date)).total_seconds()) < 120, run_id
        assert (ended - started).total_seconds() < 3600, run_id
    # the published tables' Asset events carry the run's figures
    extras = [json.loads(e[0]) for e in db.execute("select extra from asset_event")]
    assert {e["table"] for e in extras} == set(PUBLISHED_TABLES)
    assert all(e["ds"] == DS and e["rows"] > 0 for e in extras)
    assert any("als_precision_at_k" in e and "ctr_auc" in e for e in extras)


def test_no_warning_noise_about_dbt_assets(run):
    log_file = Path(run["log"].splitlines()[0].split("full log: ")[1].rstrip(")"))
    assert "Asset (Dataset) URIs validation rules changed" not in log_file.read_text()


def test_empty_day_is_processed_and_reconciled(rerun):
    recon = dict(
        rerun["con"]
        .execute(
            f"select source, raw_rows from read_parquet('{rerun['state']}/lake/features/data_reconciliation/ds={DS}/*.parquet')"
        )
        .fetchall()
    )
    # every landing row of the window (ds is now header-only) is accounted for
    raw_events = sum(
        len(p.read_text().splitlines()) - 1
        for p in (rerun["state"] / "lake" / "raw" / "events").glob("ds=*/events.csv")
    )
    assert recon["events"] == raw_events
    assert scalar(rerun, "select count(*) from audiences") > 0


# ---- a broken landing file: the run stops at the contract check, naming file and column; last good tables stay


def test_missing_required_column_fails_clearly_and_keeps_last_good_tables(rerun):
    state, lake = rerun["state"], rerun["lake"]
    good = read_manifest(lake, "recommendations", DS)
    landing = state / "lake" / "raw" / "events" / f"ds={DS}" / "events.csv"
    landing.write_text(landing.read_text().replace("event_type", "kind", 1))
    result = pm(["run", "--ds", DS], rerun["env"], state / "broken.log")
    assert result.returncode != 0
    assert f"events/ds={DS}/events.csv: missing required column 'event_type'" in result.stdout
    assert "the nightly run for ds=2026-11-22 failed" in result.stdout and "failed: check_raw" in result.stdout
    assert read_manifest(lake, "recommendations", DS) == good
    con = open_catalog(lake, ["recommendations"])
    assert con.execute("select count(*) from recommendations").fetchone()[0] == good["row_count"]
    # its lineage: check_raw failed, read the raw files and claims no output
    lines = (state / "work" / "lineage" / "openlineage.ndjson").read_text().splitlines()
    failed = [event for event in map(json.loads, lines) if event["eventType"] == "FAIL"]
    [check_raw] = [event for event in failed if event["job"]["name"] == "nightly_marketing.check_raw"]
    assert check_raw["inputs"] and not check_raw["outputs"]


def test_run_output_is_one_line_per_task_with_the_log_in_a_file(run):
    lines = run["log"].splitlines()
    assert lines[0].startswith(f"nightly run for ds={DS} (full log: ")
    log_file = Path(lines[0].split("full log: ")[1].rstrip(")"))
    assert log_file.stat().st_size > 100_000  # the Airflow, dbt and Spark output went there
    task_lines = [line for line in lines if line.startswith("  ")]
    assert all(line.split()[1] == "success" for line in task_lines), task_lines
    assert {"train_als", "dbt.staging", "dbt.marts", "dbt.audit", "refresh_catalog_and_report"} <= {
        line.split()[0] for line in task_lines
    }
    assert len(lines) == len(task_lines) + 2 and lines[-1].startswith(f"nightly run for ds={DS} finished in")
