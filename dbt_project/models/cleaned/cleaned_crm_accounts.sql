-- Mirrors config/governance/processing_register.yaml, sources.crm_accounts:
--   allowed_fields: [account_id, name, industry, segment, country, city, updated_at]
--   no history window (accounts are never windowed, so relationships to them always hold).
-- Change this model and the register together: the asset check fields_allowed_by_register verifies that
-- the columns here are a subset of allowed_fields.
select
    account_id,
    name,
    industry,
    segment,
    country,
    city,
    updated_at
from {{ ref('stg_crm_accounts') }}
