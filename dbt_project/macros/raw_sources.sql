{#- The contract's sources, declared once for dbt (docs/data_contract.md; expectations/raw_contract.py is the
    same contract in Python). `key` names the checked_ columns that identify a row (duplicates repeat it). -#}

{% macro raw_sources() -%}
    {{ return({
        'users':       {'kind': 'snapshot',  'key': ['user_id'],
                        'columns': ['user_id', 'email', 'country', 'signup_date']},
        'products':    {'kind': 'snapshot',  'key': ['product_id'],
                        'columns': ['product_id', 'title', 'category', 'brand', 'price']},
        'events':      {'kind': 'increment', 'key': ['event_key'],
                        'columns': ['event_id', 'user_id', 'product_id', 'event_type', 'event_ts', 'session_id']},
        'orders':      {'kind': 'increment', 'key': ['order_id', 'line_key'],
                        'columns': ['order_id', 'line', 'user_id', 'product_id', 'quantity', 'unit_price', 'order_ts']},
        'impressions': {'kind': 'increment', 'key': ['impression_id'],
                        'columns': ['impression_id', 'user_id', 'campaign_id', 'placement', 'impression_ts', 'clicked']},
        'campaigns':   {'kind': 'snapshot',  'key': ['campaign_id'],
                        'columns': ['campaign_id', 'name', 'target_category', 'channel', 'placement',
                                    'start_date', 'end_date', 'audience_size']},
        'consent':     {'kind': 'snapshot',  'key': ['user_id', 'channel', 'updated_ts'],
                        'columns': ['user_id', 'channel', 'status', 'updated_ts']},
    }) }}
{%- endmacro %}

{#- One row per landed data row of the source's partitions for this run (precision_marketing/ingest/land.py wrote
    them from the landing files through the mapping: text values, enumerations and timestamps normalised):
      raw_values     STRUCT of the contract's columns (VARCHAR, as landed)
      source_file    the landing file (raw/<source>/ds=D/<file>), source_row its 1-based data row
      ingest_error   why the row could not be read cleanly (undecodable bytes, field count, quoting, excluded), or NULL
      partition_date the landing partition's ds.
    Snapshots read ds only, increments the history window. A source that was not delivered reads as empty. -#}
{% macro read_landed(source_name) -%}
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

{#- SQL boolean: the source was delivered for this run (landed_sources). -#}
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

{% macro delivered(source_name) -%}
    (select coalesce(bool_or(delivered), false) from {{ ref('landed_sources') }} where source = '{{ source_name }}')
{%- endmacro %}
