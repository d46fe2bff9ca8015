"""Storage backends, atomic publish and the SQL catalog, against a local folder and a real S3 API (moto server)."""

import json
import os

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from precision_marketing.publish.catalog import QueryError, run_query, view_statements
from precision_marketing.publish.partitions import (
    PublishError,
    partition_prefix,
    publish_table,
    published_partitions,
    read_manifest,
)
from precision_marketing.storage import LocalStorage, S3Storage


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "lake")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Storage(bucket=bucket, prefix="nightly", endpoint_url=request.getfixturevalue("s3_endpoint"))


def write_recs(folder, user_ids, product_offset=0, files=2):
    """A Spark-like output folder: part files plus the _SUCCESS and .crc files Spark leaves behind."""
    folder.mkdir(parents=True, exist_ok=True)
    chunks = [user_ids[i::files] for i in range(files)]
    for index, chunk in enumerate(chunks):
        table = pa.table(
            {
                "user_id": pa.array(chunk, pa.int64()),
                "rank": pa.array([1] * len(chunk), pa.int32()),
                "product_id": pa.array([u + product_offset for u in chunk], pa.int64()),
            }
        )
        pq.write_table(table, folder / f"part-{index:05d}-abc.snappy.parquet")
        (folder / f".part-{index:05d}-abc.snappy.parquet.crc").write_bytes(b"crc")
    (folder / "_SUCCESS").write_bytes(b"")
    return folder


def test_publish_then_query(storage, tmp_path):
    src = write_recs(tmp_path / "out", list(range(1, 11)))
    manifest = publish_table(storage, "recommendations", "2026-11-22", src, run_id="manual__1")

    prefix = partition_prefix("recommendations", "2026-11-22")
    keys = storage.list_keys(prefix)
    parts = [k for k in keys if k.endswith(".parquet")]
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == sorted(
        ["_SUCCESS", "_manifest.json", "part-manual__1-00000.parquet", "part-manual__1-00001.parquet"]
    )
    assert manifest["row_count"] == 10 == sum(f["rows"] for f in manifest["files"])
    assert [c["name"] for c in manifest["schema"]] == ["user_id", "rank", "product_id"]
    assert len(parts) == 2

    columns, rows, _ = run_query(
        storage, ["recommendations"], "select count(*), sum(product_id), min(ds)::varchar from recommendations"
    )
    assert rows == [(10, sum(range(1, 11)), "2026-11-22")]


def test_rerun_same_ds_replaces_the_partition_whole(storage, tmp_path):
    publish_table(storage, "recommendations", "2026-11-22", write_recs(tmp_path / "a", list(range(1, 11))), "run_a")
    publish_table(
        storage,
        "recommendations",
        "2026-11-22",
        write_recs(tmp_path / "b", list(range(1, 6)), product_offset=100, files=1),
        "run_b",
    )

    keys = storage.list_keys(partition_prefix("recommendations", "2026-11-22"))
    assert not any("run_a" in k for k in keys), keys
    _, rows, _ = run_query(storage, ["recommendations"], "select count(*), min(product_id) from recommendations")
    assert rows == [(5, 101)]
    assert read_manifest(storage, "recommendations", "2026-11-22")["run_id"] == "run_b"


class FailingAt:
    """A storage whose write of one key fails: a task killed mid-publish, at a chosen step."""

    def __init__(self, inner, failing_suffix):
        self._inner, self._suffix = inner, failing_suffix

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def put_bytes(self, key, data):
        if key.endswith(self._suffix):
            raise ConnectionError(f"connection lost while writing {key}")
        self._inner.put_bytes(key, data)


def test_killed_mid_publish_keeps_last_good_partition_and_rerun_cleans_up(storage, tmp_path):
    publish_table(storage, "recommendations", "2026-11-22", write_recs(tmp_path / "a", list(range(1, 11))), "run_a")

    with pytest.raises(ConnectionError):
        publish_table(
            FailingAt(storage, "_manifest.json"),
            "recommendations",
            "2026-11-22",
            write_recs(tmp_path / "b", list(range(1, 4)), product_offset=100),
            "run_b",
        )

    # the new parts were uploaded, but readers still see exactly the old partition
    assert any("run_b" in k for k in storage.list_keys(partition_prefix("recommendations", "2026-11-22")))
    _, rows, _ = run_query(storage, ["recommendations"], "select count(*), max(product_id) from recommendations")
    assert rows == [(10, 10)]

    publish_table(
        storage,
        "recommendations",
        "2026-11-22",
        write_recs(tmp_path / "c", list(range(1, 4)), product_offset=200),
        "run_c",
    )
    keys = storage.list_keys(partition_prefix("recommendations", "2026-11-22"))
    assert not any(("run_a" in k or "run_b" in k) for k in keys), keys
    _, rows, _ = run_query(storage, ["recommendations"], "select count(*), min(product_id) from recommendations")
    assert rows == [(3, 201)]


