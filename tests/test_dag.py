"""DAG integrity: the DAG file imports through a real DagBag, has the expected tasks and wiring,
and does no database or connection look-ups at parse time."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPECTED_STEPS = [
    "wait_for_landing_files",
    "check_raw",
    "export_features",
    "validate_marts",
    "train_als",
    "segment_users",
    "train_ctr_and_build_audiences",
    "build_audience_exports",
    "measure_campaign_lift",
    "validate_outputs",
    "publish",
    "refresh_catalog_and_report",
]


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    work = tmp_path_factory.mktemp("state") / "work"
    saved = dict(os.environ)
    os.environ["PM__WORK_DIR"] = str(work)
    try:
        from precision_marketing.config import load_config
        from precision_marketing.orchestration.dbt import dbt_parse
        from precision_marketing.orchestration.environment import airflow_env

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


def test_dag_has_the_steps_and_one_dbt_build_per_layer(dagbag):
    """dbt.execution_mode layers (the default): one `dbt build --selector <layer>` task per layer of
    dbt_project/selectors.yml, in that order (which test runs in which layer: tests/test_dbt_project.py)."""
    dag = dagbag.dags["nightly_marketing"]
    assert set(EXPECTED_STEPS) <= set(dag.task_ids)
    layers = [t for t in dag.tasks if t.task_id.startswith("dbt.")]
    assert [t.task_id for t in layers] == ["dbt.staging", "dbt.marts", "dbt.audit"]
    assert [t.selector for t in layers] == ["staging", "marts", "audit"]
    assert all(t.full_refresh == "{{ params.full_refresh }}" for t in layers)
    assert dag.get_task("dbt.marts").upstream_task_ids == {"dbt.staging"}
    assert dag.get_task("export_features").upstream_task_ids == {"dbt.audit"}


def test_dbt_local_mode_has_one_task_per_model(dagbag, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("PM__DBT__EXECUTION_MODE", "local")
    dag = DagBag(dag_folder=str(REPO / "dags")).dags["nightly_marketing"]
    dbt_tasks = {t for t in dag.task_ids if t.startswith("dbt.")}
    expected = {"dbt.stg_events_model_build", "dbt.user_features_model_build", "dbt.ctr_score_model_build"}
    assert expected <= dbt_tasks, dbt_tasks


def test_dag_wiring(dagbag):
    dag = dagbag.dags["nightly_marketing"]

    def downstream(task_id):
        return set(dag.get_task(task_id).downstream_task_ids)

    dbt_roots = [
        t.task_id
        for t in dag.tasks
        if t.task_id.startswith("dbt.") and not any(u.startswith("dbt.") for u in t.upstream_task_ids)
    ]
    assert dbt_roots and all(dag.get_task(t).upstream_task_ids == {"check_raw"} for t in dbt_roots)
    assert dag.get_task("check_raw").upstream_task_ids == {"wait_for_landing_files"}
    assert not dag.get_task("wait_for_landing_files").upstream_task_ids
    assert "validate_marts" in downstream("export_features")
    assert downstream("validate_marts") == {"train_als", "segment_users", "measure_campaign_lift"}
    assert downstream("segment_users") == {"train_ctr_and_build_audiences", "validate_outputs"}
    assert downstream("train_als") == {"build_audience_exports", "validate_outputs"}
    assert downstream("train_ctr_and_build_audiences") == {"build_audience_exports"}
    assert downstream("build_audience_exports") == downstream("measure_campaign_lift") == {"validate_outputs"}
    # with the audience branch skipped (no impressions/campaigns/consent) the night still validates and publishes
    assert dag.get_task("validate_outputs").trigger_rule == "none_failed_min_one_success"
    assert downstream("validate_outputs") == {"publish"}
    assert downstream("publish") == {"refresh_catalog_and_report"}
    assert dag.get_task("publish").outlets, "published tables are Assets for data-aware DAGs"
    assert dag.max_active_tasks == 1 and dag.catchup is False


def test_scheduled_run_processes_the_day_that_ended(dagbag):
    """The run the scheduler starts at midnight after day D has logical date (and ds) D, not D+1."""
    import pendulum
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import DataInterval, TimeRestriction

    timetable = coerce_to_core_timetable(dagbag.dags["nightly_marketing"].timetable)
    restriction = TimeRestriction(earliest=pendulum.datetime(2026, 1, 1), latest=None, catchup=True)
    after_22nd = timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(pendulum.datetime(2026, 11, 21), pendulum.datetime(2026, 11, 22)),
        restriction=restriction,
    )
    assert after_22nd.run_after == pendulum.datetime(2026, 11, 23)  # starts when the 22nd has ended
    assert after_22nd.data_interval.start == pendulum.datetime(2026, 11, 22)  # = logical date = ds
    # a manual trigger keeps its logical date; its data interval is the day before it
    manual = timetable.infer_manual_data_interval(run_after=pendulum.datetime(2026, 11, 22))
    assert manual.end == pendulum.datetime(2026, 11, 22)


def test_sensor_waits_in_reschedule_mode_with_configured_timing(dagbag):
    from precision_marketing.config import load_config

    sensor = dagbag.dags["nightly_marketing"].get_task("wait_for_landing_files")
    landing = load_config()["landing"]
    assert sensor.mode == "reschedule"
    assert sensor.poke_interval == landing["poke_seconds"] and sensor.timeout == 60 * landing["timeout_minutes"]
    assert sensor.ds == "{{ processed_ds(params, data_interval_start, dag_run) }}"


def test_every_task_alerts_on_failure_and_the_report_task_links_the_report(dagbag):
    from precision_marketing.orchestration.callbacks import on_task_failure
    from precision_marketing.orchestration.operators import RunReportLink

    dag = dagbag.dags["nightly_marketing"]
    for task in dag.tasks:
        callbacks = (
            task.on_failure_callback if isinstance(task.on_failure_callback, list) else [task.on_failure_callback]
        )
        assert on_task_failure in callbacks, task.task_id
    report = dag.get_task("refresh_catalog_and_report")
    [link] = report.operator_extra_links
    assert isinstance(link, RunReportLink) and link.name == "Run report"
    report.op_kwargs = {**report.op_kwargs, "ds": "2026-11-22"}  # as rendered at run time
    assert link.get_link(report, ti_key=None).endswith("/pm-reports/ds=2026-11-22/report.html")


def test_dag_params_are_typed(dagbag):
    params = dagbag.dags["nightly_marketing"].params
    assert params["top_k"] == 10 and params["holdout_days"] == 7


def test_spark_jobs_have_a_working_help():
    from precision_marketing.training.spark_submit import spark_env

    for job in ("als_recommendations", "ctr_audiences"):
        out = subprocess.run(
            [str(Path(sys.executable).with_name("spark-submit")), str(REPO / "spark_jobs" / f"{job}.py"), "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **spark_env()},  # spark_env: only what spark-submit adds
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert "--features-dir" in out.stdout


def test_dbt_runs_one_build_that_every_model_task_reports_on(dagbag, monkeypatch):
    """dbt.execution_mode watcher (an option; layers is the default): one `dbt build` (the producer) before every
    model's and tests' task, so `airflow dags test`, which runs one task at a time, never starts a watching task
    before the build."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("PM__DBT__EXECUTION_MODE", "watcher")
    dag = DagBag(dag_folder=str(REPO / "dags")).dags["nightly_marketing"]
    producer = dag.get_task("dbt.dbt_producer_watcher")
    assert producer.upstream_task_ids == {"check_raw"}
    model_tasks = [
        t for t in dag.tasks if t.task_id.startswith("dbt.") and t is not producer and not t.task_id.endswith("_done")
    ]
    assert {"dbt.stg_events.run", "dbt.stg_events.test", "dbt.interactions.run"} <= {t.task_id for t in model_tasks}
    upstream = {t.task_id: set(dag.get_task(t.task_id).get_flat_relative_ids(upstream=True)) for t in model_tasks}
    assert all(producer.task_id in ids for ids in upstream.values())
    # all_done: after the build whatever its outcome (`always` lets `airflow dags test` start them first)
    assert all(t.trigger_rule == "all_done" for t in model_tasks if t.upstream_task_ids == {producer.task_id})


