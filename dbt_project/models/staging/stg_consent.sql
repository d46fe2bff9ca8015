-- Clean consent: valid rows of checked_consent, one per (user_id, channel, updated_ts); a repeated key is a duplicate of the first delivered row.
with valid_rows as (
    select * exclude (raw_values, reject_reason, ingest_error, suppress_channel, suppress_ts)
    from {{ ref('checked_consent') }}
    where reject_reason is null
)

select *
from valid_rows
qualify row_number() over (partition by user_id, channel, updated_ts order by source_file, source_row) = 1
