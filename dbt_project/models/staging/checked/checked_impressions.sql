-- Every landed impressions row of the history window, typed, with the first contract rule it breaks (NULL = valid).
-- Known users/campaigns are the clean snapshots of ds (users: when delivered).
with raw_rows as (
    {{ read_landed('impressions') }}
),

known_users as (
    select user_id from {{ ref('stg_users') }}
),

known_campaigns as (
    select campaign_id from {{ ref('stg_campaigns') }}
),

delivery as (
    select {{ delivered('users') }} as users_delivered
),

typed as (
    select
        raw_values.impression_id                            as impression_id,
        {{ parse_id('raw_values.user_id', 'user_id') }}     as user_id,
        raw_values.campaign_id                              as campaign_id,
        raw_values.placement                                as placement,
        {{ parse_timestamp('raw_values.impression_ts') }}   as impression_ts,
        cast(impression_ts as date)                         as impression_date,
        case raw_values.clicked when '0' then 0 when '1' then 1 end as clicked,
        partition_date,
        source_file,
        source_row,
        ingest_error,
        raw_values
    from raw_rows
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
        when typed.placement not in ('homepage_banner', 'product_page', 'search_results', 'email', 'push')
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
