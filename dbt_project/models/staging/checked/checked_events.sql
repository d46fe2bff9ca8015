-- Every landed events row of the history window, typed, with the first contract rule it breaks (NULL = valid).
-- Known users/products are the clean snapshots of ds (when delivered; otherwise they derive from behaviour).
with raw_rows as (
    {{ read_landed('events') }}
),

known_users as (
    select user_id from {{ ref('stg_users') }}
),

known_products as (
    select product_id from {{ ref('stg_products') }}
),

delivery as (
    select {{ delivered('users') }} as users_delivered, {{ delivered('products') }} as products_delivered
),

typed as (
    select
        raw_values.event_id                                 as event_id,
        {{ parse_id('raw_values.user_id', 'user_id') }}     as user_id,
        {{ parse_id('raw_values.product_id', 'product_id') }} as product_id,
        raw_values.session_id                               as session_id,
        raw_values.event_type                               as event_type,
        {{ parse_timestamp('raw_values.event_ts') }}        as event_ts,
        cast(event_ts as date)                              as event_date,
        partition_date,
        source_file,
        source_row,
        ingest_error,
        raw_values
    from raw_rows
)

select
    typed.*,
    -- a row without an event_id is identified by its content: an exact repeat is a duplicate
    coalesce(typed.event_id, 'row:' || md5(concat_ws('|', typed.user_id, typed.product_id, typed.event_type,
                                                     typed.event_ts, typed.session_id))) as event_key,
    case
        when typed.ingest_error is not null then typed.ingest_error
        {{ id_reasons('user_id', 'typed.user_id', 'known_users.user_id', 'delivery.users_delivered') }}
        {{ id_reasons('product_id', 'typed.product_id', 'known_products.product_id', 'delivery.products_delivered') }}
        when typed.event_type is null then 'event_type is null'
        when typed.event_type not in ('view', 'cart', 'purchase', 'favourite') then 'invalid event_type'
        when raw_values.event_ts is null then 'event_ts is null'
        when typed.event_ts is null then 'malformed event_ts'
        when typed.event_ts > {{ future_limit('typed.partition_date') }} then 'event_ts in the future'
    end as reject_reason
from typed
cross join delivery
left join known_users on typed.user_id = known_users.user_id
left join known_products on typed.product_id = known_products.product_id
