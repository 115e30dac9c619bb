-- Mirrors config/governance/processing_register.yaml, sources.kb_documents:
--   allowed_fields: [document_id, path, title, format, body, content_hash, size_bytes, modified_at]
--   no history window.
-- Change this model and the register together: the asset check fields_allowed_by_register verifies that
-- the columns here are a subset of allowed_fields.
select
    document_id,
    path,
    title,
    format,
    body,
    content_hash,
    size_bytes,
    modified_at
from {{ ref('stg_kb_documents') }}
