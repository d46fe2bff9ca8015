"""The landing-file sensor: what it waits for (files or _READY markers) on a local folder and on a real S3
API, and the message it fails with when the wait times out."""

import os

import boto3
import pytest

from precision_marketing.ingest.arrivals import missing_landing
from precision_marketing.storage import LocalStorage, S3Storage

pytestmark = pytest.mark.fast  # make test-fast: no Spark session, Airflow run or browser

DS = "2026-11-22"
SOURCES = ["campaigns", "consent", "events", "impressions", "products", "users"]


def land(storage, source, name=None, ds=DS):
    storage.put_bytes(f"raw/{source}/ds={ds}/{name or source + '.csv'}", b"header\n")


YESTERDAY = "2026-11-21"


def missing(lake, ds=DS, markers=()):
    return missing_landing(lake, ds, history_days=30, ready_marker_sources=markers)


def test_first_night_waits_for_any_behaviour_source(tmp_path):
    lake = LocalStorage(tmp_path)
    assert missing(lake) == [
        f"a behaviour source: raw/events/ds={DS}/ (a file matching *.csv or *.csv.gz) or "
        f"raw/orders/ds={DS}/ (a file matching *.csv or *.csv.gz)"
    ]
    land(lake, "orders")
    assert missing(lake) == []  # an order log alone is enough; nothing else was ever delivered
    with pytest.raises(ValueError, match=r"unknown source\(s\) \['clicks'\]"):
        missing(lake, markers=["clicks"])


def test_sources_delivered_in_the_window_are_expected_again(tmp_path):
    lake = LocalStorage(tmp_path)
    for source in SOURCES:
        land(lake, source, ds=YESTERDAY)
    assert len(missing(lake)) == 6
    for source in SOURCES:
        land(lake, source)
    assert missing(lake) == []
    assert missing(lake, "2026-11-23") == [
        f"raw/{s}/ds=2026-11-23/ (a file matching *.csv or *.csv.gz)" for s in SOURCES
    ]
    assert missing(lake, "2027-01-30") == [  # the window (30 days) holds no delivery: a first night again
        "a behaviour source: raw/events/ds=2027-01-30/ (a file matching *.csv or *.csv.gz) or "
        "raw/orders/ds=2027-01-30/ (a file matching *.csv or *.csv.gz)"
    ]
    # events arrive in several files: only its _READY marker says the day is complete
    assert missing(lake, markers=["events"]) == [f"raw/events/ds={DS}/_READY"]
    land(lake, "events", "_READY")
    assert missing(lake, markers=["events"]) == []


def test_missing_landing_on_s3(s3_endpoint, s3_bucket):
    lake = S3Storage(
        s3_bucket,
        prefix="lake",
        endpoint_url=s3_endpoint,
        client=boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1"),
    )
    for source in SOURCES:
        land(lake, source, ds=YESTERDAY)
    for source in SOURCES[:-1]:
        land(lake, source)
    assert missing(lake) == [f"raw/users/ds={DS}/ (a file matching *.csv or *.csv.gz)"]
    land(lake, "users", "users_part1.csv")  # any name matching the mapping's patterns
    assert missing(lake) == []


@pytest.fixture
def local_lake_env(tmp_path):
    saved = dict(os.environ)
    os.environ.update({"PM__LAKE__LOCAL_ROOT": str(tmp_path / "lake"), "PM__WORK_DIR": str(tmp_path / "work")})
    yield LocalStorage(tmp_path / "lake")
    os.environ.clear()
    os.environ.update(saved)


def test_sensor_pokes_until_everything_landed_and_names_what_is_missing_on_timeout(local_lake_env):
    from airflow.sdk.exceptions import AirflowSensorTimeout

    from precision_marketing.orchestration.operators import LandingFilesSensor

    lake = local_lake_env
    for source in SOURCES:
        land(lake, source, ds=YESTERDAY)
    for source in SOURCES[:4]:
        land(lake, source)
    sensor = LandingFilesSensor(task_id="wait_for_landing_files", ds=DS, mode="poke", poke_interval=0, timeout=0)
    assert sensor.poke({}) is False
    with pytest.raises(AirflowSensorTimeout) as raised:
        sensor.execute({})
    message = str(raised.value)
    assert message.startswith(f"landing files for ds={DS} still missing after waiting 0:00:00: ")
    assert f"raw/products/ds={DS}/ (a file matching" in message
    assert f"raw/users/ds={DS}/ (a file matching" in message and "events" not in message
    for source in SOURCES[4:]:
        land(lake, source)
    assert sensor.poke({}) is True
