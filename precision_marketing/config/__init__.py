"""Configuration in one place: config/platform.yaml, then PM__SECTION__KEY environment variables,
then per-run overrides (Airflow params / CLI flags), in that order of precedence (last wins).

The merged result is validated against the schema in config/schema.py (pydantic): an unknown key, a value
of the wrong type or out of range fails `load_config` with a ConfigError naming the key, the value and
where it came from (the file, the environment variable, or the run parameter). Adding a key: its default
and comment in config/platform.yaml, and one line in config/schema.py (see there)."""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
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


def _env_overrides(environ: Mapping[str, str], sources: dict[tuple, str]) -> dict:
    """PM__SPARK__MASTER=local[2] -> {"spark": {"master": "local[2]"}}; values parsed as YAML scalars.
    Records in `sources` which variable set each key."""
    overrides: dict = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        try:
            node[path[-1]] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            node[path[-1]] = raw  # not YAML: the text itself (the schema decides whether text is allowed)
        sources[tuple(path)] = f"environment variable {name}"
    return overrides


def _leaf_paths(tree: Mapping, prefix: tuple = ()) -> list[tuple]:
    paths = []
    for key, value in tree.items():
        paths += _leaf_paths(value, prefix + (key,)) if isinstance(value, Mapping) and value else [prefix + (key,)]
    return paths


def _source_of(loc: tuple, sources: Mapping[tuple, str], default: str) -> str:
    """Who set the key at loc: the override of that key or of a section above it, or of a key below it."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in sources:
            return sources[loc[:end]]
    below = [source for path, source in sorted(sources.items()) if path[: len(loc)] == loc]
    return below[0] if below else default


def _validated(config: dict, sources: Mapping[tuple, str], config_file: Path) -> dict:
    """The configuration checked against config.schema.PlatformConfig, or a ConfigError listing every problem."""
    from pydantic import ValidationError

    from precision_marketing.config.schema import PlatformConfig

    try:
        return PlatformConfig.model_validate(config).model_dump()
    except ValidationError as error:
        problems = []
        for item in error.errors():
            loc = tuple(str(part) for part in item["loc"])
            key = ".".join(loc)
            origin = _source_of(loc, sources, str(config_file))
            if item["type"] == "extra_forbidden":
                known = _known_keys(loc[:-1])
                close = difflib.get_close_matches(loc[-1], known, n=1)
                hint = (
                    f"; did you mean {'.'.join(loc[:-1] + (close[0],))!r}?"
                    if close
                    else f"; known keys here: {', '.join(sorted(known))}"
                )
                problems.append(f"unknown key {key!r} (from {origin}){hint}")
            elif not loc:  # a rule across sections: its message names the keys
                problems.append(item["msg"].removeprefix("Value error, "))
            elif item["type"] == "missing":
                problems.append(f"missing key {key!r} (add it to {config_file})")
            else:
                problems.append(f"{key} = {item.get('input')!r} (from {origin}): {item['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems)) from None


def _known_keys(loc: tuple) -> list[str]:
    from precision_marketing.config.schema import PlatformConfig

    model = PlatformConfig
    for part in loc:
        annotation = model.model_fields[part].annotation
        model = annotation
    return list(model.model_fields)


def load_config(overrides: Mapping | None = None, environ: Mapping[str, str] | None = None) -> dict:
    """The effective configuration as a plain dict, paths resolved to absolute ones."""
    environ = os.environ if environ is None else environ
    config_file = Path(environ.get("PM_CONFIG", DEFAULT_CONFIG_FILE))
    try:
        config = yaml.safe_load(config_file.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file not found: {config_file} (set PM_CONFIG or restore config/platform.yaml)"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_file} is not valid YAML: {exc}") from None
    sources: dict[tuple, str] = {}
    _deep_merge(config, _env_overrides(environ, sources))
    overrides = overrides or {}
    sources.update({path: "run parameters" for path in _leaf_paths(overrides)})
    _deep_merge(config, overrides)
    config = _validated(config, sources, config_file)
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
