"""The lake on a real S3 API (moto server): synthetic landing files go to the bucket, the run stages the
window's raw partitions to local disk for dbt and checks them against the contract."""

import json

import pytest

from precision_marketing import cli
from precision_marketing.pipeline import local_raw_dir, run_config, stage_and_check_raw
from precision_marketing.storage import storage_from_config

DS = "2026-11-22"


@pytest.fixture
def s3_lake(monkeypatch, tmp_path, s3_endpoint, s3_bucket):
    monkeypatch.setenv("PM__LAKE__BACKEND", "s3")
    monkeypatch.setenv("PM__LAKE__S3__BUCKET", s3_bucket)
    monkeypatch.setenv("PM__LAKE__S3__PREFIX", "nightly")
    monkeypatch.setenv("PM__LAKE__S3__ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("PM__WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("PM__DBT__HISTORY_DAYS", "3")
    return storage_from_config(run_config())


def test_generate_into_s3_then_stage_and_check(s3_lake, capsys):
    cli.main(["generate", "--ds", DS, "--users", "60", "--items", "30", "--days", "3", "--seed", "1"])
    keys = s3_lake.list_keys("raw/events/")
    assert [k for k in keys if k.endswith(".csv")] == [f"raw/events/ds=2026-11-{d}/events.csv" for d in (20, 21, 22)]

    report = stage_and_check_raw(DS)
    raw_dir = local_raw_dir(run_config())
    staged = raw_dir / "events" / f"ds={DS}" / "events.csv"
    assert staged.read_bytes() == s3_lake.get_bytes(f"raw/events/ds={DS}/events.csv")
    # the contract check and the landing ran on the staged copy: every source of the generator, no warning
    assert report["delivered"] == ["users", "products", "events", "impressions", "campaigns", "consent"]
    assert report["warnings"] == [] and report["capabilities"]["audiences"] is True
    staged_events = sum(len(p.read_text().splitlines()) - 1 for p in (raw_dir / "events").glob("ds=*/events.csv"))
    assert report["rows_per_source"]["events"] == staged_events > 0


def test_missing_column_in_s3_landing_file_is_named(s3_lake):
    from precision_marketing.contract import RawContractError

    cli.main(["generate", "--ds", DS, "--users", "60", "--items", "30", "--days", "3", "--seed", "1"])
    key = f"raw/products/ds={DS}/products.csv"
    s3_lake.put_bytes(key, s3_lake.get_bytes(key).replace(b"price", b"cost", 1))
    with pytest.raises(RawContractError, match=f"products/ds={DS}/products.csv: missing required column 'price'"):
        stage_and_check_raw(DS)


def test_landing_partitions_are_immutable_across_generations(s3_lake, capsys):
    args = ["--users", "60", "--items", "30", "--days", "3", "--seed", "1"]
    cli.main(["generate", "--ds", DS, *args])
    before = {k: s3_lake.get_bytes(k) for k in s3_lake.list_keys("raw/")}
    capsys.readouterr()

    cli.main(["generate", "--ds", "2026-11-23", *args])
    summary = json.loads(capsys.readouterr().out)
    # only the new day is landed: 6 sources for 11-23; the 11-21 and 11-22 partitions were already there
    assert (summary["partitions_written"], summary["partitions_kept"]) == (6, 2 * 6)
    assert {k: s3_lake.get_bytes(k) for k in before} == before
    assert s3_lake.list_keys("raw/events/ds=2026-11-23/") == ["raw/events/ds=2026-11-23/events.csv"]

    cli.main(["generate", "--ds", "2026-11-23", "--overwrite", *args])
    summary = json.loads(capsys.readouterr().out)
    assert (summary["partitions_written"], summary["partitions_kept"]) == (3 * 6, 0)
