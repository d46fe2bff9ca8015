-- Clean campaigns: valid rows of checked_campaigns, one per (campaign_id); a repeated key is a duplicate of the first delivered row.
with valid_rows as (
    select * exclude (raw_values, reject_reason, ingest_error)
    from {{ ref('checked_campaigns') }}
    where reject_reason is null
)

select *
from valid_rows
qualify row_number() over (partition by campaign_id order by source_file, source_row) = 1
