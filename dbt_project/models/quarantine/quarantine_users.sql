-- Rejected users rows as delivered (every contract column as VARCHAR), where they came from and why. The e-mail
-- leaves the warehouse hashed only (email_sha256, as in user_features): the quarantine is exported to the lake and
-- read through `pm query`, where a raw address has no business.
select
    {%- for column in var('raw_contract')['users']['columns'] %}
    {%- if column.name == 'email' %}
    sha256(lower(trim(raw_values.email))) as email_sha256,
    {%- else %}
    raw_values.{{ column.name }},
    {%- endif %}
    {%- endfor %}
    source_file,
    source_row,
    reject_reason
from {{ ref('checked_users') }}
where reject_reason is not null
order by source_file, source_row
