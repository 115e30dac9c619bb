-- People at customer accounts: typed, trimmed, e-mails lower-cased, one row per contact_id
-- (latest updated_at / _loaded_at), tombstoned (deleted) contacts removed.
with latest as (
    select *
    from {{ source('raw', 'crm_contacts') }}
    qualify {{ latest_per_key('trim(contact_id)',
        'updated_at desc nulls last, _loaded_at desc nulls last, coalesce(_deleted, false) desc') }}
)

select
    {{ clean_text('contact_id') }}           as contact_id,
    {{ clean_text('account_id') }}           as account_id,
    {{ clean_name('first_name') }}           as first_name,
    {{ clean_name('last_name') }}            as last_name,
    {{ clean_email('email') }}               as email,
    {{ clean_text('phone') }}                as phone,
    {{ clean_name('job_title') }}            as job_title,
    cast(created_at as timestamp)            as created_at,
    cast(updated_at as timestamp)            as updated_at,
    _record_hash,
    _source_file,
    _loaded_at,
    _load_id
from latest
where not coalesce(_deleted, false)
