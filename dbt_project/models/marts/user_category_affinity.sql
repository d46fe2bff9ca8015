-- One row per (user_id, category) the user interacted with: the category's share of the user's
-- weighted interactions (sums to 1 per user).
with weighted_events as (
    select * from {{ ref('int_weighted_events') }}
    where weight > 0
),

category_weights as (
    select user_id, category, sum(weight) as category_weight
    from weighted_events
    group by user_id, category
)

select
    user_id,
    category,
    category_weight / sum(category_weight) over (partition by user_id) as affinity
from category_weights
