-- Every raw events row of the history window, typed, with the first contract rule it breaks (NULL = valid).
-- Known users/products are the clean dimension snapshots of ds.
with raw_rows as (
    {{ read_raw('events') }}
),

known_users as (
    select user_id from {{ ref('stg_users') }}
),

known_products as (
    select product_id from {{ ref('stg_products') }}
),

typed as (
    select
        raw_values.event_id                             as event_id,
        {{ parse_integer('raw_values.user_id') }}       as user_id,
        {{ parse_integer('raw_values.product_id') }}    as product_id,
        raw_values.session_id                           as session_id,
        raw_values.event_type                           as event_type,
        {{ parse_timestamp('raw_values.event_ts') }}    as event_ts,
        cast(event_ts as date)                          as event_date,
        partition_date,
        source_file,
        source_row,
        raw_values
    from raw_rows
)

select
    typed.*,
    case
        when typed.event_id is null then 'event_id is null'
        when raw_values.user_id is null then 'user_id is null'
        when typed.user_id is null then 'malformed user_id'
        when known_users.user_id is null then 'unknown user_id'
        when raw_values.product_id is null then 'product_id is null'
        when typed.product_id is null then 'malformed product_id'
        when known_products.product_id is null then 'unknown product_id'
        when typed.event_type is null then 'event_type is null'
        when typed.event_type not in ('view', 'cart', 'purchase', 'favourite') then 'invalid event_type'
        when raw_values.event_ts is null then 'event_ts is null'
        when typed.event_ts is null then 'malformed event_ts'
        when typed.session_id is null then 'session_id is null'
    end as reject_reason
from typed
left join known_users on typed.user_id = known_users.user_id
left join known_products on typed.product_id = known_products.product_id
