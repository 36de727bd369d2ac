from django.db import migrations


def create_default_group(apps, schema_editor):
    CameraGroup = apps.get_model("videos", "CameraGroup")
    CameraGroup.objects.get_or_create(id=1, defaults={"name": "Default Camera Group"})
    if schema_editor.connection.vendor == "postgresql":
        # The explicit id above does not move the sequence; the next group would collide with it otherwise.
        schema_editor.execute(
            "SELECT setval(pg_get_serial_sequence('videos_cameragroup', 'id'), "
            "GREATEST((SELECT MAX(id) FROM videos_cameragroup), 1))"
        )


class Migration(migrations.Migration):
    dependencies = [("videos", "0001_initial")]

    operations = [migrations.RunPython(create_default_group, migrations.RunPython.noop)]
