-- Support tickets: typed, trimmed, enumerations lower-cased, one row per ticket_id
-- (latest updated_at / _loaded_at), tombstoned (deleted) tickets removed. All history is kept here;
-- the history window is applied in cleaned_support_tickets.
with latest as (
    select *
    from {{ source('raw', 'support_tickets') }}
    qualify {{ latest_per_key('trim(ticket_id)',
        'updated_at desc nulls last, _loaded_at desc nulls last, coalesce(_deleted, false) desc') }}
)

select
    {{ clean_text('ticket_id') }}            as ticket_id,
    {{ clean_text('account_id') }}           as account_id,
    {{ clean_text('contact_id') }}           as contact_id,
    cast(created_at as timestamp)            as created_at,
    cast(updated_at as timestamp)            as updated_at,
    {{ clean_enum('channel') }}              as channel,
    {{ clean_enum('category') }}             as category,
    {{ clean_enum('priority') }}             as priority,
    {{ clean_enum('status') }}               as status,
    {{ clean_code('product_sku') }}          as product_sku,
    {{ clean_name('subject') }}              as subject,
    {{ clean_text('body') }}                 as body,
    {{ clean_text('resolution') }}           as resolution,
    _record_hash,
    _source_file,
    _loaded_at,
    _load_id
from latest
where not coalesce(_deleted, false)
