-- CTR scoring candidates: one row per (campaign active on ds, user not suppressed for its channel or 'all').
-- Messages go out the day after ds: category recency counts the days from the last interaction to ds + 1,
-- as ctr_train counts them to the impression's day. The send hour is the campaign's (Spark job settings).
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

last_category_events as (
    select user_id, category, max(event_date) as last_category_date
    from {{ ref('int_weighted_events') }}
    group by user_id, category
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
    cast(coalesce(date_diff('day', last_category_events.last_category_date, date '{{ run_ds() }}' + 1),
                  {{ history_days() }} + 1) as integer)  as category_recency_days,
    candidates.email_sha256
from candidates
left join affinities
    on candidates.user_id = affinities.user_id
    and candidates.target_category = affinities.category
left join last_category_events
    on candidates.user_id = last_category_events.user_id
    and candidates.target_category = last_category_events.category
