"""The environment an in-repo Airflow runs with (`pm` commands, the tests, the servers)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from precision_marketing.config import REPO_ROOT, load_config


def airflow_env(config: Mapping | None = None) -> dict[str, str]:
    """Environment for running Airflow: by default an Airflow inside the repo's ignored state folder (SQLite,
    no examples). Settings already in the environment win, so the compose stack's Postgres etc. are kept."""
    config = config or load_config()
    home = Path(os.environ.get("AIRFLOW_HOME") or Path(config["work_dir"]).parent / "airflow")
    lineage = lineage_file(config)
    lineage.parent.mkdir(parents=True, exist_ok=True)
    defaults = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__PARALLELISM": "2",
        # dbt's partial_parse.msgpack carried from one model's task to the next: without it every task re-parses
        # the whole project (~2.5 s of a ~3 s task). Kept inside Airflow's home, not the shared /tmp default.
        "AIRFLOW__COSMOS__ENABLE_CACHE": "True",
        "AIRFLOW__COSMOS__CACHE_DIR": str(home / "cosmos_cache"),
        # OpenLineage (the provider's listener, and Cosmos for the dbt models): one JSON event per line in the work
        # dir; a team's AIRFLOW__OPENLINEAGE__TRANSPORT (http to Marquez, say) wins (README "Lineage")
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(lineage), "append": True}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "precision_marketing",
        "GX_ANALYTICS_ENABLED": "false",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
        "SCARF_ANALYTICS": "false",
    }
    venv_bin = str(Path(sys.executable).parent)  # `airflow standalone` and spark-submit look for tools on PATH
    return {**defaults, **os.environ, "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}


def lineage_file(config: Mapping) -> Path:
    """Where the default OpenLineage transport appends the night's events."""
    return Path(config["work_dir"]) / "lineage" / "openlineage.ndjson"
