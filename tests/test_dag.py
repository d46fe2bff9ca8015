"""DAG integrity: the DAG file imports through a real DagBag, has the expected tasks and wiring,
and does no database or connection look-ups at parse time."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPECTED_STEPS = ["check_raw", "export_features", "validate_marts", "train_als", "segment_users",
                  "train_ctr_and_build_audiences", "build_audience_exports", "measure_campaign_lift",
                  "validate_outputs", "publish", "refresh_catalog_and_report"]


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    work = tmp_path_factory.mktemp("state") / "work"
    saved = dict(os.environ)
    os.environ["PM__WORK_DIR"] = str(work)
    try:
        from precision_marketing.config import load_config
        from precision_marketing.orchestration import airflow_env, dbt_parse

        dbt_parse(load_config())
        env = airflow_env(load_config())
        os.environ.update({k: v for k, v in env.items() if k.startswith("AIRFLOW")})
        from airflow.dag_processing.dagbag import DagBag

        yield DagBag(dag_folder=str(REPO / "dags"))
    finally:  # later tests start their own Airflow: leave no AIRFLOW_* or PM__* behind
        os.environ.clear()
        os.environ.update(saved)


def test_dag_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "nightly_marketing" in dagbag.dags


def test_dag_has_the_steps_and_one_dbt_task_per_model(dagbag):
    dag = dagbag.dags["nightly_marketing"]
    task_ids = set(dag.task_ids)
    assert set(EXPECTED_STEPS) <= task_ids
    dbt_tasks = [t for t in task_ids if t.startswith("dbt.")]
    assert any(t.endswith("stg_events_build") or "stg_events" in t for t in dbt_tasks), dbt_tasks
    assert any("user_features" in t for t in dbt_tasks) and any("ctr_score" in t for t in dbt_tasks)


def test_dag_wiring(dagbag):
    dag = dagbag.dags["nightly_marketing"]

    def downstream(task_id):
        return set(dag.get_task(task_id).downstream_task_ids)

    dbt_roots = [t.task_id for t in dag.tasks if t.task_id.startswith("dbt.") and not
                 any(u.startswith("dbt.") for u in t.upstream_task_ids)]
    assert dbt_roots and all(dag.get_task(t).upstream_task_ids == {"check_raw"} for t in dbt_roots)
    assert "validate_marts" in downstream("export_features")
    assert downstream("validate_marts") == {"train_als", "segment_users", "measure_campaign_lift"}
    assert downstream("segment_users") == {"train_ctr_and_build_audiences"}
    assert downstream("train_als") == downstream("train_ctr_and_build_audiences") == {"build_audience_exports"}
    assert downstream("build_audience_exports") == downstream("measure_campaign_lift") == {"validate_outputs"}
    assert downstream("validate_outputs") == {"publish"}
    assert downstream("publish") == {"refresh_catalog_and_report"}
    assert dag.get_task("publish").outlets, "published tables are Assets for data-aware DAGs"
    assert dag.max_active_tasks == 1 and dag.catchup is False


def test_dag_params_are_typed(dagbag):
    params = dagbag.dags["nightly_marketing"].params
    assert params["top_k"] == 10 and params["holdout_days"] == 7


def test_spark_jobs_have_a_working_help():
    from precision_marketing.spark_submit import spark_env

    for job in ("als_recommendations", "ctr_audiences"):
        out = subprocess.run([str(Path(sys.executable).with_name("spark-submit")), str(REPO / "spark_jobs" / f"{job}.py"),
                              "--help"], capture_output=True, text=True, timeout=120, env=spark_env())
        assert out.returncode == 0, out.stderr[-2000:]
        assert "--features-dir" in out.stdout
