{#
  Models land in the plain schema they configure (staging, cleaned), not in <target_schema>_<schema>
  as dbt does by default. Models without a schema config land in the target schema.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
