-- Mirrors config/governance/processing_register.yaml, sources.erp_orders:
--   allowed_fields: [order_id, account_id, order_date, sku, quantity, unit_price, currency, status]
--   history_window_days: 1095, history_column: order_date (measured from var as_of, default current_date)
-- Change this model and the register together: the asset check fields_allowed_by_register verifies that
-- the columns here are a subset of allowed_fields.
select
    order_id,
    account_id,
    order_date,
    sku,
    quantity,
    unit_price,
    currency,
    status
from {{ ref('stg_erp_orders') }}
where order_date >= {{ as_of_date() }} - interval 1095 day