def test_first_publish_killed_before_commit_is_invisible(storage, tmp_path):
    with pytest.raises(ConnectionError):
        publish_table(
            FailingAt(storage, "_SUCCESS"), "audiences", "2026-11-22", write_recs(tmp_path / "a", [1, 2, 3]), "run_a"
        )
    assert published_partitions(storage, "audiences") == []
    assert read_manifest(storage, "audiences", "2026-11-22") is None
    assert view_statements(storage, ["audiences"]) == []


def test_history_view_has_every_committed_ds_and_latest_view_the_newest(storage, tmp_path):
    publish_table(storage, "recommendations", "2026-11-21", write_recs(tmp_path / "a", [1, 2]), "r1")
    publish_table(storage, "recommendations", "2026-11-22", write_recs(tmp_path / "b", [1, 2, 3]), "r2")
    _, rows, _ = run_query(
        storage,
        ["recommendations"],
        "select ds::varchar, count(*) from recommendations_history group by ds order by ds",
    )
    assert rows == [("2026-11-21", 2), ("2026-11-22", 3)]
    _, rows, _ = run_query(storage, ["recommendations"], "select distinct ds::varchar from recommendations")
    assert rows == [("2026-11-22",)]


def test_publish_rejects_missing_and_unreadable_inputs(tmp_path):
    storage = LocalStorage(tmp_path / "lake")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PublishError, match="no .parquet files under .*empty"):
        publish_table(storage, "audiences", "2026-11-22", tmp_path / "empty", "r")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "part-0.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(PublishError, match=r"audiences: .*part-0.parquet is not a readable Parquet file"):
        publish_table(storage, "audiences", "2026-11-22", bad, "r")
    assert storage.list_keys("marts/") == []


