-- Clean events of the window with their product's category and price and their implicit-feedback weight
-- (dbt var event_weights). Shared by the interaction, affinity, user and item features.
with events as (
    select * from {{ ref('stg_events') }}
),

products as (
    select product_id, category, price from {{ ref('stg_products') }}
)

select
    events.event_id,
    events.user_id,
    events.product_id,
    events.session_id,
    events.event_type,
    events.event_ts,
    events.event_date,
    products.category,
    products.price,
    {{ event_weight('events.event_type') }} as weight
from events
-- checked_events rejects unknown products, so the inner join keeps every clean event
inner join products on events.product_id = products.product_id
