"""The "Moderators" group: ban people and manage rooms and their members in the admin."""

from django.apps.registry import Apps
from django.contrib.auth.management import create_permissions
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

GROUP = "Moderators"
PERMISSIONS = [
    ("chat", "moderate"),
    ("chat", "view_room"),
    ("chat", "change_room"),
    ("chat", "view_message"),
    *(
        ("chat", f"{action}_{model}")
        for model in ("ban", "roommember")
        for action in ("view", "add", "change", "delete")
    ),
    # To find the person to ban or add (the admin's user autocomplete).
    ("auth", "view_user"),
]


def add_group(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    # Django creates permissions after the last migration; this one needs them now.
    for label in ("auth", "chat"):
        app_config = apps.get_app_config(label)
        app_config.models_module = True  # type: ignore[assignment]  # any truthy value
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    for app_label, codename in PERMISSIONS:
        group.permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )


def remove_group(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0003_private_rooms_and_bans"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(add_group, remove_group)]
