{#- The contract's sources for dbt, built from var raw_contract (dbt_project.yml, the one place the contract is
    declared; precision_marketing/contract.py reads the same var): per source its kind (snapshot | increment),
    `key` (its checked_key: the checked_ columns that identify a row; duplicates repeat it) and `columns` (the
    contract's column names, in file order). -#}

{% macro raw_sources() -%}
    {%- set sources = {} -%}
    {%- for name, source in var('raw_contract').items() -%}
        {%- do sources.update({name: {
            'kind': source.kind,
            'key': source.checked_key | list,
            'columns': source.columns | map(attribute='name') | list,
        }}) -%}
    {%- endfor -%}
    {{ return(sources) }}
{%- endmacro %}

{#- One row per landed data row of the source's partitions for this run (precision_marketing/ingest/land.py wrote
    them from the landing files through the mapping: text values, enumerations and timestamps normalised):
      raw_values     STRUCT of the contract's columns (VARCHAR, as landed)
      source_file    the landing file (raw/<source>/ds=D/<file>), source_row its 1-based data row
      ingest_error   why the row could not be read cleanly (undecodable bytes, field count, quoting, excluded), or NULL
      partition_date the landing partition's ds.
    Snapshots read ds only, increments the history window. A source that was not delivered reads as empty. -#}
{% macro read_landed(source_name) -%}
    {%- do source('landed', source_name) -%}  {#- graph edge only (models/staging/_landed.yml) #}
    {%- set source = raw_sources()[source_name] -%}
    {%- set ds = run_ds() -%}
    {%- set partitions = ('ds=' ~ ds) if source.kind == 'snapshot' else 'ds=*' -%}
    {%- set path = landed_dir() ~ '/' ~ source_name ~ '/' ~ partitions ~ '/*.parquet' %}
    select
        {{ landed_columns(source) }}
    from read_parquet('{{ path | replace("'", "''") }}', hive_partitioning = true, hive_types = {'ds': 'DATE'})
    {%- if source.kind == 'increment' %}
    where ds > date '{{ ds }}' - {{ history_days() }} and ds <= date '{{ ds }}'
    {%- endif %}
{%- endmacro %}

{#- The columns every reader of the landed zone selects: the contract's columns as one raw_values STRUCT, the
    row's lineage and its landing partition. -#}
{% macro landed_columns(source) -%}
        {
            {%- for column in source.columns %}
            '{{ column }}': "{{ column }}"{{ "," if not loop.last }}
            {%- endfor %}
        } as raw_values,
        source_file,
        source_row,
        ingest_error,
        ds as partition_date
{%- endmacro %}

{#- SQL boolean: the source was delivered for this run (landed_sources). -#}
{% macro delivered(source_name) -%}
    (select coalesce(bool_or(delivered), false) from {{ ref('landed_sources') }} where source = '{{ source_name }}')
{%- endmacro %}

{#- The lineage columns every checked_ snapshot model keeps from raw_rows (read_landed), after its typed columns
    (one per line: call it as `{{ snapshot_lineage_columns() | indent(8) }}` in a select list indented by 8). -#}
{% macro snapshot_lineage_columns() -%}
partition_date,
source_file,
source_row,
ingest_error,
raw_values
{%- endmacro %}
