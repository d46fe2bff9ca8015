-- What tonight's consent export held, one row: the consent guard (expectations/consent_guard.py) compares it with
-- the last night whose audiences it let through. A cut or partial export shows as a drop in rows or opt-outs; a
-- shifted column or a change of id format as consent rows naming no known user.
select
    date '{{ run_ds() }}' as ds,
    {{ delivered('consent') }} as delivered,
    (select count(*) from {{ ref('checked_consent') }}) as consent_rows,
    (
        select count(*) from {{ ref('stg_consent') }}
        where status = 'opt_out'
    ) as opt_out_rows,
    (
        select count(*) from {{ ref('checked_consent') }}
        where reject_reason like 'unknown user_id%'
    ) as unknown_user_rows
