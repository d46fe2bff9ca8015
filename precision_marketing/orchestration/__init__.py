"""Orchestration: what Airflow needs from the platform and nothing else. `schedule` is the night's calendar and
run parameters, `tasks` how every task behaves (retries, callbacks, skips), `dbt` the Cosmos task group,
`operators` the sensor and the publish/report operators, `callbacks` the failure alert and task timings,
`environment` and `servers` an in-repo Airflow and its processes, `airflow_plugin` the report pages. The DAG
file and `pm` import from here; nothing below (the steps and the stages) imports orchestration."""
