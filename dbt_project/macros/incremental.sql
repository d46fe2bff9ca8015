{#- Incremental staging of the increment sources (events, orders, impressions), by landing partition.

    typed_<source>    incremental: a night types only the landed partitions it has not typed yet, or whose
                      fingerprint changed (landing files, mapping or ingest version: a late or replayed delivery),
                      or all of them when the typing SQL itself changed (typing_fingerprint); partitions that left
                      the window or whose landing partition is gone are deleted (strategy replace_landed_partitions).
    checked_<source>  a view: typed rows + the contract's rules, against tonight's snapshots (stg_users, ...), so a
                      rule that depends on them is evaluated for the whole window every night, as a full refresh would.
    stg_<source>      incremental: which valid row is the first delivered of its key is recomputed over the whole
                      window on narrow columns; only rows that stopped being first (replaced, out of the window, newly
                      invalid) are deleted and only new first rows written (first_delivered_rows + apply_changes).
`dbt build --full-refresh` rebuilds all three from the landed partitions of the window. -#}

{#- The landed partitions of this run's window for a source, as precision_marketing/ingest/land.py recorded them:
    a list of {partition_date, fingerprint}. -#}
{% macro landed_partitions_file() -%}
    {{ return((landed_dir() ~ '/_status/ds=' ~ run_ds() ~ '.partitions.ndjson') | replace("'", "''")) }}
{%- endmacro %}

{% macro landed_partitions_sql(source_name) -%}
    select cast(partition_date as date) as partition_date, fingerprint
    from read_json('{{ landed_partitions_file() }}', format = 'newline_delimited',
                   columns = {source: 'VARCHAR', partition_date: 'VARCHAR', fingerprint: 'VARCHAR', rows: 'BIGINT'})
    where source = '{{ source_name }}'
{%- endmacro %}

{#- Var sqlfluff_lint (set by .sqlfluff only): lint without landed data, as if nothing were landed. -#}
{% macro landed_partitions(source_name) -%}
    {%- if not execute or var('sqlfluff_lint', false) -%}{{ return([]) }}{%- endif -%}
    {%- set rows = run_query(landed_partitions_sql(source_name) ~ ' order by partition_date') -%}
    {{ return(rows.rows | map('list') | list) }}
{%- endmacro %}

{#- The landed partitions a typed_ model must (re)type tonight: all of them unless incremental; else those whose
    (partition_date, landing fingerprint, typing fingerprint) is not in the table yet. -#}
{% macro partitions_to_type(source_name, typing_fingerprint) -%}
    {%- set landed = landed_partitions(source_name) -%}
    {%- if not (execute and is_incremental()) -%}{{ return(landed) }}{%- endif -%}
    {%- set typed = run_query('select distinct cast(partition_date as varchar), landing_fingerprint from ' ~ this
                              ~ " where typing_fingerprint = '" ~ typing_fingerprint ~ "'") -%}
    {%- set done = [] -%}
    {%- for row in typed.rows -%}{%- do done.append(row[0] ~ '/' ~ row[1]) -%}{%- endfor -%}
    {%- set todo = [] -%}
    {%- for partition in landed -%}
        {%- if (partition[0] | string) ~ '/' ~ partition[1] not in done -%}{%- do todo.append(partition) -%}{%- endif -%}
    {%- endfor -%}
    {{ return(todo) }}
{%- endmacro %}

{#- read_landed for an explicit list of partitions ([partition_date, fingerprint]), with the landing fingerprint of
    each row; no partition = no row (the columns typed, so the model's schema does not depend on it). -#}
{% macro read_landed_partitions(source_name, partitions) -%}
    {%- do source('landed', source_name) -%}  {#- graph edge only (models/staging/_landed.yml) #}
    {%- set source = raw_sources()[source_name] -%}
    {%- if partitions | length == 0 %}
    select
        { {%- for column in source.columns %}'{{ column }}': cast(null as varchar){{ "," if not loop.last }}{% endfor -%} } as raw_values,
        cast(null as varchar) as source_file, cast(null as bigint) as source_row, cast(null as varchar) as ingest_error,
        cast(null as date) as partition_date, cast(null as varchar) as landing_fingerprint
    where false
    {%- else %}
    {%- set paths = [] -%}
    {%- for partition in partitions -%}
        {%- do paths.append("'" ~ (landed_dir() ~ '/' ~ source_name ~ '/ds=' ~ partition[0] ~ '/*.parquet') | replace("'", "''") ~ "'") -%}
    {%- endfor %}
    select
        {{ landed_columns(source) }},
        case ds
            {%- for partition in partitions %}
            when date '{{ partition[0] }}' then '{{ partition[1] }}'
            {%- endfor %}
        end as landing_fingerprint
    from read_parquet([{{ paths | join(', ') }}], hive_partitioning = true, hive_types = {'ds': 'DATE'})
    {%- endif %}
{%- endmacro %}

{#- The lineage columns every typed_ model keeps from raw_rows (the last of its typed columns). -#}
{% macro typed_lineage_columns() -%}
partition_date, source_file, source_row, ingest_error, landing_fingerprint, raw_values
{%- endmacro %}

{#- The body of a typed_<source> model: `typed_select` selects the typed columns from `raw_rows` (the landed rows of
    the partitions to type), keeping its lineage columns (source_file, source_row, ingest_error, partition_date,
    landing_fingerprint). Its rendered SQL is the typing fingerprint: a change to it retypes every partition. -#}
{% macro typed_increment(source_name, typed_select) -%}
{%- set typing_fingerprint = local_md5(typed_select) -%}
with raw_rows as (
    {{ read_landed_partitions(source_name, partitions_to_type(source_name, typing_fingerprint)) }}
),

typed as (
    {{ typed_select }}
)

select
    typed.*,
    '{{ typing_fingerprint }}' as typing_fingerprint,
    -- never reused: a partition typed again gets new ids, so the stg_ models see its rows as new
    {% if is_incremental() %}(select coalesce(max(landed_row_id), 0) from {{ this }}) + {% endif %}row_number() over () as landed_row_id
from typed
{%- endmacro %}

{#- Incremental strategy of the typed_ models (config landed_source): partitions tonight retyped replace their old
    rows; partitions no longer landed in the window (or landed with another fingerprint) are deleted. -#}
{% macro get_incremental_replace_landed_partitions_sql(arg_dict) -%}
    {%- set source_name = config.get('landed_source') -%}
    {%- if source_name is none -%}
        {{ exceptions.raise_compiler_error("incremental_strategy replace_landed_partitions needs config landed_source") }}
    {%- endif -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set temp = arg_dict['temp_relation'] -%}
    {%- set columns = arg_dict['dest_columns'] | map(attribute='quoted') | join(', ') -%}
    delete from {{ target }}
    where partition_date in (select distinct partition_date from {{ temp }})
       or not exists (
           select 1 from ({{ landed_partitions_sql(source_name) }}) as landed
           where landed.partition_date = {{ target }}.partition_date
             and landed.fingerprint = {{ target }}.landing_fingerprint
       );
    insert into {{ target }} ({{ columns }}) select {{ columns }} from {{ temp }}
{%- endmacro %}

{#- The body of a checked_<source> view of an increment source: the typed_<source> rows of the history window,
    each with the first contract rule it breaks (reject_reason, NULL = valid). `known` lists the clean snapshots
    the source's ids are looked up in, as (snapshot, id column) pairs: known_<snapshot> is the id when found
    (NULL when absent). delivery.<snapshot>_delivered says whether each known dimension (role dimension in the
    contract) was delivered: when it was not, every id is known (the dimension is derived from behaviour).
    The call block gives the source's rules, the `when ... then '<reason>'` lines after ingest_error. -#}
{% macro checked_increment(source_name, known) -%}
{%- set delivered_sources = [] -%}
{%- for snapshot, id_column in known if var('raw_contract')[snapshot].role == 'dimension' -%}
    {%- do delivered_sources.append(snapshot) -%}
{%- endfor -%}
with typed as (
    select * from {{ ref('typed_' ~ source_name) }}
    where partition_date > date '{{ run_ds() }}' - {{ history_days() }} and partition_date <= date '{{ run_ds() }}'
),
{%- for snapshot, id_column in known %}

known_{{ snapshot }} as (
    select {{ id_column }} from {{ ref('stg_' ~ snapshot) }}
),
{%- endfor %}

delivery as (
    select
    {%- for snapshot in delivered_sources %} {{ delivered(snapshot) }} as {{ snapshot }}_delivered{{ "," if not loop.last }}
    {%- endfor %}
)

select
    typed.*,
    case
        when typed.ingest_error is not null then typed.ingest_error
        {{ caller() | trim }}
    end as reject_reason
from typed
cross join delivery
{%- for snapshot, id_column in known %}
left join known_{{ snapshot }} on typed.{{ id_column }} = known_{{ snapshot }}.{{ id_column }}
{%- endfor %}
{%- endmacro %}

{#- The body of an incremental stg_ model: the valid rows of `checked_relation` that are the first delivered of their
    key (earliest landing file, then row). A full build selects them all. An incremental night recomputes which rows
    are first on narrow columns over the whole window (tonight's rules may have changed a row's validity, a new day
    may repeat an old key, a day may have left the window) and returns only the changes, flagged in `_change`:
    'insert' rows (first, not in the table yet) and 'delete' rows (in the table, no longer first), which the
    strategy apply_changes applies. Rows are identified by landed_row_id (new whenever a partition is typed again). -#}
{% macro first_delivered_rows(checked_relation, key_columns, exclude_columns) -%}
with valid_rows as (
    select * exclude ({{ exclude_columns | join(', ') }})
    from {{ checked_relation }}
    where reject_reason is null
)
{%- set first = "qualify row_number() over (partition by " ~ (key_columns | join(', ')) ~ " order by source_file, source_row) = 1" %}
{#- is_incremental() only for an incremental model: a snapshot stg_ (a table) has no relation in a unit test -#}
{%- if not (config.get('materialized') == 'incremental' and is_incremental()) %}

select * from valid_rows
{{ first }}
{%- else %},

first_ids as materialized (
    select landed_row_id from valid_rows
    {{ first }}
),

new_ids as (
    select landed_row_id from first_ids
    anti join {{ this }} as kept using (landed_row_id)
),

superseded_ids as (
    select landed_row_id from {{ this }} as kept
    anti join first_ids using (landed_row_id)
)

select valid_rows.*, 'insert' as _change
from valid_rows
semi join new_ids using (landed_row_id)
union all by name
select landed_row_id, 'delete' as _change
from superseded_ids
{%- endif %}
{%- endmacro %}

{#- Incremental strategy of the stg_ models: apply the 'delete' and 'insert' rows of first_delivered_rows. -#}
{% macro get_incremental_apply_changes_sql(arg_dict) -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set temp = arg_dict['temp_relation'] -%}
    {%- set target_columns = adapter.get_columns_in_relation(target) | map(attribute='name') | list -%}
    {%- set changes_columns = adapter.get_columns_in_relation(temp) | map(attribute='name') | reject('equalto', '_change') | list -%}
    {%- if (target_columns | sort) != (changes_columns | sort) -%}
        {{ exceptions.raise_compiler_error(target ~ " has columns " ~ (target_columns | sort) ~ " but the model now selects "
                                           ~ (changes_columns | sort) ~ ": rebuild it with --full-refresh") }}
    {%- endif -%}
    {%- set columns = adapter.get_columns_in_relation(target) | map(attribute='quoted') | join(', ') -%}
    delete from {{ target }}
    where landed_row_id in (select landed_row_id from {{ temp }} where _change = 'delete');
    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ temp }} where _change = 'insert'
{%- endmacro %}
