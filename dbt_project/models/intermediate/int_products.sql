-- Every product of the run: the clean products snapshot when products are delivered, else every product seen in
-- the clean behaviour of the window, category 'uncategorised' and the median unit price of its order lines.
with products as (
    select product_id, title, category, brand, price from {{ ref('stg_products') }}
),

order_prices as (
    select product_id, median(unit_price) as price
    from {{ ref('stg_orders') }}
    where not is_return
    group by product_id
),

behaviour_products as (
    select product_id from {{ ref('stg_events') }}
    union
    select product_id from {{ ref('stg_orders') }}
)

select product_id, title, category, brand, price, true as delivered
from products
union all
select behaviour_products.product_id, null, 'uncategorised', null, order_prices.price, false
from behaviour_products
left join order_prices on behaviour_products.product_id = order_prices.product_id
where not {{ delivered('products') }}
