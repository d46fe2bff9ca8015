{#- The run's vars, validated when a model executes (so `dbt parse` works without them). -#}

{% macro run_ds() -%}
    {%- set ds = var('ds', none) -%}
    {%- if ds is none -%}
        {%- if execute -%}
            {{ exceptions.raise_compiler_error("dbt var 'ds' is required: --vars '{ds: YYYY-MM-DD, landed_dir: /abs/path/landed}'") }}
        {%- endif -%}
        {{ return('1970-01-01') }}
    {%- endif -%}
    {#- YAML turns an unquoted 2026-01-01 into a date: normalise to text -#}
    {%- set ds = ds | string -%}
    {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', ds) -%}
        {{ exceptions.raise_compiler_error("dbt var 'ds' must be a date YYYY-MM-DD, got '" ~ ds ~ "'") }}
    {%- endif -%}
    {{ return(ds) }}
{%- endmacro %}

{% macro landed_dir() -%}
    {%- set path = var('landed_dir', none) -%}
    {%- if path is none -%}
        {%- if execute -%}
            {{ exceptions.raise_compiler_error("dbt var 'landed_dir' is required: the folder the check_raw step (precision_marketing/ingest/land.py) landed the raw zone into") }}
        {%- endif -%}
        {{ return('landed') }}
    {%- endif -%}
    {{ return((path | string).rstrip('/')) }}
{%- endmacro %}

{% macro history_days() -%}
    {%- set days = var('history_days') | int -%}
    {%- if days < 1 -%}
        {{ exceptions.raise_compiler_error("dbt var 'history_days' must be a positive integer, got '" ~ var('history_days') ~ "'") }}
    {%- endif -%}
    {{ return(days) }}
{%- endmacro %}

{#- The weight of one event of this type in interactions and affinities (dbt var event_weights).
    A return (an order line with a negative quantity) adds no implicit feedback: weight 0. -#}
{% macro event_weight(event_type_column) -%}
    {%- set weights = var('event_weights') -%}
    case {{ event_type_column }}
        {%- for event_type in weights %}
        when '{{ event_type }}' then cast({{ weights[event_type] }} as double)
        {%- endfor %}
        when 'return' then cast(0 as double)
    end
{%- endmacro %}
