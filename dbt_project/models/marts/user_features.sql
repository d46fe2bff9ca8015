-- One row per clean user: RFM and behaviour features over the window, and the activation identifier.
with users as (
    select * from {{ ref('stg_users') }}
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
        sum(price) filter (where event_type = 'purchase')                   as monetary,
        count(*) filter (where event_type = 'view')                         as n_views,
        count(*) filter (where event_type = 'cart')                         as n_carts,
        count(*) filter (where event_type = 'purchase')                     as n_purchases,
        count(*) filter (where event_type = 'favourite')                    as n_favourites
    from weighted_events
    group by user_id
),

top_categories as (
    -- ties go to the alphabetically first category, so the result is deterministic
    select user_id, category, affinity
    from affinities
    qualify row_number() over (partition by user_id order by affinity desc, category) = 1
)

select
    users.user_id,
    users.country,
    users.signup_date,
    sha256(lower(trim(users.email)))                                        as email_sha256,
    activity.user_id is not null                                            as has_history,
    cast(date_diff('day', coalesce(activity.last_event_date, users.signup_date),
                   date '{{ run_ds() }}') as integer)                        as recency_days,
    cast(coalesce(activity.frequency, 0) as integer)                        as frequency,
    cast(coalesce(activity.monetary, 0) as double)                          as monetary,
    cast(coalesce(activity.n_views, 0) as integer)                          as n_views,
    cast(coalesce(activity.n_carts, 0) as integer)                          as n_carts,
    cast(coalesce(activity.n_purchases, 0) as integer)                      as n_purchases,
    cast(coalesce(activity.n_favourites, 0) as integer)                     as n_favourites,
    top_categories.category                                                 as top_category,
    cast(coalesce(top_categories.affinity, 0) as double)                    as top_category_affinity
from users
left join activity on users.user_id = activity.user_id
left join top_categories on users.user_id = top_categories.user_id
