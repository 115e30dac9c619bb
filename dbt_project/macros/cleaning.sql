{# Small SQL helpers shared by the staging models. All take a column expression and return one. #}

{# Trimmed text, empty string -> null. #}
{% macro clean_text(col) -%}
    nullif(trim({{ col }}), '')
{%- endmacro %}

{# Names and titles: trimmed, runs of whitespace collapsed to one space, empty -> null. #}
{% macro clean_name(col) -%}
    nullif(regexp_replace(trim({{ col }}), '\s+', ' ', 'g'), '')
{%- endmacro %}

{# Enumerations (status, category, ...): lower case, trimmed, inner spaces/hyphens -> underscore. #}
{% macro clean_enum(col) -%}
    nullif(regexp_replace(lower(trim({{ col }})), '[\s\-]+', '_', 'g'), '')
{%- endmacro %}

{# Codes (country, currency): upper case, trimmed. #}
{% macro clean_code(col) -%}
    nullif(upper(trim({{ col }})), '')
{%- endmacro %}

{# E-mail addresses: lower case, all whitespace removed. #}
{% macro clean_email(col) -%}
    nullif(lower(regexp_replace({{ col }}, '\s+', '', 'g')), '')
{%- endmacro %}

{#
  Keep the latest version of every primary key, then drop it if that version is a tombstone.
  Deduplicating before dropping tombstones means a deleted key never falls back to an older live copy.
  Use in a model as: from (...) where {{ is_live() }} after a `qualify {{ latest_per_key(...) }}`.
#}
{% macro latest_per_key(key, order_by) -%}
    row_number() over (partition by {{ key }} order by {{ order_by }}) = 1
{%- endmacro %}

{#
  The date the history windows of the cleaned models are measured from: var `as_of` (YYYY-MM-DD) if
  given, else current_date.
#}
{% macro as_of_date() -%}
    {%- set as_of = var('as_of', none) -%}
    {%- if as_of is none or (as_of | string | trim) == '' -%}
        current_date
    {%- else -%}
        cast('{{ as_of | string | trim }}' as date)
    {%- endif -%}
{%- endmacro %}
