"""Configuration in one place: config/platform.yaml, then PM__SECTION__KEY environment variables,
then per-run overrides (Airflow params / CLI flags), in that order of precedence (last wins)."""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG_FILE = REPO_ROOT / "config" / "platform.yaml"
ENV_PREFIX = "PM__"


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the key."""


def _deep_merge(base: dict, override: Mapping) -> dict:
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _env_overrides(environ: Mapping[str, str]) -> dict:
    """PM__SPARK__MASTER=local[2] -> {"spark": {"master": "local[2]"}}; values parsed as YAML scalars."""
    overrides: dict = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__") if part]
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(raw) if raw != "" else None
    return overrides


def load_config(overrides: Mapping | None = None, environ: Mapping[str, str] | None = None) -> dict:
    """The effective configuration as a plain dict, paths resolved to absolute ones."""
    environ = os.environ if environ is None else environ
    config_file = Path(environ.get("PM_CONFIG", DEFAULT_CONFIG_FILE))
    try:
        config = yaml.safe_load(config_file.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {config_file} (set PM_CONFIG or restore config/platform.yaml)")
    _deep_merge(config, _env_overrides(environ))
    _deep_merge(config, overrides or {})

    backend = config["lake"]["backend"]
    if backend not in ("local", "s3"):
        raise ConfigError(f"lake.backend must be 'local' or 's3', got {backend!r}")
    for section, key in (("lake", "local_root"), (None, "work_dir"), ("dbt", "project_dir")):
        node = config[section] if section else config
        node[key] = str(resolve_path(node[key]))
    return config


def resolve_path(value: str | os.PathLike) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def get(config: Mapping, dotted_key: str) -> Any:
    """config value by 'section.key', with an error naming the key when it is missing."""
    node: Any = config
    for part in dotted_key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"missing configuration key {dotted_key!r} (see config/platform.yaml)")
        node = node[part]
    return node
