"""The nightly run as production runs it: Airflow's scheduler (LocalExecutor), DAG processor and API server,
started once for this module, on small synthetic data.

- the scheduled run the scheduler creates processes the day that ended, waits for its landing files in
  reschedule mode, and on timeout fails naming the missing files and alerts a Slack webhook connection (the
  provider's notifier, posting to 127.0.0.1);
- a run triggered through the REST API with params runs task by task and publishes;
- `pm backfill` over three days runs the two days without a run and publishes each day once;
- a real browser (Debian's chromium) logs in, opens the DAG, its trigger form and the finished run, and
  follows the run's report link to the HTML report.
"""

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import duckdb
import pytest
from standalone_cluster import StandaloneCluster, free_port

from precision_marketing.pipeline import PUBLISHED_TABLES
from precision_marketing.publish.partitions import published_partitions, read_manifest
from precision_marketing.storage import LocalStorage

pytestmark = pytest.mark.e2e

DAG = "nightly_marketing"
D1, D2, D3 = "2026-11-20", "2026-11-21", "2026-11-22"
PASSWORD = "scheduler-test-password"
PM = str(Path(sys.executable).with_name("pm"))


class Api:
    """The Airflow REST API (v2) with a JWT from /auth/token, as any client would use it."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.token = self.request("POST", "/auth/token", {"username": "admin", "password": PASSWORD}, auth=False)[
            "access_token"
        ]

    def request(self, method, path, body=None, auth=True, raw=False):
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = response.read()
            return (response.status, payload) if raw else json.loads(payload)

    def wait(self, what, check, timeout, every=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def run(self, run_id):
        return self.request("GET", f"/api/v2/dags/{DAG}/dagRuns/{run_id}")

    def wait_finished(self, run_id, timeout):
        return self.wait(
            f"run {run_id} to finish", lambda: (r := self.run(run_id))["state"] in ("success", "failed") and r, timeout
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory, webhook, request):
    from precision_marketing.config import load_config
    from precision_marketing.orchestration.servers import AirflowServers

    state = tmp_path_factory.mktemp("scheduler")
    # the Spark steps go to a real standalone cluster, named by the connection spark_default
    (state / "spark_cluster").mkdir()
    cluster = StandaloneCluster(state / "spark_cluster")
    cluster.start()
    request.addfinalizer(cluster.stop)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PM__", "AIRFLOW"))}
    env.update(
        {
            "PM__WORK_DIR": str(state / "work"),
            "PM__LAKE__LOCAL_ROOT": str(state / "lake"),
            "AIRFLOW_HOME": str(state / "airflow"),
            "AIRFLOW_CONN_SPARK_DEFAULT": cluster.connection(),
            "PM__SPARK__SHUFFLE_PARTITIONS": "2",
            "PM__ALS__MAX_ITER": "5",
            "PM__ALS__TUNING__MAX_FITS": "2",
            "PM__CTR__MAX_ITER": "20",  # this test is about Airflow
            # the CTR model in the job's driver (its reads and audiences still run on the cluster): MLlib LR on the
            # cluster took ~78 s a night here; the engines' parity is test_spark_jobs' business. ALS stays on MLlib.
            "PM__CTR__ENGINE": "sklearn",
            "PM__ORCHESTRATION__RETRIES": "0",
            # a poke interval well above the scheduler loop: a shorter one races the executor event of the previous
            # poke (Airflow then fails the re-queued sensor); production uses minutes
            "PM__LANDING__POKE_SECONDS": "20",
            "PM__LANDING__TIMEOUT_MINUTES": "0.75",
        }
    )
    # the failure alert's channel: a Slack webhook connection, sent by the provider's notifier (reporting/alerts.py)
    base, token = webhook[0].split("/hooks/")
    env["AIRFLOW_CONN_PM_ALERTS_SLACK"] = json.dumps(
        {"conn_type": "slackwebhook", "host": base, "password": "hooks/" + token}
    )
    generated = subprocess.run(
        [PM, "generate", "--ds", D3, "--users", "300", "--items", "80", "--days", "14", "--seed", "11"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert generated.returncode == 0, generated.stderr[-3000:]
    setup = subprocess.run([PM, "setup"], env=env, capture_output=True, text=True)
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    (state / "airflow" / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"admin": PASSWORD}))

    servers = AirflowServers(
        load_config(environ=env),
        free_port(),
        state / "airflow-logs",
        extra_env={k: v for k, v in env.items() if k.startswith(("PM_", "AIRFLOW_HOME", "AIRFLOW_CONN_"))},
    )
    servers.start()
    try:
        api = Api(servers.base_url)
        api.wait("the DAG processor to parse the DAG", lambda: _dag_known(api), timeout=180, every=3)
        yield {
            "api": api,
            "servers": servers,
            "env": {**env, "AIRFLOW__API__BASE_URL": servers.base_url},
            "state": state,
            "lake": LocalStorage(state / "lake"),
            "alerts": webhook[1],
            "cluster": cluster,
        }
    finally:
        servers.stop()


def _dag_known(api):
    try:
        return api.request("GET", f"/api/v2/dags/{DAG}")
    except urllib.error.HTTPError:
        return None


def test_scheduled_run_processes_the_day_that_ended_and_alerts_when_its_files_never_land(stack):
    api = stack["api"]
    api.request("PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False})
    # unpaused with catchup off, the scheduler creates the run of the latest complete day: yesterday (UTC)
    today = dt.datetime.now(dt.UTC).date()
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    runs = api.wait(
        "the scheduled run",
        lambda: api.request("GET", f"/api/v2/dags/{DAG}/dagRuns?run_type=scheduled")["dag_runs"],
        timeout=120,
        every=3,
    )
    [run] = runs
    assert run["logical_date"].startswith(yesterday) and run["data_interval_end"].startswith(today.isoformat())
    sensor_path = f"/api/v2/dags/{DAG}/dagRuns/{run['dag_run_id']}/taskInstances/wait_for_landing_files"
    # nothing landed for yesterday: the sensor gives its slot back between pokes...
    api.wait(
        "the sensor to be rescheduled",
        lambda: api.request("GET", sensor_path)["state"] == "up_for_reschedule",
        timeout=120,
        every=2,
    )
    assert api.request("GET", sensor_path)["rendered_fields"]["ds"] == yesterday
    # ...and after its timeout the run fails, naming what is missing, and the failure alert goes out
    finished = api.wait_finished(run["dag_run_id"], timeout=240)
    assert finished["state"] == "failed"
    assert api.request("GET", sensor_path)["state"] == "failed"
    alert = api.wait(
        "the failure alert",
        lambda: [
            a["body"]["text"] for a in stack["alerts"] if "\ntask_id: wait_for_landing_files" in a["body"]["text"]
        ],
        timeout=30,
        every=1,
    )[0]
    assert alert.startswith(f"[ERROR] {DAG} ds={yesterday}: task wait_for_landing_files failed")
    assert f"landing files for ds={yesterday} still missing" in alert
    assert f"raw/events/ds={yesterday}/ (a file matching" in alert


@pytest.fixture(scope="module")
def triggered(stack):
    api = stack["api"]
    run = api.request(
        "POST",
        f"/api/v2/dags/{DAG}/dagRuns",
        {"logical_date": f"{D2}T00:00:00Z", "conf": {"ds": D2, "top_k": 5}, "note": "scheduler e2e test"},
    )
    finished = api.wait_finished(run["dag_run_id"], timeout=1500)
    return {**stack, "run": finished}


def test_run_triggered_through_the_rest_api_with_params_publishes(triggered):
    api, lake, run = triggered["api"], triggered["lake"], triggered["run"]
    tasks = api.request("GET", f"/api/v2/dags/{DAG}/dagRuns/{run['dag_run_id']}/taskInstances?limit=100")
    states = {t["task_id"]: t["state"] for t in tasks["task_instances"]}
    assert run["state"] == "success", {t: s for t, s in states.items() if s != "success"}
    assert {"check_raw", "dbt.staging", "dbt.marts", "dbt.audit", "train_ctr_and_build_audiences", "publish"} <= set(
        states
    )
    assert set(states.values()) == {"success"}
    assert run["conf"] == {"ds": D2, "top_k": 5}
    manifest = read_manifest(lake, "recommendations", D2)
    assert manifest["run_id"] == run["dag_run_id"]
    # the published tables' Asset events carry the run's headline figures
    events = api.request("GET", f"/api/v2/assets/events?source_run_id={quote(run['dag_run_id'])}")["asset_events"]
    extras = {e["extra"]["table"]: e["extra"] for e in events}
    assert set(extras) == set(PUBLISHED_TABLES)
    assert extras["recommendations"]["rows"] == manifest["row_count"] and extras["recommendations"]["ds"] == D2
    assert extras["audiences"]["run_id"] == run["dag_run_id"] and 0 < extras["audiences"]["ctr_auc"] <= 1
    files = [str(lake.path(f"marts/recommendations/ds={D2}/{f['file']}")) for f in manifest["files"]]
    assert {r[0] for r in duckdb.sql(f"select distinct rank from read_parquet({files})").fetchall()} == set(range(1, 6))


def task_log(api, run_id: str, task_id: str) -> str:
    """A task's log as the UI shows it, through the REST API."""
    path = f"/api/v2/dags/{DAG}/dagRuns/{quote(run_id)}/taskInstances/{task_id}/logs/1?full_content=true"
    return "\n".join(str(line.get("event", "")) for line in api.request("GET", path)["content"])


