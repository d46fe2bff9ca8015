-- CTR scoring candidates: one row per (campaign active on ds, user not suppressed for its channel or 'all').
with active_campaigns as (
    select *
    from {{ ref('stg_campaigns') }}
    where date '{{ run_ds() }}' between start_date and end_date
),

user_features as (
    select * from {{ ref('user_features') }}
),

suppressions as (
    select * from {{ ref('suppressions') }}
),

affinities as (
    select * from {{ ref('user_category_affinity') }}
),

candidates as (
    select active_campaigns.*, user_features.*
    from active_campaigns
    cross join user_features
    where not exists (
        select 1
        from suppressions
        where suppressions.user_id = user_features.user_id
            and suppressions.channel in (active_campaigns.channel, 'all')
    )
)

select
    candidates.user_id,
    candidates.campaign_id,
    candidates.placement,
    candidates.channel,
    candidates.target_category,
    coalesce(affinities.affinity, 0)    as affinity,
    candidates.recency_days,
    candidates.frequency,
    candidates.monetary,
    candidates.email_sha256
from candidates
left join affinities
    on candidates.user_id = affinities.user_id
    and candidates.target_category = affinities.category
