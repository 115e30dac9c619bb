-- Mirrors config/governance/processing_register.yaml, sources.support_tickets:
--   allowed_fields: [ticket_id, account_id, created_at, updated_at, channel, category, priority, status,
--                    product_sku, subject, body, resolution]
--   history_window_days: 730, history_column: created_at (measured from var as_of, default current_date)
-- Change this model and the register together: the asset check fields_allowed_by_register verifies that
-- the columns here are a subset of allowed_fields.
select
    ticket_id,
    account_id,
    created_at,
    updated_at,
    channel,
    category,
    priority,
    status,
    product_sku,
    subject,
    body,
    resolution
from {{ ref('stg_support_tickets') }}
where created_at >= {{ as_of_date() }} - interval 730 day
