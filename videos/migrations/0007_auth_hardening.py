"""Tokens keep only the SHA-256 of their key (issued tokens keep working); failed-login counts for the throttle."""

import hashlib

from django.db import migrations, models


def hash_keys(apps, schema_editor):
    AuthToken = apps.get_model("videos", "AuthToken")
    tokens = list(AuthToken.objects.only("pk", "key_hash"))
    for token in tokens:
        # Until now the column held the key itself; the same hash as videos.tokens.token_key_hash.
        token.key_hash = hashlib.sha256(token.key_hash.encode()).hexdigest()
    AuthToken.objects.bulk_update(tokens, ["key_hash"], batch_size=500)


def revoke_all(apps, schema_editor):
    # The keys cannot be recovered from their hashes, and a hash must not become usable as a key.
    apps.get_model("videos", "AuthToken").objects.update(revoked=True)


class Migration(migrations.Migration):

    dependencies = [
        ("videos", "0006_stream_settings_version"),
    ]

    operations = [
        migrations.RenameField(model_name="authtoken", old_name="key", new_name="key_hash"),
        migrations.RunPython(hash_keys, revoke_all),
        migrations.AlterField(
            model_name="authtoken",
            name="key_hash",
            field=models.CharField(help_text="SHA-256 of the key, hex.", max_length=64, unique=True),
        ),
        migrations.CreateModel(
            name="LoginThrottle",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("key", models.CharField(help_text="SHA-256 of 'addr:<address>' or 'user:<name>'.", max_length=64,
                                         unique=True)),
                ("failures", models.PositiveIntegerField(default=0)),
                ("window_start", models.DateTimeField(db_index=True)),
            ],
        ),
    ]
