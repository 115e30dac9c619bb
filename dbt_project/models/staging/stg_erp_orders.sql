-- Sales orders: typed, trimmed, currency and SKU upper-cased, status lower-cased, one row per order_id
-- (latest updated_at / _loaded_at), tombstoned (deleted) orders removed. All history is kept here;
-- the history window is applied in cleaned_erp_orders.
with latest as (
    select *
    from {{ source('raw', 'erp_orders') }}
    qualify {{ latest_per_key('trim(order_id)',
        'updated_at desc nulls last, _loaded_at desc nulls last, coalesce(_deleted, false) desc') }}
)

select
    {{ clean_text('order_id') }}             as order_id,
    {{ clean_text('account_id') }}           as account_id,
    cast(order_date as date)                 as order_date,
    {{ clean_code('sku') }}                  as sku,
    {{ clean_name('product_name') }}         as product_name,
    cast(quantity as bigint)                 as quantity,
    cast(unit_price as decimal(18, 4))       as unit_price,
    {{ clean_code('currency') }}             as currency,
    {{ clean_enum('status') }}               as status,
    cast(updated_at as timestamp)            as updated_at,
    _record_hash,
    _source_file,
    _loaded_at,
    _load_id
from latest
where not coalesce(_deleted, false)
