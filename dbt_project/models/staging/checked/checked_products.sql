-- Every raw products row of the ds snapshot, typed, with the first contract rule it breaks (NULL = valid).
with raw_rows as (
    {{ read_raw('products') }}
),

typed as (
    select
        {{ parse_integer('raw_values.product_id') }}  as product_id,
        raw_values.title                              as title,
        raw_values.category                           as category,
        raw_values.brand                              as brand,
        {{ parse_decimal('raw_values.price') }}       as price,
        source_file,
        source_row,
        raw_values
    from raw_rows
)

select
    *,
    case
        when raw_values.product_id is null then 'product_id is null'
        when product_id is null then 'malformed product_id'
        when category is null then 'category is null'
        when raw_values.price is null then 'price is null'
        when price is null then 'malformed price'
        when price <= 0 then 'non-positive price'
    end as reject_reason
from typed
