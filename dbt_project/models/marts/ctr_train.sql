-- CTR training set: one row per clean impression of the window, with the user's features as of ds
-- (user_id = the internal user key).
with impressions as (
    select user_keys.user_key, stg_impressions.*
    from {{ ref('stg_impressions') }} as stg_impressions
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
)

select
    impressions.impression_id,
    impressions.user_key                as user_id,
    impressions.campaign_id,
    impressions.impression_date,
    impressions.placement,
    campaigns.channel,
    campaigns.target_category,
    coalesce(affinities.affinity, 0)    as affinity,
    user_features.recency_days,
    user_features.frequency,
    user_features.monetary,
    impressions.clicked
from impressions
-- checked_impressions rejects unknown users and campaigns: the inner joins keep every clean impression
inner join campaigns on impressions.campaign_id = campaigns.campaign_id
inner join user_features on impressions.user_key = user_features.user_id
left join affinities
    on impressions.user_key = affinities.user_id
    and campaigns.target_category = affinities.category
