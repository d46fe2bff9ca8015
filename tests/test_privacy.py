"""Erasure and retention (precision_marketing/privacy/) on small hand-made files: which rows name a person in each
zone's shape, what a rewritten landing file keeps, what ingest does with a forgotten person's later rows, and
which partitions a night's retention deletes. The whole command on a real night: tests/test_e2e.py."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys

import duckdb
import pytest

from precision_marketing.config import REPO_ROOT, load_config
from precision_marketing.contract import canonical_id, canonical_id_sql, erased_id_digest
from precision_marketing.ingest.land import Erased, land_window
from precision_marketing.ingest.mapping import Mapping
from precision_marketing.privacy.erasure import ErasureError, Person, forget, scrub_landing_file, scrub_parquet
from precision_marketing.privacy.retention import apply_retention
from precision_marketing.publish.partitions import publish_table, published_partitions
from precision_marketing.storage import LocalStorage

pytestmark = pytest.mark.fast  # make test-fast: no Spark session, Airflow run or browser

DS = "2026-03-10"


@pytest.mark.parametrize(
    "text, id_type, expected",
    [
        ("017850.0", "integer", "17850"),
        (" +17850 ", "integer", "17850"),
        ("-3", "integer", "-3"),
        ("1.5", "integer", None),
        ("abc", "integer", None),
        ("99999999999999999999", "integer", None),
        (" 85123A ", "string", "85123A"),
        ("", "string", None),
    ],
)
def test_an_id_is_canonical_the_same_way_in_python_sql_and_dbt(text, id_type, expected):
    assert canonical_id(text, id_type) == expected
    sql = canonical_id_sql(f"'{text}'", id_type)
    assert duckdb.sql(f"select {sql}").fetchone()[0] == expected
    # the rule is dbt's parse_id: the same pattern, so staging and erasure agree on who is who
    assert r"'^\+?(-?[0-9]+)(\.0+)?$'" in (REPO_ROOT / "dbt_project/macros/parse.sql").read_text()


def person(**extra) -> Person:
    return Person(ids={"17"}, id_type="integer", **extra)


def test_a_landing_file_loses_the_persons_records_and_keeps_every_other_byte(tmp_path):
    rows = [
        b"\xef\xbb\xbfevent_id,user_id,product_id,event_type,event_ts,session_id\r\n",
        b"e1,4,P1,view,2026-03-10 10:00:00,s1\r\n",
        b'e2,017,P1,"view\r\nwith a break",2026-03-10 10:00:00,s1\r\n',  # the person, a quoted line break
        b"e3,5,P2,view,2026-03-10 10:00:00,s2\r\n",
        b"\r\n",
        b"e4, 17.0 ,P2,cart,2026-03-10 10:00:01,s2\r\n",  # the person again, as a float with spaces
        b'e5,6,"P3,broken\r\n',  # a broken record of someone else stays, broken as it was
        b"e6,17,P4,view,2026-03-10 10:00:02,s3",  # the person, last line without a newline
    ]
    path = tmp_path / "events.csv"
    path.write_bytes(b"".join(rows))
    path.chmod(0o640)
    assert scrub_landing_file(path, "events", Mapping(), person()) == 3
    assert path.read_bytes() == b"".join(rows[i] for i in (0, 1, 3, 4, 6))
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    zipped = tmp_path / "events.csv.gz"
    zipped.write_bytes(gzip.compress(b"".join(rows)))
    assert scrub_landing_file(zipped, "events", Mapping(), person()) == 3
    assert gzip.decompress(zipped.read_bytes()) == b"".join(rows[i] for i in (0, 1, 3, 4, 6))
    assert scrub_landing_file(zipped, "events", Mapping(), person()) == 0  # nothing left: the file is untouched


def test_ingest_never_lands_a_forgotten_persons_later_rows_and_counts_them(tmp_path):
    raw = tmp_path / "raw"
    (raw / "users" / f"ds={DS}").mkdir(parents=True)
    (raw / "events" / f"ds={DS}").mkdir(parents=True)
    (raw / "users" / f"ds={DS}" / "users.csv").write_text(
        "user_id,signup_date,country,email\n17,2026-01-01,DE,gone@example.com\n4,2026-01-01,DE,kept@example.com\n"
    )
    (raw / "events" / f"ds={DS}" / "events.csv").write_text(
        "event_id,user_id,product_id,event_type,event_ts,session_id\n"
        "e1,0017,P1,view,2026-03-10 10:00:00,s1\ne2,4,P1,view,2026-03-10 10:00:00,s1\n"
    )
    erased = Erased(frozenset({erased_id_digest("17")}), "integer")
    status = land_window(raw, tmp_path / "landed", DS, 3, Mapping(), erased)
    counts = {s["source"]: (s["rows"], s["erased_rows"]) for s in status["sources"]}
    assert counts["users"] == (1, 1) and counts["events"] == (1, 1)
    landed = duckdb.sql(
        f"select user_id, email from read_parquet('{tmp_path}/landed/*/ds={DS}/*.parquet', union_by_name = true)"
    )
    assert sorted(landed.fetchall(), key=repr) == [("4", "kept@example.com"), ("4", None)]


def write_parquet(path, sql):
    path.parent.mkdir(parents=True, exist_ok=True)
    duckdb.sql(f"copy ({sql}) to '{path}' (format parquet)")
    return path


def test_rows_naming_the_person_are_found_by_id_key_email_or_its_hash(tmp_path):
    email_hash = hashlib.sha256(b"gone@example.com").hexdigest()
    who = person(keys={3}, emails={"gone@example.com"}, email_hashes={email_hash})
    features = write_parquet(
        tmp_path / "features.parquet",
        "select * from (values (3, 'x'), (17, 'key 17 is someone else'), (null, 'null key stays')) t(user_id, note)",
    )
    assert scrub_parquet(features, who, published=False) == 1
    assert duckdb.sql(f"select count(*) from '{features}' where user_id = 3").fetchone()[0] == 0
    exports = write_parquet(
        tmp_path / "exports.parquet",
        "select * from (values (17::bigint, [17, 4]), (4::bigint, [4]), (5::bigint, [17])) t(user_id, peer_user_ids)",
    )
    assert scrub_parquet(exports, who, published=True) == 2  # the id itself, and the id inside a list of ids
    quarantine = write_parquet(
        tmp_path / "quarantine.parquet",
        f"select * from (values ('bad id', ' GONE@example.com', null), ('8', null, '{email_hash}'), "
        "('9', 'kept@example.com', null)) t(user_id, email, email_sha256)",
    )
    assert scrub_parquet(quarantine, who, published=False) == 2  # by e-mail, by its hash; the rest stays
    assert duckdb.sql(f"select user_id from '{quarantine}'").fetchall() == [("9",)]


@pytest.fixture
def lake(tmp_path, monkeypatch):
    monkeypatch.setenv("PM__WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("PM__LAKE__LOCAL_ROOT", str(tmp_path / "lake"))
    return load_config(), LocalStorage(tmp_path / "lake")


def test_forget_names_what_it_refuses(lake):
    config, _ = lake
    with pytest.raises(ErasureError, match=r"'x17' is not a user id of the configured shape \(integer"):
        forget(config, ["x17"])
    with pytest.raises(ErasureError, match="ticket number"):
        forget(config, ["17"], reference="asked by gone@example.com")


def test_forget_waits_for_a_running_night_and_the_register_already_holds(lake, tmp_path):
    config, storage = lake
    warehouse = tmp_path / "work" / "warehouse.duckdb"
    warehouse.parent.mkdir(parents=True)
    duckdb.connect(str(warehouse)).close()
    night = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(warehouse)!r}); print(1, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        night.stdout.readline()
        with pytest.raises(ErasureError, match="a night is probably running"):
            forget(config, ["17"])
    finally:
        night.kill()
    register = json.loads(storage.get_bytes("privacy/forgotten_users.json"))
    assert register["sha256"] == [erased_id_digest("17")]


def test_the_audit_record_holds_no_personal_data(lake, tmp_path):
    config, storage = lake
    write_parquet(
        tmp_path / "work" / "publish" / "audiences" / f"ds={DS}" / "audiences.parquet",
        "select * from (values (17850::bigint, 'c1'), (4::bigint, 'c1')) t(user_id, campaign_id)",
    )
    publish_table(storage, "audiences", DS, tmp_path / "work" / "publish" / "audiences" / f"ds={DS}", "run-1")
    record = forget(config, ["017850"], reference="TICKET-42")
    assert record["rows_removed"] == {"lake:marts/audiences": 1, "work:publish/audiences": 1}
    assert published_partitions(storage, "audiences") == [DS]
    text = json.dumps(record) + "".join(storage.get_bytes(k).decode() for k in storage.list_keys("privacy/erasures/"))
    assert "17850" not in text and erased_id_digest("17850") not in text and "TICKET-42" in text


def test_retention_deletes_each_zones_expired_partitions(lake, tmp_path):
    config, storage = lake
    config["retention"]["days"].update(quarantine=2, marts=3, raw=None, work=30)
    for day in ("2026-03-01", "2026-03-08", "2026-03-09", DS):
        storage.put_bytes(f"quarantine/events/ds={day}/q.parquet", b"x")
        storage.put_bytes(f"marts/audiences/ds={day}/_SUCCESS", b"x")
        storage.put_bytes(f"marts/audiences/ds={day}/part-0.parquet", b"x")
        storage.put_bytes(f"raw/events/ds={day}/events.csv", b"x")
    old = tmp_path / "work" / "landed" / "_status"
    old.mkdir(parents=True)
    (old / "ds=2026-02-01.json").write_text("{}")
    (old / f"ds={DS}.json").write_text("{}")
    deleted = apply_retention(config, storage, DS)
    assert deleted == {"quarantine": 2, "features": 0, "marts": 1, "work": 1}
    assert [k.split("/")[2] for k in storage.list_keys("quarantine/")] == ["ds=2026-03-09", f"ds={DS}"]
    assert published_partitions(storage, "audiences") == ["2026-03-08", "2026-03-09", DS]
    assert storage.list_keys("marts/audiences/ds=2026-03-01/") == []
    assert len(storage.list_keys("raw/")) == 4  # null = kept forever
    assert [p.name for p in old.iterdir()] == [f"ds={DS}.json"]


def test_retention_may_not_cut_the_nightly_window():
    from precision_marketing.config import ConfigError

    with pytest.raises(ConfigError, match="retention.days.raw = 5 is shorter than dbt.history_days = 30"):
        load_config({"retention": {"days": {"raw": 5}}})


def test_forget_on_an_s3_lake_rewrites_the_objects_and_the_staged_copies(tmp_path, monkeypatch, s3_endpoint, s3_bucket):
    from precision_marketing.storage import storage_from_config

    monkeypatch.setenv("PM__LAKE__BACKEND", "s3")
    monkeypatch.setenv("PM__LAKE__S3__BUCKET", s3_bucket)
    monkeypatch.setenv("PM__LAKE__S3__ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("PM__WORK_DIR", str(tmp_path / "work"))
    config = load_config()
    lake = storage_from_config(config)
    users = b"user_id,email,country,signup_date\n17,gone@example.com,DE,2026-01-01\n4,kept@example.com,DE,2026-01-01\n"
    lake.put_bytes(f"raw/users/ds={DS}/users.csv", users)
    staged = tmp_path / "work" / "raw" / "users" / f"ds={DS}" / "users.csv"  # check_raw's local copy
    staged.parent.mkdir(parents=True)
    staged.write_bytes(users)
    quarantine = write_parquet(
        tmp_path / "q.parquet", "select * from (values ('17', 'bad'), ('4', 'bad')) t(user_id, reject_reason)"
    )
    lake.put_file(f"quarantine/users/ds={DS}/quarantine_users.parquet", quarantine)
    published = write_parquet(
        tmp_path / "out" / "audiences.parquet", "select * from (values (17::bigint), (4::bigint)) t(user_id)"
    )
    publish_table(lake, "audiences", DS, published.parent, "run-1")
    record = forget(config, ["17"])
    assert record["rows_removed"] == {
        "lake:marts/audiences": 1,
        "lake:quarantine/users": 1,
        "lake:raw/users": 1,
        "work:raw/users": 1,
    }
    kept = b"user_id,email,country,signup_date\n4,kept@example.com,DE,2026-01-01\n"
    assert lake.get_bytes(f"raw/users/ds={DS}/users.csv") == kept and staged.read_bytes() == kept
    con = duckdb.connect()
    lake.configure_duckdb(con)
    for key in (f"quarantine/users/ds={DS}/quarantine_users.parquet", *lake.list_keys(f"marts/audiences/ds={DS}/")):
        if key.endswith(".parquet"):
            assert con.execute(f"select list(user_id::varchar) from '{lake.uri(key)}'").fetchone()[0] == ["4"]


@pytest.mark.parametrize("keep_raw_landing", [False, True])
def test_landed_partitions_stay_consistent_with_their_landing_files(lake, tmp_path, keep_raw_landing):
    """After pm forget the next night lands nothing again (the fingerprints match the files as they now are) and
    the landed counts are the rows that are left, whether the landing files were rewritten or kept as delivered."""
    from precision_marketing.pipeline import landed_dir, local_raw_dir

    config, _ = lake
    config["forget"]["keep_raw_landing"] = keep_raw_landing
    raw, landed = local_raw_dir(config), landed_dir(config)
    events = raw / "events" / f"ds={DS}" / "events.csv"
    events.parent.mkdir(parents=True)
    delivered = (
        "event_id,user_id,product_id,event_type,event_ts,session_id\n"
        "e1,17,P1,view,2026-03-10 10:00:00,s1\ne2,4,P1,view,2026-03-10 10:00:00,s1\n"
    )
    events.write_text(delivered)
    land_window(raw, landed, DS, 1, Mapping())
    forget(config, ["17"])
    assert (events.read_text() == delivered) is keep_raw_landing
    status = land_window(raw, landed, DS, 1, Mapping())
    [events_status] = [s for s in status["sources"] if s["source"] == "events"]
    assert events_status["partitions_cached"] == 1 and events_status["rows"] == 1
    rows = duckdb.sql(f"select user_id from read_parquet('{landed}/events/ds={DS}/*.parquet')").fetchall()
    assert rows == [("4",)]
