{#- Strict parsers for raw VARCHAR values: NULL when the text is not exactly of the contract's format
    (try_cast alone would accept '1.5' as the integer 2, or 'nan' as a price). -#}

{% macro parse_integer(column) -%}
    case when regexp_full_match({{ column }}, '\s*-?[0-9]+\s*') then try_cast({{ column }} as bigint) end
{%- endmacro %}

{% macro parse_decimal(column) -%}
    case when regexp_full_match({{ column }}, '\s*-?[0-9]+(\.[0-9]+)?\s*') then try_cast({{ column }} as double) end
{%- endmacro %}

{% macro parse_date(column) -%}
    cast(try_strptime({{ column }}, '%Y-%m-%d') as date)
{%- endmacro %}

{% macro parse_timestamp(column) -%}
    try_strptime({{ column }}, '%Y-%m-%d %H:%M:%S')
{%- endmacro %}
