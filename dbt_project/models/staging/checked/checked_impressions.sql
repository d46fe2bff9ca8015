-- Every landed impressions row of the history window (typed_impressions), with the first contract rule it breaks
-- (NULL = valid). Known users/campaigns are the clean snapshots of ds (users: when delivered).
with typed as (
    select * from {{ ref('typed_impressions') }}
    where partition_date > date '{{ run_ds() }}' - {{ history_days() }} and partition_date <= date '{{ run_ds() }}'
),

known_users as (
    select user_id from {{ ref('stg_users') }}
),

known_campaigns as (
    select campaign_id from {{ ref('stg_campaigns') }}
),

delivery as (
    select {{ delivered('users') }} as users_delivered
)

select
    typed.*,
    case
        when typed.ingest_error is not null then typed.ingest_error
        when typed.impression_id is null then 'impression_id is null'
        {{ id_reasons('user_id', 'typed.user_id', 'known_users.user_id', 'delivery.users_delivered') }}
        when typed.campaign_id is null then 'campaign_id is null'
        when known_campaigns.campaign_id is null then 'unknown campaign_id'
        when typed.placement is null then 'placement is null'
        when typed.placement not in {{ sql_values(var('placements')) }}
            then 'invalid placement'
        when raw_values.impression_ts is null then 'impression_ts is null'
        when typed.impression_ts is null then 'malformed impression_ts'
        when typed.impression_ts > {{ future_limit('typed.partition_date') }} then 'impression_ts in the future'
        when raw_values.clicked is null then 'clicked is null'
        when typed.clicked is null then 'invalid clicked'
    end as reject_reason
from typed
cross join delivery
left join known_users on typed.user_id = known_users.user_id
left join known_campaigns on typed.campaign_id = known_campaigns.campaign_id
