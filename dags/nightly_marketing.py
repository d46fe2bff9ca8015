"""
### Nightly precision-marketing run

One run = one day `ds`. From the raw landing files of `ds` (and the behaviour history window
before it) to published, queryable recommendation, audience and segment tables.

**Which day.** The param **Day to process** (`ds`) when set: any day, a re-run included (its tables are
replaced whole). Otherwise the run's daily data interval (UTC): the scheduled run that starts at midnight after
day D processes D, the day that just ended; a manual trigger processes the last complete day before its logical
date (yesterday, for the trigger form's default "now"). `pm run --ds D` sets the param; `pm backfill --from D1
--to D2` processes each day D1..D2.

0. **wait_for_landing_files** — waits (reschedule mode: no worker slot held) until every source's landing
   file of `ds` is in the lake (or its `_READY` marker, for sources configured to write one); on timeout the
   run fails with the list of missing files. Poke interval and timeout: `landing.*` in the configuration.
1. **check_raw** — stage the raw partitions locally, check them against the raw data contract
   (`docs/data_contract.md`; a missing file or required column fails here, naming the file and column) and
   land them through the mapping file (`ingest.mapping`) for dbt (a clean file by Arrow's reader, any other record
   by record). Sources that were not delivered are noted.
2. **dbt** — one `dbt build` (the models and their tests) per layer: **staging** (typed, de-duplicated, bad
   rows quarantined with a reason), **marts** (features, interactions, CTR sets), **audit** (reconciliation).
   Each model's result is in the layer's log and the run report (`dbt.execution_mode: local` = a task per model).
3. **export_features** → **validate_marts** (Great Expectations): a failure stops the run before anything is published.
4. **train_als** (ALS: `implicit` in-process or Spark MLlib → top-K recommendations) | **segment_users**
   (scikit-learn) → **train_ctr_and_build_audiences** (logistic regression: scikit-learn in-process or Spark
   MLlib, calibrated → per-campaign audiences with
   frequency cap, treatment/control groups and bid hints) → **build_audience_exports** (treatment rows with
   personalised products and subject lines) | **measure_campaign_lift** (treatment vs control, from the
   audiences published on earlier nights).
5. **validate_outputs** (Great Expectations) → **publish** (atomic per partition: manifest + `_SUCCESS`,
   original ids restored) → **refresh_catalog_and_report** (retention of expired partitions, then the SQL views
   and the HTML run report: its "Run report" button opens it).

Without impressions, campaigns or consent, **train_ctr_and_build_audiences**, **build_audience_exports** and
**measure_campaign_lift** are skipped (the log and the report say why) and the rest publishes. A source's
quarantine share above `ingest.max_quarantine_share` stops the run at **validate_marts**. A task that fails
after its retries sends an alert (structured log line; Slack / e-mail through the providers' notifiers when the
Airflow connections `pm_alerts_slack` / `pm_alerts_smtp` exist).

Re-running a `ds` replaces its partitions whole; a failed run leaves the last good tables published.
Configuration: `config/platform.yaml` + `PM__SECTION__KEY` environment variables + the params below.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, Param, dag

from precision_marketing import pipeline
from precision_marketing.orchestration.dbt import dbt_group
from precision_marketing.orchestration.operators import (
    LandingFilesSensor,
    PublishOperator,
    ReportOperator,
    SparkStepOperator,
    StepOperator,
)
from precision_marketing.orchestration.schedule import DAG_ID, DS_TEMPLATE, dag_params, nightly_timetable, processed_ds
from precision_marketing.orchestration.tasks import default_args, landing_sensor_args, skippable, spark_step_args

PUBLISHED = [Asset(f"lake://marts/{table}") for table in pipeline.PUBLISHED_TABLES]


@dag(
    dag_id=DAG_ID,
    schedule=nightly_timetable(),  # the run after midnight processes the day that ended
    # early on purpose: a run for a ds before start_date silently runs no task, and historical exports
    # (online-retail: 2010-2011) are run by hand; catchup=False keeps the scheduler from backfilling them
    start_date=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
    catchup=False,  # backfills are explicit (`pm backfill`), never a surprise after a pause
    max_active_runs=1,
    max_active_tasks=1,  # DuckDB allows one writer; Spark jobs already use every core
    default_args=default_args(),
    tags=["marketing", "dbt", "spark", "nightly"],
    doc_md=__doc__,
    params={name: Param(**spec) for name, spec in dag_params().items()},
    user_defined_macros={"processed_ds": processed_ds},  # DS_TEMPLATE: the day a run processes
)
def nightly_marketing():
    def step(task_id, callable_, op_kwargs=None, operator=StepOperator, **operator_kwargs):
        return operator(
            task_id=task_id,
            python_callable=skippable(callable_),
            op_kwargs={"ds": DS_TEMPLATE, **(op_kwargs or {})},
            **operator_kwargs,
        )

    wait_for_landing_files = LandingFilesSensor(
        task_id="wait_for_landing_files", ds=DS_TEMPLATE, **landing_sensor_args()
    )
    check_raw = step("check_raw", pipeline.stage_and_check_raw)
    dbt = dbt_group("dbt")
    export_features = step("export_features", pipeline.export_features)
    validate_marts = step("validate_marts", pipeline.validate_marts)
    train_als = step("train_als", pipeline.train_als, operator=SparkStepOperator, **spark_step_args())
    segment_users = step("segment_users", pipeline.segment_users)
    train_ctr = step(
        "train_ctr_and_build_audiences",
        pipeline.train_ctr_and_build_audiences,
        operator=SparkStepOperator,
        **spark_step_args(),
    )
    build_exports = step("build_audience_exports", pipeline.build_audience_exports)
    measure_lift = step("measure_campaign_lift", pipeline.measure_campaign_lift)
    # runs when the audience steps were skipped for lack of their sources, not when a step failed
    validate_outputs = step("validate_outputs", pipeline.validate_outputs, trigger_rule="none_failed_min_one_success")
    publish = step("publish", pipeline.publish, {"run_id": "{{ run_id }}"}, operator=PublishOperator, outlets=PUBLISHED)
    report = step(
        "refresh_catalog_and_report",
        pipeline.refresh_catalog_and_report,
        {"run_id": "{{ run_id }}"},
        operator=ReportOperator,
    )

    (
        wait_for_landing_files
        >> check_raw
        >> dbt
        >> export_features
        >> validate_marts
        >> [train_als, segment_users, measure_lift]
    )
    segment_users >> train_ctr
    [train_als, train_ctr] >> build_exports
    # train_als and segment_users directly too: with the audience branch skipped they alone carry the night
    [train_als, segment_users, build_exports, measure_lift] >> validate_outputs >> publish >> report


nightly_marketing()
