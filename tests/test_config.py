"""Configuration in one place: file, environment overrides, per-run params; and the compose stack only sets
settings the platform actually has."""

import json
from pathlib import Path

import pytest
import yaml

from precision_marketing.config import REPO_ROOT, ConfigError, get, load_config
from precision_marketing.pipeline import run_config

pytestmark = pytest.mark.fast  # make test-fast: no Spark session, Airflow run or browser


def test_environment_overrides_the_file_and_parses_scalars():
    config = load_config(
        environ={
            "PM__SPARK__MASTER": "spark://h:7077",
            "PM__ALS__TOP_K": "25",
            "PM__LAKE__S3__ENDPOINT_URL": "http://minio:9000",
            "OTHER": "x",
        }
    )
    assert config["spark"]["master"] == "spark://h:7077"
    assert config["als"]["top_k"] == 25
    assert config["lake"]["s3"]["endpoint_url"] == "http://minio:9000"
    assert config["als"]["max_iter"] == 15  # untouched keys keep the file's value


def test_relative_paths_resolve_against_the_repo():
    config = load_config(environ={})
    assert Path(config["work_dir"]) == REPO_ROOT / ".state" / "work"
    assert Path(config["lake"]["local_root"]).is_absolute()


def test_invalid_backend_and_missing_file_are_named(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"lake.backend = 'ftp' \(from environment variable PM__LAKE__BACKEND\): "
        r"Input should be 'local' or 's3'",
    ):
        load_config(environ={"PM__LAKE__BACKEND": "ftp"})
    with pytest.raises(ConfigError, match="configuration file not found: .*nope.yaml"):
        load_config(environ={"PM_CONFIG": str(tmp_path / "nope.yaml")})
    with pytest.raises(ConfigError, match="missing configuration key 'als.nope'"):
        get(load_config(environ={}), "als.nope")


def test_airflow_params_override_per_run():
    config = run_config({"top_k": 5, "holdout_days": 3, "spark_master": None})
    assert config["als"]["top_k"] == 5
    assert config["als"]["holdout"] == "3d" and config["ctr"]["holdout_days"] == 3
    assert config["spark"]["master"] == load_config()["spark"]["master"]


def test_compose_stack_sets_only_existing_settings():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert {"postgres", "minio", "airflow-scheduler", "airflow-api-server", "spark-master", "spark-worker"} <= set(
        compose["services"]
    )
    file_config = yaml.safe_load((REPO_ROOT / "config" / "platform.yaml").read_text())
    env = compose["x-platform-env"]
    overrides = [k for k in env if k.startswith("PM__")]
    assert overrides
    for name in overrides:
        node = file_config
        for part in name[4:].lower().split("__"):
            assert isinstance(node, dict) and part in node, f"{name} sets no existing key of config/platform.yaml"
            node = node[part]


# ---- the schema: a typo, a wrong type, an out-of-range value fail at start, naming key, value and origin


def test_misspelled_key_fails_with_a_suggestion():
    with pytest.raises(ConfigError) as raised:
        load_config(environ={"PM__LAKE__BACKNED": "s3"})
    assert str(raised.value) == (
        "invalid configuration:\n  - unknown key 'lake.backned' (from environment variable "
        "PM__LAKE__BACKNED); did you mean 'lake.backend'?"
    )


def test_wrong_type_and_out_of_range_values_name_key_value_and_origin(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"als.top_k = 'abc' \(from environment variable PM__ALS__TOP_K\): "
        r"Input should be a valid integer",
    ):
        load_config(environ={"PM__ALS__TOP_K": "abc"})
    with pytest.raises(ConfigError, match=r"als.top_k = 0 \(from run parameters\): .*greater than or equal to 1"):
        load_config(overrides={"als": {"top_k": 0}}, environ={})
    edited = tmp_path / "platform.yaml"
    edited.write_text((REPO_ROOT / "config" / "platform.yaml").read_text().replace("dirty_rate: 0.02", "dirty_rate: 2"))
    with pytest.raises(ConfigError, match=rf"datagen.dirty_rate = 2 \(from {edited}\): Input should be less than 1"):
        load_config(environ={"PM_CONFIG": str(edited)})


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as raised:
        load_config(
            environ={"PM__SPARK__SHUFFLE_PARTITIONS": "-1", "PM__ALS__GATE__LEVEL": "loud", "PM__SEGMENTS__KAY": "3"}
        )
    lines = str(raised.value).splitlines()[1:]
    assert len(lines) == 3
    assert any(line.startswith("  - spark.shuffle_partitions = -1 ") for line in lines)
    assert any("als.gate.level = 'loud'" in line and "'warn' or 'fail'" in line for line in lines)
    assert any("unknown key 'segments.kay'" in line and "known keys here: k, seed" in line for line in lines)


