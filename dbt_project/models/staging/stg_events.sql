-- Clean events: valid rows of checked_events, one per event_key (the event_id, or the row content without one);
-- a repeated key is a duplicate of the first delivered row.
with valid_rows as (
    select * exclude (raw_values, reject_reason, ingest_error)
    from {{ ref('checked_events') }}
    where reject_reason is null
)

select *
from valid_rows
qualify row_number() over (partition by event_key order by source_file, source_row) = 1
