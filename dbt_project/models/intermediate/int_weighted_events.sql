-- Clean behaviour of the window, one row per event or order line, on internal keys (user_keys, product_keys),
-- with the product's category and price, the amount spent and the implicit-feedback weight (dbt var
-- event_weights). An order line is a purchase (session = the order); a return (negative quantity) has weight 0
-- and a negative amount. Shared by the interaction, affinity, user and item features.
with events as (
    select * from {{ ref('stg_events') }}
),

order_lines as (
    select * from {{ ref('stg_orders') }}
),

products as (
    select product_id, category, price from {{ ref('int_products') }}
),

behaviour as (
    select
        event_key                                               as event_id,
        user_id,
        product_id,
        -- without a session id, a user's events of one day are one session
        coalesce(session_id, user_id || ':' || cast(event_date as varchar)) as session_id,
        event_type,
        event_ts,
        event_date,
        cast(null as double)                                    as amount
    from events
    union all
    select
        'order:' || order_id || ':' || line_key,
        user_id,
        product_id,
        order_id,
        case when is_return then 'return' else 'purchase' end,
        order_ts,
        order_date,
        quantity * unit_price
    from order_lines
)

select
    behaviour.event_id,
    user_keys.user_key                                          as user_id,
    product_keys.product_key                                    as product_id,
    behaviour.session_id,
    behaviour.event_type,
    behaviour.event_ts,
    behaviour.event_date,
    products.category,
    products.price,
    -- what the user spent: the order line's amount, else (events) the product's price
    coalesce(behaviour.amount, products.price)                  as amount,
    {{ event_weight('behaviour.event_type') }}                  as weight
from behaviour
-- checked_events/orders reject unknown users and products, and the key tables hold every user and product of
-- the run, so the inner joins keep every clean row
inner join products on behaviour.product_id = products.product_id
inner join {{ ref('user_keys') }} as user_keys on behaviour.user_id = user_keys.user_id
inner join {{ ref('product_keys') }} as product_keys on behaviour.product_id = product_keys.product_id
