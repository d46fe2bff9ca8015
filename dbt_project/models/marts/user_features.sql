-- One row per user of the run (int_users) on its internal key: RFM and behaviour features over the window,
-- and the activation identifier (NULL without an e-mail). monetary is net of returns, never below 0.
with users as (
    select user_keys.user_key, int_users.*
    from {{ ref('int_users') }} as int_users
    inner join {{ ref('user_keys') }} as user_keys on int_users.user_id = user_keys.user_id
),

weighted_events as (
    select * from {{ ref('int_weighted_events') }}
),

affinities as (
    select * from {{ ref('user_category_affinity') }}
),

activity as (
    select
        user_id,
        max(event_date)                                                     as last_event_date,
        count(distinct session_id) filter (where event_type = 'purchase')   as frequency,
        sum(amount) filter (where event_type in ('purchase', 'return'))     as monetary,
        count(*) filter (where event_type = 'view')                         as n_views,
        count(*) filter (where event_type = 'cart')                         as n_carts,
        count(*) filter (where event_type = 'purchase')                     as n_purchases,
        count(*) filter (where event_type = 'favourite')                    as n_favourites,
        count(*) filter (where event_type = 'return')                       as n_returns
    from weighted_events
    group by user_id
),

top_categories as (
    -- ties go to the alphabetically first category, so the result is deterministic
    select user_id, category, affinity
    from affinities
    qualify row_number() over (partition by user_id order by affinity desc, category asc) = 1
)

select
    users.user_key                                                          as user_id,
    users.country,
    users.signup_date,
    sha256(lower(trim(users.email)))                                        as email_sha256,
    activity.user_id is not null                                            as has_history,
    -- never negative: checked_ models quarantine timestamps in the future
    cast(greatest(date_diff('day', coalesce(activity.last_event_date, users.signup_date,
                                     date '{{ run_ds() }}' - {{ history_days() }}),
                            date '{{ run_ds() }}'), 0) as integer)         as recency_days,
    cast(coalesce(activity.frequency, 0) as integer)                        as frequency,
    cast(greatest(coalesce(activity.monetary, 0), 0) as double)             as monetary,
    cast(coalesce(activity.n_views, 0) as integer)                          as n_views,
    cast(coalesce(activity.n_carts, 0) as integer)                          as n_carts,
    cast(coalesce(activity.n_purchases, 0) as integer)                      as n_purchases,
    cast(coalesce(activity.n_favourites, 0) as integer)                     as n_favourites,
    cast(coalesce(activity.n_returns, 0) as integer)                        as n_returns,
    top_categories.category                                                 as top_category,
    cast(coalesce(top_categories.affinity, 0) as double)                    as top_category_affinity
from users
left join activity on users.user_key = activity.user_id
left join top_categories on users.user_key = top_categories.user_id
