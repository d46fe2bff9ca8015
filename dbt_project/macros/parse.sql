{#- Strict parsers for landed VARCHAR values: NULL when the text is not exactly of the contract's format
    (try_cast alone would accept '1.5' as the integer 2, or 'nan' as a price). Timestamps arrive as
    'YYYY-MM-DDTHH:MM:SSZ' (UTC) when the ingest step could parse them (mapping formats, ISO-8601, epoch);
    a value it could not parse is left as delivered and is malformed here. -#}

{% macro parse_integer(column) -%}
    case when regexp_full_match({{ column }}, '\s*-?[0-9]+\s*') then try_cast({{ column }} as bigint) end
{%- endmacro %}

{% macro parse_decimal(column) -%}
    case when regexp_full_match({{ column }}, '\s*-?[0-9]+(\.[0-9]+)?\s*') then try_cast({{ column }} as double) end
{%- endmacro %}

{% macro parse_date(column) -%}
    cast(try_strptime({{ column }}, '%Y-%m-%d') as date)
{%- endmacro %}

{#- The landed canonical UTC text, whole seconds or with the fraction ingest kept (ingest/land.py). -#}
{% macro parse_timestamp(column) -%}
    try_strptime({{ column }}, ['%Y-%m-%dT%H:%M:%SZ', '%Y-%m-%dT%H:%M:%S.%fZ'])
{%- endmacro %}

{#- Ids of any shape (var id_types: integer | string per id). The canonical text of an id, or NULL:
      integer  a 64-bit integer, written without sign, leading zeros or a '.0' tail ('017850.0' -> '17850')
      string   the trimmed text, at most 128 characters (SKUs such as '85123A')
    Internal integer keys are assigned later (user_keys, product_keys); published tables carry these ids. -#}
{% macro id_type(id_name) -%}
    {%- set id_type = var('id_types', {}).get(id_name, 'integer') -%}
    {%- if id_type not in ('integer', 'string') -%}
        {{ exceptions.raise_compiler_error("dbt var id_types." ~ id_name ~ " must be 'integer' or 'string', got '" ~ id_type ~ "'") }}
    {%- endif -%}
    {{ return(id_type) }}
{%- endmacro %}

{% macro parse_id(column, id_name) -%}
    {%- if id_type(id_name) == 'integer' -%}
        cast(try_cast(regexp_extract(trim({{ column }}), '^\+?(-?[0-9]+)(\.0+)?$', 1) as bigint) as varchar)
    {%- else -%}
        case when length(trim({{ column }})) between 1 and 128 then trim({{ column }}) end
    {%- endif -%}
{%- endmacro %}

{#- Why a delivered (non-NULL) id is not usable, given its parsed value (parse_id), or NULL. -#}
{% macro id_problem(raw_column, parsed_column, id_name) -%}
    {%- if id_type(id_name) == 'integer' -%}
        case
            when {{ parsed_column }} is not null then null
            when regexp_full_match(trim({{ raw_column }}), '\+?-?[0-9]+(\.0+)?') then '{{ id_name }} beyond the 64-bit integer range'
            else 'malformed {{ id_name }}'
        end
    {%- else -%}
        case
            when {{ parsed_column }} is not null then null
            when trim({{ raw_column }}) = '' then '{{ id_name }} is null'
            else '{{ id_name }} longer than 128 characters'
        end
    {%- endif -%}
{%- endmacro %}

{#- Latest plausible time of a row delivered on `day`: the end of that day plus var future_tolerance_hours. -#}
{% macro future_limit(day) -%}
    (cast({{ day }} as timestamp) + interval 1 day + to_hours(cast({{ var('future_tolerance_hours') }} as integer)))
{%- endmacro %}

{#- Values beyond these are data errors, not business (docs/data_contract.md). -#}
{% macro max_price() %}1000000{% endmacro %}
{% macro max_abs_quantity() %}100000{% endmacro %}
{% macro max_audience_size() %}100000000{% endmacro %}

{#- The reject reasons of an id column, in order: missing, unusable (id_problem), unknown. `known` is the id
    looked up in the clean snapshot (NULL when absent), `delivered` whether that snapshot was delivered: when it
    was not, every id is known (the dimension is derived from behaviour). -#}
{% macro id_reasons(id_name, parsed, known, delivered) -%}
        when raw_values.{{ id_name }} is null then '{{ id_name }} is null'
        when {{ parsed }} is null then {{ id_problem('raw_values.' ~ id_name, parsed, id_name) }}
        when {{ delivered }} and {{ known }} is null then 'unknown {{ id_name }}'
{%- endmacro %}
