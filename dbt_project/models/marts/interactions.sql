-- Implicit feedback for the recommenders: one row per (user_id, product_id, event_hour), on internal keys. The
-- hour grain lets the evaluation hold out the last hours of a short data set, not only whole days.
-- Returns (weight 0) are no feedback.
with weighted_events as (
    select * from {{ ref('int_weighted_events') }}
    where weight > 0
)

select
    user_id,
    product_id,
    event_date,
    date_trunc('hour', event_ts)                                as event_hour,
    sum(weight)                                                 as weight,
    cast(count(*) filter (where event_type = 'purchase') as integer) as n_purchases
from weighted_events
group by user_id, product_id, event_date, date_trunc('hour', event_ts)
