-- Every landed products row of the ds snapshot, typed, with the first contract rule it breaks (NULL = valid).
with raw_rows as (
    {{ read_landed('products') }}
),

typed as (
    select
        {{ parse_id('raw_values.product_id', 'product_id') }}   as product_id,
        raw_values.title                                        as title,
        raw_values.category                                     as category,
        raw_values.brand                                        as brand,
        {{ parse_decimal('raw_values.price') }}                 as price,
        {{ snapshot_lineage_columns() | indent(8) }}
    from raw_rows
)

select
    *,
    case
        when ingest_error is not null then ingest_error
        when raw_values.product_id is null then 'product_id is null'
        when product_id is null then {{ id_problem('raw_values.product_id', 'product_id', 'product_id') }}
        when category is null then 'category is null'
        when raw_values.price is null then 'price is null'
        when price is null then 'malformed price'
        when price <= 0 then 'non-positive price'
        when price > {{ max_price() }} then 'absurd price (above {{ max_price() }})'
    end as reject_reason
from typed