def test_both_spark_jobs_are_submitted_by_the_provider_to_the_clusters_connection(triggered):
    """spark_default points at a standalone cluster: the Spark provider's hook submits both jobs there (its command
    line and spark-submit's output in the task log, with the cluster's application id) and the executors run in
    the worker's JVMs."""
    api, cluster, run = triggered["api"], triggered["cluster"], triggered["run"]
    finished = {app["id"]: app for app in cluster.state()["completedapps"]}
    for task in ("train_als", "train_ctr_and_build_audiences"):
        log = task_log(api, run["dag_run_id"], task)
        assert f"Spark-Submit cmd: {Path(sys.executable).with_name('spark-submit')} --master {cluster.url}" in log
        [app_id] = re.findall(rf"spark application (app-[\d-]+) on {re.escape(cluster.url)}", log)
        assert finished[app_id]["state"] == "FINISHED", finished
        assert list(cluster.worker_dir.glob(f"{app_id}/*/stderr")), f"no executor of {app_id} ran on the worker"


def test_run_report_is_linked_from_the_run_and_served_behind_the_login(triggered):
    api, run = triggered["api"], triggered["run"]
    links = api.request(
        "GET", f"/api/v2/dags/{DAG}/dagRuns/{run['dag_run_id']}/taskInstances/refresh_catalog_and_report/links"
    )
    assert links["extra_links"]["Run report"] == f"{api.base_url}/pm-reports/ds={D2}/report.html"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(links["extra_links"]["Run report"], timeout=30)
    assert anonymous.value.code == 401
    status, page = api.request("GET", f"/pm-reports/ds={D2}/report.html", raw=True)
    assert status == 200 and page.count(b"<svg") >= 3 and f"ds {D2}".encode() in page
    status, index = api.request("GET", "/pm-reports/", raw=True)
    assert f'href="ds={D2}/report.html"'.encode() in index


