from django.db import migrations

# The admin searches names of one or two characters (a Chinese surname, or surname and first given
# character) by prefix: too short for the trigram index, and Django's istartswith compiles to
# UPPER(name::text) LIKE UPPER('x%'), which this expression index answers. PostgreSQL only; the embedded
# SQLite default of `make run` is small enough to scan. No model state changes.


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        "CREATE INDEX IF NOT EXISTS crm_customer_name_upper_prefix "
        "ON crm_customer (UPPER(name::text) text_pattern_ops)"
    )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS crm_customer_name_upper_prefix")


class Migration(migrations.Migration):
    dependencies = [("crm", "0002_search_indexes_and_roles")]

    operations = [migrations.RunPython(create_index, drop_index)]
