-- Every landed events row of the history window (typed_events), with the first contract rule it breaks (NULL =
-- valid). Known users/products are the clean snapshots of ds (when delivered; otherwise they derive from behaviour).
with typed as (
    select * from {{ ref('typed_events') }}
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
        {{ id_reasons('user_id', 'typed.user_id', 'known_users.user_id', 'delivery.users_delivered') }}
        {{ id_reasons('product_id', 'typed.product_id', 'known_products.product_id', 'delivery.products_delivered') }}
        when typed.event_type is null then 'event_type is null'
        when typed.event_type not in {{ sql_values(event_types()) }} then 'invalid event_type'
        when raw_values.event_ts is null then 'event_ts is null'
        when typed.event_ts is null then 'malformed event_ts'
        when typed.event_ts > {{ future_limit('typed.partition_date') }} then 'event_ts in the future'
    end as reject_reason
from typed
cross join delivery
left join known_users on typed.user_id = known_users.user_id
left join known_products on typed.product_id = known_products.product_id
