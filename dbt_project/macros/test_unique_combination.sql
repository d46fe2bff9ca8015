{#- Generic test: the combination of `columns` identifies a row (no packages can be installed here). -#}
{% test unique_combination(model, columns) %}
    select {{ columns | join(', ') }}, count(*) as n_rows
    from {{ model }}
    group by {{ columns | join(', ') }}
    having count(*) > 1
{% endtest %}

{#- Generic test: the internal keys stay within what MLlib ALS accepts (1 .. 2^31 - 1). -#}
{% test fits_in_int32(model, column_name) %}
    select {{ column_name }} from {{ model }}
    where {{ column_name }} < 1 or {{ column_name }} > 2147483647
{% endtest %}
