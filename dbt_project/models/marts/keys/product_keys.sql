-- Internal integer key of every product ever seen: append-only (materialized incremental, never fully refreshed),
-- so a product keeps its key across nights. New ids get the next keys in id order (numeric order for integer ids). Marts and the Spark jobs use
-- the key (32-bit, whatever the shape of the delivered id); publishing joins the original id back.
with run_products as (
    select distinct product_id from {{ ref('int_products') }}
),

{% if is_incremental() %}
new_products as (
    select product_id from run_products
    where product_id not in (select product_id from {{ this }})
),

last_key as (
    select coalesce(max(product_key), 0) as max_key from {{ this }}
)
{% else %}
new_products as (
    select product_id from run_products
),

last_key as (
    select 0 as max_key
)
{% endif %}

select
    cast(last_key.max_key + row_number() over (
        order by try_cast(new_products.product_id as hugeint) nulls last, new_products.product_id) as integer) as product_key,
    new_products.product_id,
    date '{{ run_ds() }}' as first_seen_ds
from new_products
cross join last_key
