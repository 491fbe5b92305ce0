from django.db import migrations


def create_trigram_indexes(apps, schema_editor):
    # Substring search on name/email over a million customers needs trigram GIN indexes. PostgreSQL only;
    # the embedded SQLite default of `make run` is small enough to scan.
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    schema_editor.execute(
        "CREATE INDEX IF NOT EXISTS crm_customer_name_trgm ON crm_customer USING gin (name gin_trgm_ops)"
    )


def drop_trigram_indexes(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS crm_customer_name_trgm")


def create_roles(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after all migrations; create them now so the groups get them.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    from crm.roles import CRM_ROLE_GRANTS, roles_sync

    # crm's share only: no other app's models exist yet; config/roles.py applies every share after migrate.
    roles_sync(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"), CRM_ROLE_GRANTS)


def drop_roles(apps, schema_editor):
    from crm.roles import ROLES

    apps.get_model("auth", "Group").objects.filter(name__in=list(ROLES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(create_trigram_indexes, drop_trigram_indexes),
        migrations.RunPython(create_roles, drop_roles),
    ]
