-- Implicit feedback for ALS: one row per (user_id, product_id, event_date).
with weighted_events as (
    select * from {{ ref('int_weighted_events') }}
)

select
    user_id,
    product_id,
    event_date,
    sum(weight)                                                 as weight,
    cast(count(*) filter (where event_type = 'purchase') as integer) as n_purchases
from weighted_events
group by user_id, product_id, event_date
