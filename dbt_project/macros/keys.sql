{#- The body of an append-only key table (marts/keys/): the ids of `ids_model` not yet in the table get the next
    integer keys, in id order (numeric order for integer ids), with the ds they were first seen. Materialized
    incremental (append) with full_refresh false in dbt_project.yml, so a key never changes. -#}
{% macro append_keys(ids_model, id_column, key_column) %}
with run_ids as (
    select distinct {{ id_column }} from {{ ref(ids_model) }}
),

{% if is_incremental() %}
new_ids as (
    select {{ id_column }} from run_ids
    where {{ id_column }} not in (select {{ id_column }} from {{ this }})
),

last_key as (
    select coalesce(max({{ key_column }}), 0) as max_key from {{ this }}
)
{% else %}
new_ids as (
    select {{ id_column }} from run_ids
),

last_key as (
    select 0 as max_key
)
{% endif %}

select
    cast(last_key.max_key + row_number() over (
        order by try_cast(new_ids.{{ id_column }} as hugeint) nulls last, new_ids.{{ id_column }}) as integer
    ) as {{ key_column }},
    new_ids.{{ id_column }},
    date '{{ run_ds() }}' as first_seen_ds
from new_ids
cross join last_key
{% endmacro %}
