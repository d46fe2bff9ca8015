"""
### Nightly precision-marketing run

One run = one logical date `ds`. From the raw landing files of `ds` (and the behaviour history window
before it) to published, queryable recommendation, audience and segment tables:

1. **check_raw** — stage the raw partitions locally and check them against the raw data contract
   (`docs/data_contract.md`); a missing file or required column fails here, naming the file and column.
2. **dbt** — one task per dbt model (`dbt build`: the model and its tests): staging (typed, de-duplicated,
   bad rows quarantined with a reason), marts (features, interactions, CTR sets), audit (reconciliation).
3. **export_features** → **validate_marts** (Great Expectations): a failure stops the run before anything is published.
4. **train_als** (Spark ALS → top-K recommendations) | **segment_users** (scikit-learn) →
   **train_ctr_and_build_audiences** (Spark logistic regression, calibrated → per-campaign audiences with
   frequency cap, treatment/control groups and bid hints) → **build_audience_exports** (treatment rows with
   personalised products and subject lines) | **measure_campaign_lift** (treatment vs control, from the
   audiences published on earlier nights).
5. **validate_outputs** (Great Expectations) → **publish** (atomic per partition: manifest + `_SUCCESS`)
   → **refresh_catalog_and_report**.

Re-running a `ds` replaces its partitions whole; a failed run leaves the last good tables published.
Configuration: `config/platform.yaml` + `PM__SECTION__KEY` environment variables + the params below.
"""
from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import Asset, Param, dag

from precision_marketing import pipeline
from precision_marketing.orchestration import DAG_ID, cosmos_dbt_group, default_args

PUBLISHED = [Asset(f"lake://marts/{table}") for table in
             ("recommendations", "audiences", "user_segments", "audience_exports", "campaign_lift")]


@dag(
    dag_id=DAG_ID,
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,  # backfills are explicit (`airflow dags backfill`), never a surprise after a pause
    max_active_runs=1,
    max_active_tasks=1,  # DuckDB allows one writer; Spark jobs already use every core
    default_args=default_args(),
    tags=["marketing", "dbt", "spark", "nightly"],
    doc_md=__doc__,
    params={
        "top_k": Param(10, type="integer", minimum=1, maximum=200, title="Recommendations per user (K)"),
        "holdout_days": Param(7, type="integer", minimum=1, maximum=60,
                              title="Holdout days for model evaluation (ALS and CTR)"),
        "spark_master": Param(None, type=["null", "string"], title="Spark master (empty = config spark.master)"),
    },
)
def nightly_marketing():
    def step(task_id, callable_, op_kwargs=None, **operator_kwargs):
        return PythonOperator(task_id=task_id, python_callable=callable_,
                              op_kwargs={"ds": "{{ ds }}", **(op_kwargs or {})}, **operator_kwargs)

    check_raw = step("check_raw", pipeline.stage_and_check_raw)
    dbt = cosmos_dbt_group("dbt")
    export_features = step("export_features", pipeline.export_features)
    validate_marts = step("validate_marts", pipeline.validate_marts)
    train_als = step("train_als", pipeline.train_als)
    segment_users = step("segment_users", pipeline.segment_users)
    train_ctr = step("train_ctr_and_build_audiences", pipeline.train_ctr_and_build_audiences)
    build_exports = step("build_audience_exports", pipeline.build_audience_exports)
    measure_lift = step("measure_campaign_lift", pipeline.measure_campaign_lift)
    validate_outputs = step("validate_outputs", pipeline.validate_outputs)
    publish = step("publish", pipeline.publish, {"run_id": "{{ run_id }}"}, outlets=PUBLISHED)
    report = step("refresh_catalog_and_report", pipeline.refresh_catalog_and_report, {"run_id": "{{ run_id }}"})

    check_raw >> dbt >> export_features >> validate_marts >> [train_als, segment_users, measure_lift]
    segment_users >> train_ctr
    [train_als, train_ctr] >> build_exports
    [build_exports, measure_lift] >> validate_outputs >> publish >> report


nightly_marketing()
