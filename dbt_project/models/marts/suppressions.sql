-- Users who may not be contacted on a channel: their latest consent row for (user_id, channel) says opt_out.
with consent as (
    select * from {{ ref('stg_consent') }}
),

latest_consent as (
    -- stg_consent is unique per (user_id, channel, updated_ts), so "latest" is unambiguous
    select user_id, channel, status
    from consent
    qualify row_number() over (partition by user_id, channel order by updated_ts desc) = 1
)

select user_id, channel
from latest_consent
where status = 'opt_out'
