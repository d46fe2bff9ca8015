-- What was delivered for ds: one row per contract source, as the check_raw step (precision_marketing/ingest/land.py)
-- recorded it. A dimension that was not delivered is derived from behaviour (int_users, int_products).
select source, kind, role, delivered, files, rows, rows_ds, ingest_errors
from read_json(
    '{{ (landed_dir() ~ "/_status/ds=" ~ run_ds() ~ ".ndjson") | replace("'", "''") }}',
    format = 'newline_delimited',
    columns = { source: 'VARCHAR', kind: 'VARCHAR', role: 'VARCHAR', delivered: 'BOOLEAN', files: 'BIGINT',
                rows: 'BIGINT', rows_ds: 'BIGINT', ingest_errors: 'BIGINT', partitions_cached: 'BIGINT' }
)