def test_trigger_form_default_processes_yesterday_and_a_day_can_be_rerun_without_conflict(triggered):
    api = triggered["api"]
    today = dt.datetime.now(dt.UTC)
    yesterday = (today.date() - dt.timedelta(days=1)).isoformat()

    def sensor(run_id):
        return api.request("GET", f"/api/v2/dags/{DAG}/dagRuns/{quote(run_id)}/taskInstances/wait_for_landing_files")

    # the form's defaults: logical date "now", no day given -> the last complete day (nothing landed there: its
    # sensor waits; the time-out's failure is the scheduled run's test, so this run is stopped once it waits)
    default = api.request("POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": today.isoformat()})
    api.wait(
        "the default run's sensor to wait",
        lambda: sensor(default["dag_run_id"]).get("state") == "up_for_reschedule",
        timeout=300,
        every=2,
    )
    assert sensor(default["dag_run_id"])["rendered_fields"]["ds"] == yesterday
    api.request("PATCH", f"/api/v2/dags/{DAG}/dagRuns/{quote(default['dag_run_id'])}", {"state": "failed"})
    api.wait_finished(default["dag_run_id"], timeout=120)
    # an out-of-range param is refused with a reason (the form clamps numbers; the API says why)
    with pytest.raises(urllib.error.HTTPError) as refused:
        api.request("POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {"top_k": 0}})
    assert refused.value.code == 400
    assert "Invalid input for param top_k: 0 is less than the minimum of 1" in refused.value.read().decode()
    # re-running a day that already has a run: a new logical date, the day as a param -> accepted, no 409
    rerun = api.request(
        "POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": dt.datetime.now(dt.UTC).isoformat(), "conf": {"ds": D2}}
    )
    api.wait("the re-run's sensor", lambda: sensor(rerun["dag_run_id"]).get("state") == "success", timeout=300)
    assert sensor(rerun["dag_run_id"])["rendered_fields"]["ds"] == D2
    api.request("PATCH", f"/api/v2/dags/{DAG}/dagRuns/{quote(rerun['dag_run_id'])}", {"state": "failed"})  # enough
    api.wait_finished(rerun["dag_run_id"], timeout=120)


