"""Airflow connections the platform reads: defined in Admin -> Connections, as `AIRFLOW_CONN_<ID>` variables or in
a secrets backend, so a team manages the platform's endpoints and secrets the way it manages every other DAG's.
None defined = the embedded defaults (the demo needs no connection)."""

from __future__ import annotations

import os
from typing import Any


def env_name(conn_id: str) -> str:
    """The environment variable that defines a connection for Airflow (and for `pm` outside it)."""
    return "AIRFLOW_CONN_" + conn_id.upper()


def airflow_connection(conn_id: str | None) -> Any | None:
    """The connection `conn_id` through Airflow's own lookup (inside a task: the task's; outside: the
    `AIRFLOW_CONN_*` variables, secrets backends and the metadata database of AIRFLOW_HOME), or None when it is
    not defined (or conn_id is empty)."""
    if not conn_id:
        return None
    if not any(name in os.environ for name in ("AIRFLOW_HOME", "AIRFLOW__SECRETS__BACKEND", env_name(conn_id))):
        return None  # not inside Airflow and nothing defines it: no metadata database to create or ask
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def spark_master(conn_id: str | None) -> str | None:
    """The master of the Spark connection `conn_id`, read by the Spark provider's own rule (host `spark://spark-master`
    + port 7077, the URI `spark://spark-master:7077`, `yarn`, `k8s://https://...`, `local[*]`), or None when it is
    not defined or has no host."""
    connection = airflow_connection(conn_id)
    if connection is None or not connection.host:
        return None
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    return SparkSubmitHook(conn_id=conn_id)._connection["master"]
