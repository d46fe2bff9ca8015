"""Configuration in one place: file, environment overrides, per-run params; and the compose stack only sets
settings the platform actually has."""
from pathlib import Path

import pytest
import yaml

from precision_marketing.config import REPO_ROOT, ConfigError, get, load_config
from precision_marketing.pipeline import run_config


def test_environment_overrides_the_file_and_parses_scalars():
    config = load_config(environ={"PM__SPARK__MASTER": "spark://h:7077", "PM__ALS__TOP_K": "25",
                                  "PM__LAKE__S3__ENDPOINT_URL": "http://minio:9000", "OTHER": "x"})
    assert config["spark"]["master"] == "spark://h:7077"
    assert config["als"]["top_k"] == 25
    assert config["lake"]["s3"]["endpoint_url"] == "http://minio:9000"
    assert config["als"]["max_iter"] == 10  # untouched keys keep the file's value


def test_relative_paths_resolve_against_the_repo():
    config = load_config(environ={})
    assert Path(config["work_dir"]) == REPO_ROOT / ".state" / "work"
    assert Path(config["lake"]["local_root"]).is_absolute()


def test_invalid_backend_and_missing_file_are_named(tmp_path):
    with pytest.raises(ConfigError, match="lake.backend must be 'local' or 's3', got 'ftp'"):
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
        compose["services"])
    file_config = yaml.safe_load((REPO_ROOT / "config" / "platform.yaml").read_text())
    env = compose["x-platform-env"]
    overrides = [k for k in env if k.startswith("PM__")]
    assert overrides
    for name in overrides:
        node = file_config
        for part in name[4:].lower().split("__"):
            assert isinstance(node, dict) and part in node, f"{name} sets no existing key of config/platform.yaml"
            node = node[part]
