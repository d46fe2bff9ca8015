-- CTR training set: one row per clean impression of the window (user_id = the internal user key), with the
-- user's features as of ds, the hour of the impression and the point-in-time recency of the user's last
-- interaction with the target category.
with impressions as (
    select user_keys.user_key, stg_impressions.*
    from {{ ref('stg_impressions') }} as stg_impressions
    -- checked_impressions rejects unknown users: the inner join keeps every clean impression
    inner join {{ ref('user_keys') }} as user_keys on stg_impressions.user_id = user_keys.user_id
),

campaigns as (
    select * from {{ ref('stg_campaigns') }}
),

user_features as (
    select * from {{ ref('user_features') }}
),

affinities as (
    select * from {{ ref('user_category_affinity') }}
),

category_days as (
    -- the days each user (internal key) interacted with each category
    select distinct user_id, category, event_date from {{ ref('int_weighted_events') }}
),

targeted as (
    select impressions.*, campaigns.channel, campaigns.target_category
    from impressions
    -- checked_impressions rejects unknown campaigns: the inner join keeps every clean impression
    inner join campaigns on impressions.campaign_id = campaigns.campaign_id
),

with_category_recency as (
    -- point in time: the last interaction with the category strictly before the impression's day
    select targeted.*, category_days.event_date as last_category_date
    from targeted
    asof left join category_days
        on targeted.user_key = category_days.user_id
        and targeted.target_category = category_days.category
        and targeted.impression_date > category_days.event_date
)

select
    impressions.impression_id,
    impressions.user_key                as user_id,
    impressions.campaign_id,
    impressions.impression_date,
    impressions.placement,
    impressions.channel,
    impressions.target_category,
    coalesce(affinities.affinity, 0)    as affinity,
    user_features.recency_days,
    user_features.frequency,
    user_features.monetary,
    cast(hour(impressions.impression_ts) as integer)    as impression_hour,
    -- no interaction in the window before the impression: one day more than the window
    cast(coalesce(date_diff('day', impressions.last_category_date, impressions.impression_date),
                  {{ history_days() }} + 1) as integer)  as category_recency_days,
    impressions.clicked
from with_category_recency as impressions
inner join user_features on impressions.user_key = user_features.user_id
left join affinities
    on impressions.user_key = affinities.user_id
    and impressions.target_category = affinities.category