def test_schema_and_file_have_the_same_keys():
    """Adding a key means a line in platform.yaml and a line in config/schema.py: neither without the other."""
    from precision_marketing.config.schema import PlatformConfig

    def keys(model, prefix=""):
        out = set()
        for name, field in model.model_fields.items():
            nested = (
                field.annotation
                if isinstance(field.annotation, type) and hasattr(field.annotation, "model_fields")
                else None
            )
            out |= keys(nested, f"{prefix}{name}.") if nested else {prefix + name}
        return out

    def file_keys(tree, prefix=""):
        out = set()
        for name, value in tree.items():
            out |= file_keys(value, f"{prefix}{name}.") if isinstance(value, dict) and value else {prefix + name}
        return out

    file_config = yaml.safe_load((REPO_ROOT / "config" / "platform.yaml").read_text())
    assert file_keys(file_config) == keys(PlatformConfig)


def test_compose_publishes_on_localhost_only_and_has_no_default_secrets():
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    assert "minioadmin" not in text and ":-airflow" not in text and "POSTGRES_PASSWORD: airflow" not in text
    for secret in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "PM_LAKE_SECRET_KEY", "SPARK_AUTH_SECRET"):
        assert f"${{{secret}:?" in text, f"{secret} must be required (${{{secret}:?...}}), never defaulted"
    # the platform uses its own, bucket-scoped MinIO user, not the root account
    env = compose["x-platform-env"]
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env), "credentials live in Airflow connections"
    spark = json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])
    assert (spark["host"], spark["port"]) == ("spark://spark-master", 7077) and "PM__SPARK__MASTER" not in env
    for name, user in (("AIRFLOW_CONN_AWS_DEFAULT", "PM_LAKE"), ("AIRFLOW_CONN_PM_LAKE_READER", "PM_QUERY")):
        connection = json.loads(env[name])
        assert connection["conn_type"] == "aws" and connection["login"].startswith(f"${{{user}_ACCESS_KEY:?")
        assert connection["password"].startswith(f"${{{user}_SECRET_KEY:?")


def test_the_spark_master_comes_from_the_spark_default_connection_unless_a_run_says_otherwise(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.delenv("AIRFLOW_CONN_SPARK_DEFAULT", raising=False)
    assert run_config()["spark"]["master"] == load_config()["spark"]["master"]  # none defined: the file's
    connection = {
        "conn_type": "spark",
        "host": "spark://spark-master",
        "port": 7077,
        "extra": {"deploy-mode": "client"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps(connection))
    assert run_config()["spark"]["master"] == "spark://spark-master:7077"
    assert run_config({"spark_master": "local[2]"})["spark"]["master"] == "local[2]"
    # the URI form reads as the Spark provider reads it: the scheme is the connection type, not part of the host
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", "spark://spark-master:7077")
    assert run_config()["spark"]["master"] == "spark://spark-master:7077"
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": "nowhere"}))
    with pytest.raises(ConfigError, match="connection 'spark_default' gives the Spark master 'nowhere'"):
        run_config()


def test_spark_driver_memory_auto_follows_the_nights_features(tmp_path):
    """spark.driver_memory auto: 1 GB plus 16 bytes of heap per byte of the night's exported features, capped;
    only that night's partitions count; a fixed size is kept as given."""
    from precision_marketing.training.spark_submit import driver_memory

    features = tmp_path / "features"
    for table, night, size in (("ctr_train", "2026-11-22", 40 * 2**20), ("interactions", "2026-11-22", 24 * 2**20)):
        (features / table / f"ds={night}").mkdir(parents=True)
        (features / table / f"ds={night}" / "part.parquet").write_bytes(b"\0" * size)
    (features / "ctr_train" / "ds=2026-11-21").mkdir()
    (features / "ctr_train" / "ds=2026-11-21" / "old.parquet").write_bytes(b"\0" * 2**30)  # another night
    args = ["--features-dir", str(features), "--ds", "2026-11-22", "--output-dir", "x"]
    auto = {"driver_memory": "auto", "driver_memory_max": "8g"}
    assert driver_memory(auto, args) == f"{1024 + 64 * 16}m"
    assert driver_memory({**auto, "driver_memory_max": "1500m"}, args) == "1500m"
    assert driver_memory(auto, ["--help"]) == "8192m"  # nothing to size from: the cap
    assert driver_memory({**auto, "driver_memory": "3g"}, args) == "3g"
    assert load_config()["spark"]["driver_memory"] == "auto"  # the default
