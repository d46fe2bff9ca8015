"""Ingest: the first stage of the night. Landing files arrive in the raw zone (`arrivals` says which ones a run
still waits for); `plan` decides which files a day's run reads and checks them at file level against the raw
contract; `files` reads them record by record; `land` normalises them through the export's `mapping` into the
landed zone dbt reads; `adapters` turn public exports (online-retail) into landing files by day."""