def test_only_the_published_tables_are_assets(dagbag):
    """Cosmos would register every dbt relation as an Asset (and warn twice per task about URI rules)."""
    dag = dagbag.dags["nightly_marketing"]
    dbt_tasks = [t for t in dag.tasks if t.task_id.startswith("dbt.")]
    assert dbt_tasks and all(getattr(t, "emit_datasets", False) is False and not t.outlets for t in dbt_tasks)
    outlets = {a.uri for t in dag.tasks for a in t.outlets}
    assert outlets == {
        f"lake://marts/{t}"
        for t in ("recommendations", "audiences", "user_segments", "audience_exports", "campaign_lift")
    }


def test_manual_runs_process_the_last_complete_day_unless_a_day_is_given(dagbag):
    """The trigger form's default logical date is "now": the run processes yesterday, which has data."""
    import pendulum

    from precision_marketing.orchestration.schedule import processed_ds

    dag = dagbag.dags["nightly_marketing"]
    assert dag.params["ds"] is None and "last complete day" in dag.params.get_param("ds").description
    from airflow.serialization.encoders import coerce_to_core_timetable

    timetable = coerce_to_core_timetable(dag.timetable)
    now = pendulum.datetime(2026, 11, 29, 14, 29)
    interval = timetable.infer_manual_data_interval(run_after=now)
    assert processed_ds({}, interval.start) == "2026-11-28"
    assert processed_ds({"ds": "2026-11-02"}, interval.start) == "2026-11-02"  # a re-run of any day
    assert processed_ds({"ds": None}, None, type("Run", (), {"run_after": now})()) == "2026-11-28"
