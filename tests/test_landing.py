"""The landing-file sensor: what it waits for (files or _READY markers) on a local folder and on a real S3
API, and the message it fails with when the wait times out."""
import os

import boto3
import pytest

from precision_marketing.landing import expected_landing_keys, missing_landing_keys
from precision_marketing.storage import LocalStorage, S3Storage

DS = "2026-11-22"
SOURCES = ["campaigns", "consent", "events", "impressions", "products", "users"]


def land(storage, source, name=None, ds=DS):
    storage.put_bytes(f"raw/{source}/ds={ds}/{name or source + '.csv'}", b"header\n")


def test_expected_keys_are_the_contract_files_or_ready_markers():
    keys = expected_landing_keys(DS, ready_marker_sources=["events"])
    assert sorted(keys) == SOURCES
    assert keys["users"] == f"raw/users/ds={DS}/users.csv"
    assert keys["events"] == f"raw/events/ds={DS}/_READY"
    with pytest.raises(ValueError, match=r"unknown source\(s\) \['clicks'\]"):
        expected_landing_keys(DS, ["clicks"])


def test_missing_keys_on_a_local_lake(tmp_path):
    lake = LocalStorage(tmp_path)
    assert len(missing_landing_keys(lake, DS)) == 6
    for source in SOURCES:
        land(lake, source)
    land(lake, "users", ds="2026-11-21")
    assert missing_landing_keys(lake, DS) == []
    assert missing_landing_keys(lake, "2026-11-23") == [f"raw/{s}/ds=2026-11-23/{s}.csv" for s in SOURCES]
    # events arrive in several files: only its _READY marker says the day is complete
    assert missing_landing_keys(lake, DS, ["events"]) == [f"raw/events/ds={DS}/_READY"]
    land(lake, "events", "_READY")
    assert missing_landing_keys(lake, DS, ["events"]) == []


def test_missing_keys_on_s3(s3_endpoint, s3_bucket):
    lake = S3Storage(s3_bucket, prefix="lake", endpoint_url=s3_endpoint,
                     client=boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1"))
    for source in SOURCES[:-1]:
        land(lake, source)
    assert missing_landing_keys(lake, DS) == [f"raw/users/ds={DS}/users.csv"]
    land(lake, "users")
    assert missing_landing_keys(lake, DS) == []


@pytest.fixture
def local_lake_env(tmp_path):
    saved = dict(os.environ)
    os.environ.update({"PM__LAKE__LOCAL_ROOT": str(tmp_path / "lake"), "PM__WORK_DIR": str(tmp_path / "work")})
    yield LocalStorage(tmp_path / "lake")
    os.environ.clear()
    os.environ.update(saved)


def test_sensor_pokes_until_everything_landed_and_names_what_is_missing_on_timeout(local_lake_env):
    from airflow.sdk.exceptions import AirflowSensorTimeout

    from precision_marketing.operators import LandingFilesSensor

    lake = local_lake_env
    for source in SOURCES[:4]:
        land(lake, source)
    sensor = LandingFilesSensor(task_id="wait_for_landing_files", ds=DS, mode="poke", poke_interval=0, timeout=0)
    assert sensor.poke({}) is False
    with pytest.raises(AirflowSensorTimeout) as raised:
        sensor.execute({})
    message = str(raised.value)
    assert message.startswith(f"landing files for ds={DS} still missing after waiting 0:00:00: ")
    assert str(lake.path(f"raw/products/ds={DS}/products.csv")) in message
    assert str(lake.path(f"raw/users/ds={DS}/users.csv")) in message and "events" not in message
    for source in SOURCES[4:]:
        land(lake, source)
    assert sensor.poke({}) is True
