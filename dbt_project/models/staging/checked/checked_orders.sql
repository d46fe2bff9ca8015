-- Every landed order line of the history window (typed_orders), with the first contract rule it breaks (NULL =
-- valid). A negative quantity is a return. Known users/products as for events.
with typed as (
    select * from {{ ref('typed_orders') }}
    where partition_date > date '{{ run_ds() }}' - {{ history_days() }} and partition_date <= date '{{ run_ds() }}'
),

known_users as (
    select user_id from {{ ref('stg_users') }}
),

known_products as (
    select product_id from {{ ref('stg_products') }}
),

delivery as (
    select {{ delivered('users') }} as users_delivered, {{ delivered('products') }} as products_delivered
)

select
    typed.*,
    case
        when typed.ingest_error is not null then typed.ingest_error
        when typed.order_id is null then 'order_id is null'
        {{ id_reasons('user_id', 'typed.user_id', 'known_users.user_id', 'delivery.users_delivered') }}
        {{ id_reasons('product_id', 'typed.product_id', 'known_products.product_id', 'delivery.products_delivered') }}
        when raw_values.quantity is null then 'quantity is null'
        when typed.quantity is null then 'malformed quantity'
        when typed.quantity = 0 then 'zero quantity'
        when abs(typed.quantity) > {{ max_abs_quantity() }} then 'absurd quantity (beyond {{ max_abs_quantity() }} either way)'
        when raw_values.unit_price is null then 'unit_price is null'
        when typed.unit_price is null then 'malformed unit_price'
        when typed.unit_price <= 0 then 'non-positive unit_price'
        when typed.unit_price > {{ max_price() }} then 'absurd unit_price (above {{ max_price() }})'
        when raw_values.order_ts is null then 'order_ts is null'
        when typed.order_ts is null then 'malformed order_ts'
        when typed.order_ts > {{ future_limit('typed.partition_date') }} then 'order_ts in the future'
    end as reject_reason
from typed
cross join delivery
left join known_users on typed.user_id = known_users.user_id
left join known_products on typed.product_id = known_products.product_id
