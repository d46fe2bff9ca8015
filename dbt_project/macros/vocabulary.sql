{#- The domain vocabulary: dbt_project.yml vars (event_weights, placements, campaign_channels, consent_channels,
    consent_statuses, clicked_values), the one place it is declared (precision_marketing/contract.py reads the same
    vars; tests/test_vocabulary.py keeps every consumer in agreement). -#}

{#- The event types: the keys of var event_weights, in their declared order. -#}
{% macro event_types() -%}
    {{ return(var('event_weights') | list) }}
{%- endmacro %}

{#- A SQL list of string literals for IN: ['a', "b'c"] -> ('a', 'b''c'). -#}
{% macro sql_values(names) -%}
    {%- if names is string or names | length == 0 -%}
        {{ exceptions.raise_compiler_error("sql_values needs a non-empty list of names, got " ~ names) }}
    {%- endif -%}
    ({%- for name in names -%}
        '{{ name | string | replace("'", "''") }}'{{ ", " if not loop.last }}
    {%- endfor -%})
{%- endmacro %}
