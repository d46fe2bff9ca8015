"""The nightly precision-marketing platform's Python package, laid out by the night's stages.

    dags/nightly_marketing.py            wiring only
      -> orchestration/                  Airflow's side: schedule, task behaviour, Cosmos (dbt), operators, servers
      -> pipeline.py                     the night's steps, one function per task (cli.py: `pm`, the same steps)
        -> ingest/                       raw zone -> landed zone: plan + file checks, reading, mapping, adapters
           (dbt_project/)                landed -> staging | quarantine -> marts (SQL lives there)
           expectations/                 GX checkpoints and the raw-contract check (rules live there)
           training/                     spark_jobs/ on a master (ALS, CTR), scikit-learn segments
           campaigns/                    audience exports, lift against the control group
           publish/                      atomic partitions on the lake, delivered ids, the SQL catalog
           reporting/                    run report, campaign section, alerts
           privacy/                      pm forget (erasure register, every zone) and nightly retention
          -> contract.py, storage.py, config/   shared pieces: the raw contract and vocabulary, the lake, settings

Imports only run downward in this drawing (tests/test_layout.py checks it); spark_jobs/ imports nothing of
this package, so spark-submit ships it alone."""
