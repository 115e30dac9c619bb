-- Mirrors config/governance/processing_register.yaml, sources.crm_contacts:
--   allowed_fields: [contact_id, account_id, first_name, last_name, email, phone, updated_at]
--   no history window.
-- Change this model and the register together: the asset check fields_allowed_by_register verifies that
-- the columns here are a subset of allowed_fields.
select
    contact_id,
    account_id,
    first_name,
    last_name,
    email,
    phone,
    updated_at
from {{ ref('stg_crm_contacts') }}
