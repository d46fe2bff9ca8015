-- One row per product of the run (int_products) on its internal key: its title (for personalised content), its
-- interaction counts over the window and its popularity rank.
with products as (
    select product_keys.product_key, int_products.*
    from {{ ref('int_products') }} as int_products
    inner join {{ ref('product_keys') }} as product_keys on int_products.product_id = product_keys.product_id
),

weighted_events as (
    select * from {{ ref('int_weighted_events') }}
    where weight > 0
),

product_activity as (
    select
        product_id,
        count(*) filter (where event_type = 'view')        as n_views,
        count(*) filter (where event_type = 'cart')        as n_carts,
        count(*) filter (where event_type = 'purchase')    as n_purchases,
        count(distinct user_id)                            as n_users,
        sum(weight)                                        as total_weight
    from weighted_events
    group by product_id
)

select
    products.product_key                                        as product_id,
    products.title,
    products.category,
    products.brand,
    products.price,
    cast(coalesce(product_activity.n_views, 0) as integer)      as n_views,
    cast(coalesce(product_activity.n_carts, 0) as integer)      as n_carts,
    cast(coalesce(product_activity.n_purchases, 0) as integer)  as n_purchases,
    cast(coalesce(product_activity.n_users, 0) as integer)      as n_users,
    -- "most interacted" = highest total event weight; product_id breaks ties so ranks are unique
    cast(row_number() over (
        order by coalesce(product_activity.total_weight, 0) desc, products.product_key
    ) as integer)                                               as popularity_rank
from products
left join product_activity on products.product_key = product_activity.product_id
