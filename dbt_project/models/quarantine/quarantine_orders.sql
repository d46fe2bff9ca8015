-- Rejected orders rows as delivered (every contract column as VARCHAR), where they came from and why.
select
    raw_values.*,
    source_file,
    source_row,
    reject_reason
from {{ ref('checked_orders') }}
where reject_reason is not null
order by source_file, source_row