def test_publish_rejects_parts_with_different_schemas(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    pq.write_table(pa.table({"user_id": [1]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"user_id": ["1"]}), folder / "part-1.parquet")
    with pytest.raises(PublishError, match="has schema"):
        publish_table(LocalStorage(tmp_path / "lake"), "audiences", "2026-11-22", folder, "r")


def test_upload_tree_mirrors_a_folder(storage, tmp_path):
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.txt").write_text("b")
    storage.put_bytes("features/x/ds=1/stale.txt", b"old")
    storage.upload_tree(src, "features/x/ds=1")
    assert storage.list_keys("features/x/") == ["features/x/ds=1/a.txt", "features/x/ds=1/sub/b.txt"]
    assert storage.get_bytes("features/x/ds=1/sub/b.txt") == b"b"
    with pytest.raises(FileNotFoundError, match="not in the lake: .*missing.txt"):
        storage.get_bytes("features/x/ds=1/missing.txt")


def test_manifest_is_valid_json_with_checksums(storage, tmp_path):
    publish_table(storage, "user_segments", "2026-11-22", write_recs(tmp_path / "a", [1, 2, 3], files=1), "r1")
    manifest = json.loads(storage.get_bytes(partition_prefix("user_segments", "2026-11-22") + "_manifest.json"))
    assert len(manifest["files"][0]["sha256"]) == 64 and manifest["files"][0]["bytes"] > 0


def test_lake_files_follow_the_umask_or_the_configured_mode(tmp_path):
    """mkstemp's 0600 must not leak into the lake: another user or a BI service reads it."""
    import stat

    from precision_marketing.config import load_config
    from precision_marketing.storage import storage_from_config

    source = tmp_path / "part.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), source)
    old = os.umask(0o022)
    try:
        lake = LocalStorage(tmp_path / "lake")
        lake.put_bytes("reports/ds=2026-11-22/report.json", b"{}")
        manifest = publish_table(lake, "recommendations", "2026-11-22", source, "run1")
        for key in [
            "reports/ds=2026-11-22/report.json",
            "marts/recommendations/ds=2026-11-22/_manifest.json",
            "marts/recommendations/ds=2026-11-22/_SUCCESS",
            f"marts/recommendations/ds=2026-11-22/{manifest['files'][0]['file']}",
        ]:
            assert stat.S_IMODE(lake.path(key).stat().st_mode) == 0o644, key
        configured = storage_from_config(
            load_config(environ={"PM__LAKE__LOCAL_ROOT": str(tmp_path / "lake2"), "PM__LAKE__FILE_MODE": "0640"})
        )
        configured.put_bytes("catalog/views.sql", b"select 1")
        assert stat.S_IMODE(configured.path("catalog/views.sql").stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_query_reads_the_published_tables_and_nothing_else(storage, tmp_path):
    """pm query is a SELECT over the published lake, not a DuckDB session: no other file, no ATTACH of the
    warehouse, no COPY over a published file, no setting changed back."""
    publish_table(storage, "recommendations", "2026-11-22", write_recs(tmp_path / "out", list(range(1, 11))), "run")
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    published = storage.uri(partition_prefix("recommendations", "2026-11-22") + "part-run-00000.parquet")
    refused = {
        f"select * from read_csv('{secret}')": "file system operations are disabled",
        "select * from read_text('/etc/passwd')": "file system operations are disabled",
        f"attach '{tmp_path / 'warehouse.duckdb'}'": "runs one SELECT over the published tables, not ATTACH",
        f"copy (select 1 as user_id) to '{published}' (format parquet)": "not COPY",
        "set enable_external_access = true": "not SET",
        "install httpfs": "not",
        "select 1; select 2": "one statement at a time",
    }
    for sql, message in refused.items():
        with pytest.raises((QueryError, duckdb.Error), match=message):
            run_query(storage, ["recommendations"], sql)
    # the published partition is intact and still readable
    _, rows, _ = run_query(storage, ["recommendations"], "select count(*) from recommendations")
    assert rows == [(10,)]


def test_an_object_key_with_dot_dot_never_writes_outside_the_work_dir(s3_bucket, s3_endpoint, tmp_path):
    storage = S3Storage(bucket=s3_bucket, prefix="nightly", endpoint_url=s3_endpoint)
    storage.put_bytes("raw/events/ds=2026-11-22/events.csv", b"event_id\n")
    storage.put_bytes("raw/events/ds=2026-11-22/../../../../escaped.txt", b"owned")
    target = tmp_path / "work" / "raw" / "events" / "ds=2026-11-22"
    with pytest.raises(ValueError, match=r"object key '.*\.\./escaped.txt' points outside"):
        storage.download_tree("raw/events/ds=2026-11-22", target)
    assert not any(p.name == "escaped.txt" for p in tmp_path.rglob("*"))


def test_the_lake_and_the_work_dir_are_closed_to_other_users(tmp_path):
    """Personal data (quarantine, exports, the warehouse) is not world-readable by default, whatever the umask."""
    from precision_marketing.config import load_config
    from precision_marketing.pipeline import restrict_work_dir
    from precision_marketing.storage import storage_from_config

    old = os.umask(0o022)
    try:
        config = load_config({"lake": {"local_root": str(tmp_path / "lake")}, "work_dir": str(tmp_path / "work")})
        storage = storage_from_config(config)
        storage.put_bytes("quarantine/users/ds=2026-11-22/q.parquet", b"x")
        assert (tmp_path / "lake" / "quarantine/users/ds=2026-11-22/q.parquet").stat().st_mode & 0o777 == 0o640
        assert restrict_work_dir(config).stat().st_mode & 0o777 == 0o750
    finally:
        os.umask(old)


def test_latest_audiences_lose_whoever_opted_out_since(tmp_path):
    """Tonight's audiences were not published: the latest published ones are re-checked against tonight's
    suppressions, so a person who opted out today is not in what the tools read."""
    from precision_marketing.publish.consent import refilter_latest

    storage = LocalStorage(tmp_path / "lake")
    yesterday = tmp_path / "exports.parquet"
    pq.write_table(
        pa.table(
            {
                "campaign_id": ["c1", "c1", "c2", "c2"],
                "user_id": [11, 12, 11, 13],
                "channel": ["email", "email", "push", "push"],
            }
        ),
        yesterday,
    )
    publish_table(storage, "audience_exports", "2026-11-21", yesterday, "night_21")
    keys, suppressions = tmp_path / "user_keys.parquet", tmp_path / "suppressions.parquet"
    pq.write_table(pa.table({"user_key": [1, 2, 3], "user_id": [11, 12, 13]}), keys)
    pq.write_table(pa.table({"user_id": [1, 3], "channel": ["email", "all"]}), suppressions)  # 11 email, 13 all
    result = refilter_latest(storage, "audience_exports", suppressions, keys, tmp_path / "work", "night_22")
    assert result == {"ds": "2026-11-21", "removed": 2}
    _, rows, _ = run_query(
        storage, ["audience_exports"], "select campaign_id, user_id, channel from audience_exports order by 1, 2"
    )
    assert rows == [("c1", 12, "email"), ("c2", 11, "push")]  # 11 opted out of e-mail only, 13 of everything
    assert (
        refilter_latest(storage, "audience_exports", suppressions, keys, tmp_path / "work", "night_23")["removed"] == 0
    )


# ---- pm query with its own read-only credentials: the compose stack's MinIO policy, enforced by moto's IAM


def compose_query_policy(bucket: str) -> dict:
    """The policy docker-compose.yml gives pm query's MinIO user, for `bucket`."""
    import re

    from precision_marketing.config import REPO_ROOT

    text = (REPO_ROOT / "docker-compose.yml").read_text()
    [document] = re.findall(r"printf '%s' '(\{[^']*\})' > /tmp/pm-query\.json", text)
    return json.loads(document.replace('\\"', '"').replace("marketing-lake", bucket))


@pytest.fixture(scope="module")
def iam_s3():
    """A moto server that enforces IAM (its first few calls create the users): an admin and pm query's user."""
    import socket
    import subprocess
    import sys
    import time

    import boto3

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "6"}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        iam = boto3.client(
            "iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="boot", aws_secret_access_key="boot"
        )
        bucket = "lake-readonly"
        users = {}
        for name, policy in (
            ("admin", {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
            ("pm-query", compose_query_policy(bucket)),
        ):
            iam.create_user(UserName=name)
            iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
            users[name] = iam.create_access_key(UserName=name)["AccessKey"]
        yield url, bucket, users
    finally:
        server.kill()


def test_the_lake_and_pm_query_take_their_credentials_from_airflow_connections(iam_s3, tmp_path, monkeypatch):
    """aws_default holds the platform's credentials and endpoint, pm_lake_reader pm query's read-only ones (the
    compose file's policy); moto enforces IAM, so the credentials of the environment would be refused."""
    import botocore.exceptions

    from precision_marketing.config import load_config
    from precision_marketing.publish.catalog import READABLE_PREFIXES
    from precision_marketing.storage import storage_from_config

    url, bucket, users = iam_s3
    policy = compose_query_policy(bucket)
    readable = {r for s in policy["Statement"] if s["Action"] == ["s3:GetObject"] for r in s["Resource"]}
    assert readable == {f"arn:aws:s3:::{bucket}/{prefix}*" for prefix in READABLE_PREFIXES}
    for name, user in (("AWS_DEFAULT", users["admin"]), ("PM_LAKE_READER", users["pm-query"])):
        connection = {"conn_type": "aws", "login": user["AccessKeyId"], "password": user["SecretAccessKey"]}
        connection["extra"] = {"endpoint_url": url, "region_name": "us-east-1"}
        monkeypatch.setenv(f"AIRFLOW_CONN_{name}", json.dumps(connection))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "not-a-user")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-user")
    config = load_config({"lake": {"backend": "s3", "s3": {"bucket": bucket}}})  # the endpoint: from the connection
    pipeline = storage_from_config(config)
    pipeline.client.create_bucket(Bucket=bucket)
    publish_table(pipeline, "recommendations", "2026-11-22", write_recs(tmp_path / "out", [1, 2]), "run-1")
    pipeline.put_bytes("raw/users/ds=2026-11-22/users.csv", b"user_id,email\n1,a@example.com\n")
    reader = storage_from_config(config, reader=True)
    _, rows, _ = run_query(reader, ["recommendations"], "select count(distinct user_id) from recommendations")
    assert rows == [(2,)]
    with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
        reader.put_bytes("marts/recommendations/ds=2026-11-22/_SUCCESS", b"overwritten")
    with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
        reader.get_bytes("raw/users/ds=2026-11-22/users.csv")
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT")  # without the connection, boto3's chain: refused here
    config["lake"]["s3"]["endpoint_url"] = url
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidAccessKeyId|AccessDenied"):
        storage_from_config(config).get_bytes("marts/recommendations/ds=2026-11-22/_SUCCESS")
