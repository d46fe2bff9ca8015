{#- The raw landing files, declared once (docs/data_contract.md; expectations/raw_contract.py is the same
    contract in Python). Snapshots are read for ds only, increments for the history window. -#}

{% macro raw_sources() -%}
    {{ return({
        'users':       {'kind': 'snapshot',  'key': ['user_id'],
                        'columns': ['user_id', 'email', 'country', 'signup_date']},
        'products':    {'kind': 'snapshot',  'key': ['product_id'],
                        'columns': ['product_id', 'title', 'category', 'brand', 'price']},
        'events':      {'kind': 'increment', 'key': ['event_id'],
                        'columns': ['event_id', 'user_id', 'product_id', 'event_type', 'event_ts', 'session_id']},
        'impressions': {'kind': 'increment', 'key': ['impression_id'],
                        'columns': ['impression_id', 'user_id', 'campaign_id', 'placement', 'impression_ts', 'clicked']},
        'campaigns':   {'kind': 'snapshot',  'key': ['campaign_id'],
                        'columns': ['campaign_id', 'name', 'target_category', 'channel', 'placement',
                                    'start_date', 'end_date', 'audience_size']},
        'consent':     {'kind': 'snapshot',  'key': ['user_id', 'channel', 'updated_ts'],
                        'columns': ['user_id', 'channel', 'status', 'updated_ts']},
    }) }}
{%- endmacro %}

{#- One row per raw data row of the source's partitions for this run:
      raw_values  STRUCT of the contract's columns as delivered (VARCHAR; extra columns are ignored)
      source_file the landing file, source_row the 1-based data row within it, partition_date its ds.
    A header-only file gives no rows. Malformed lines never fail the read: short lines are padded with
    NULLs and then rejected by the checked model's rules. -#}
{% macro read_raw(source_name) -%}
    {%- set source = raw_sources()[source_name] -%}
    {%- set ds = run_ds() -%}
    {%- if source.kind == 'snapshot' -%}
        {%- set path = raw_dir() ~ '/' ~ source_name ~ '/ds=' ~ ds ~ '/' ~ source_name ~ '.csv' -%}
    {%- else -%}
        {%- set path = raw_dir() ~ '/' ~ source_name ~ '/ds=*/' ~ source_name ~ '.csv' -%}
    {%- endif %}
    with scanned as (
        -- row_number() over () follows the scan order (files in path order, rows in file order)
        select *, row_number() over () as scan_row
        from read_csv(
            '{{ path | replace("'", "''") }}',
            all_varchar = true, header = true, filename = true,
            hive_partitioning = true, hive_types = {'ds': 'DATE'},
            union_by_name = true, null_padding = true, strict_mode = false
        )
        {%- if source.kind == 'increment' %}
        where ds > date '{{ ds }}' - {{ history_days() }} and ds <= date '{{ ds }}'
        {%- endif %}
    )
    select
        {
            {%- for column in source.columns %}
            '{{ column }}': "{{ column }}"{{ "," if not loop.last }}
            {%- endfor %}
        } as raw_values,
        filename as source_file,
        scan_row - min(scan_row) over (partition by filename) + 1 as source_row,
        ds as partition_date
    from scanned
{%- endmacro %}
