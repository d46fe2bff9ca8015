{#- Custom schemas are used as they are (staging, quarantine, marts, audit), not prefixed by the target schema:
    those relation names are the interface the pipeline exports from. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}
