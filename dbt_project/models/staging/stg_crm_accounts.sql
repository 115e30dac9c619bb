-- Customer accounts: typed, trimmed, one row per account_id (latest updated_at / _loaded_at),
-- tombstoned (deleted) accounts removed.
with latest as (
    select *
    from {{ source('raw', 'crm_accounts') }}
    qualify {{ latest_per_key('trim(account_id)',
        'updated_at desc nulls last, _loaded_at desc nulls last, coalesce(_deleted, false) desc') }}
)

select
    {{ clean_text('account_id') }}           as account_id,
    {{ clean_name('name') }}                 as name,
    {{ clean_name('industry') }}             as industry,
    {{ clean_enum('segment') }}              as segment,
    {{ clean_code('country') }}              as country,
    {{ clean_name('city') }}                 as city,
    {{ clean_name('street') }}               as street,
    {{ clean_text('postal_code') }}          as postal_code,
    {{ clean_name('account_manager') }}      as account_manager,
    cast(created_at as timestamp)            as created_at,
    cast(updated_at as timestamp)            as updated_at,
    _record_hash,
    _source_file,
    _loaded_at,
    _load_id
from latest
where not coalesce(_deleted, false)
