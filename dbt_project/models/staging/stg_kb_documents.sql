-- Knowledge-base documents: trimmed metadata, format normalised to markdown/html/pdf/text, one row per
-- document_id (latest modified_at / _loaded_at), tombstoned (deleted) documents removed.
-- The body is kept exactly as extracted.
with latest as (
    select *
    from {{ source('raw', 'kb_documents') }}
    qualify {{ latest_per_key('trim(document_id)',
        'modified_at desc nulls last, _loaded_at desc nulls last, coalesce(_deleted, false) desc') }}
),

typed as (
    select
        *,
        {{ clean_enum('format') }} as format_raw
    from latest
    where not coalesce(_deleted, false)
)

select
    {{ clean_text('document_id') }}          as document_id,
    {{ clean_text('path') }}                 as path,
    {{ clean_name('title') }}                as title,
    case format_raw
        when 'md' then 'markdown'
        when 'htm' then 'html'
        when 'txt' then 'text'
        else format_raw
    end                                      as format,
    body,
    {{ clean_text('content_hash') }}         as content_hash,
    cast(size_bytes as bigint)               as size_bytes,
    cast(modified_at as timestamp)           as modified_at,
    _record_hash,
    _source_file,
    _loaded_at,
    _load_id
from typed