def test_backfill_runs_the_missing_days_and_publishes_each_day_once(triggered):
    lake = triggered["lake"]
    rest_run_id = triggered["run"]["dag_run_id"]
    result = subprocess.run(
        [PM, "backfill", "--from", D1, "--to", D3],
        env=triggered["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=2400,
    )
    assert result.returncode == 0, result.stdout[-5000:]
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines if line.startswith("  ds=")] == [f"ds={D1}", f"ds={D3}"], result.stdout
    assert f"already run, skipped (use --reprocess failed|completed to run again): {D2}" in result.stdout
    assert "no scheduler answers" not in result.stdout  # it used the running scheduler
    for table in ("recommendations", "audiences", "user_segments"):
        assert published_partitions(lake, table) == [D1, D2, D3]
    run_ids = {ds: read_manifest(lake, "recommendations", ds)["run_id"] for ds in (D1, D2, D3)}
    assert run_ids[D2] == rest_run_id  # the day that had a run is not published again
    assert run_ids[D1].startswith("backfill__") and run_ids[D3].startswith("backfill__")
    assert lake.exists(f"reports/ds={D3}/report.html")
    history = json.loads(lake.get_bytes(f"reports/ds={D3}/report.json"))
    assert history["ds"] == D3


def test_browser_logs_in_triggers_form_and_finished_run_with_its_report(triggered, browser, tmp_path):
    api, run = triggered["api"], triggered["run"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{api.base_url}/dags/{DAG}")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/dags/{DAG}**")
    page.get_by_text(DAG).first.wait_for()
    page.screenshot(path=str(tmp_path / "dag.png"))

    # the trigger form shows the typed params with their titles and defaults
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    assert dialog.get_by_label("Recommendations per user (K)").input_value() == "10"
    assert dialog.get_by_label("Holdout days for model evaluation (CTR; ALS with split time)").input_value() == "7"
    page.screenshot(path=str(tmp_path / "trigger.png"))
    page.keyboard.press("Escape")

    # the finished run, and its HTML report in the run's "Run report" tab (served by the plugin, in an iframe)
    page.goto(f"{api.base_url}/dags/{DAG}/runs/{quote(run['dag_run_id'])}")
    page.get_by_text("Run report", exact=True).first.click()
    page.wait_for_url("**/plugin/run_report")
    report = page.frame_locator("iframe")
    report.get_by_text(f"Nightly run report — ds {D2}").wait_for()
    assert report.locator("figure.plot svg").count() >= 4
    page.screenshot(path=str(tmp_path / "run_report.png"))
    page.close()
