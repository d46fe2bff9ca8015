"""OpenLineage for the DAG's Python steps: what each one reads and writes, as datasets named the way the rest of
the graph names them, so a lineage backend joins the night end to end:

    raw landing files --check_raw--> dbt sources `landed.*` --dbt models (Cosmos)--> warehouse marts
    --export_features--> features/ --train_als, segment_users, train_ctr...--> models/ --publish--> lake marts/

Cosmos reports each dbt task itself (a layer's: all its models), from dbt's manifest (namespace
`duckdb://<warehouse>`, name `<database>.<schema>.<relation>`); the warehouse datasets here are read from the same
manifest. Files follow OpenLineage's naming: namespace `file` and the absolute path, or `s3://<bucket>` and the
key. A dataset is a table (its folder), not one night's partition, as catalogs show it.

The provider's listener calls OperatorLineage.get_openlineage_facets_on_complete (operators.py) after a step
succeeds; with no transport configured nothing is emitted (orchestration/environment.py sets a file one)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from precision_marketing import pipeline


def dataset(uri: str):
    """An OpenLineage dataset for a local path or an s3:// URI."""
    from openlineage.client.event_v2 import Dataset

    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://") :].partition("/")
        return Dataset(namespace=f"s3://{bucket}", name=key.rstrip("/"))
    return Dataset(namespace="file", name=str(Path(uri).resolve()))


def warehouse_datasets(config: Mapping, unique_ids: list[str]) -> list:
    """The dbt relations (model or source unique ids) as Cosmos names them."""
    from openlineage.client.event_v2 import Dataset

    from precision_marketing.orchestration.dbt import dbt_env, dbt_manifest_path

    manifest = json.loads(dbt_manifest_path(config).read_text())
    nodes = {**manifest["nodes"], **manifest["sources"]}
    namespace = "duckdb://" + dbt_env(config)["PM_DUCKDB_PATH"]
    found = []
    for unique_id in unique_ids:
        node = nodes[unique_id]
        relation = node["name"] if node["resource_type"] == "source" else node.get("alias") or node["name"]
        found.append(
            Dataset(namespace=namespace, name=".".join(filter(None, [node["database"], node["schema"], relation])))
        )
    return found


def step_lineage(task_id: str, config: Mapping, ds: str) -> tuple[list, list]:
    """(inputs, outputs) of a Python step of the DAG for ds; ([], []) for a task not listed. Only the asked step's
    datasets are built: each step's completion calls this, and the warehouse ones read the dbt manifest."""
    from precision_marketing.storage import storage_from_config

    paths = pipeline.paths_for(config, ds)
    work = paths.work
    lake = storage_from_config(config)
    project = "model.precision_marketing."

    def features(*tables: str) -> list:
        return [dataset(str(work / "features" / table)) for table in tables]

    def models(*tables: str) -> list:
        return [dataset(str(work / "models" / pipeline.OUTPUTS[table].model / table)) for table in tables]

    def published_marts() -> list:
        return [dataset(lake.uri(f"marts/{table}")) for table in pipeline.published_tables(config)]

    exported = pipeline.MART_TABLES + pipeline.AUDIT_TABLES
    sources = pipeline.raw_sources()
    steps = {
        "check_raw": lambda: (
            [dataset(lake.uri(f"raw/{source}")) for source in sources],
            warehouse_datasets(config, [f"source.precision_marketing.landed.{source}" for source in sources]),
        ),
        "export_features": lambda: (
            warehouse_datasets(
                config, [project + table for table in exported] + [f"{project}quarantine_{s}" for s in sources]
            ),
            features(*exported) + [dataset(str(work / "quarantine" / source)) for source in sources],
        ),
        "validate_marts": lambda: (features(*exported), []),
        "train_als": lambda: (features("interactions", "user_features", "item_features"), models("recommendations")),
        "segment_users": lambda: (features("user_features"), models("user_segments")),
        "train_ctr_and_build_audiences": lambda: (
            features("ctr_train", "ctr_score", "campaigns") + models("user_segments"),
            models("audiences"),
        ),
        "build_audience_exports": lambda: (
            models("audiences", "recommendations") + features("item_features", "campaigns"),
            models("audience_exports"),
        ),
        "measure_campaign_lift": lambda: (
            [dataset(lake.uri("marts/audiences"))]
            + features("ctr_train", "interactions", "item_features", "campaigns", "user_keys"),
            models("campaign_lift"),
        ),
        "validate_outputs": lambda: (models(*pipeline.OUTPUTS), []),
        "publish": lambda: (
            models(*pipeline.published_tables(config)) + features("user_keys", "product_keys", "suppressions"),
            published_marts(),
        ),
        "refresh_catalog_and_report": lambda: (published_marts(), [dataset(lake.uri("reports"))]),
    }
    step = steps.get(task_id)
    return step() if step else ([], [])
