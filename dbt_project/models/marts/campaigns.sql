-- The clean campaigns snapshot of ds, one row per campaign_id.
select
    campaign_id,
    name,
    target_category,
    channel,
    placement,
    start_date,
    end_date,
    audience_size
from {{ ref('stg_campaigns') }}
