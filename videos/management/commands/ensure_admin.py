"""Create a superuser with the password in $FFV_ADMIN_PASSWORD unless that user exists (used by ./dev serve)."""

from __future__ import annotations

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create the first admin user if it does not exist; the password comes from $FFV_ADMIN_PASSWORD."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options) -> None:
        password = os.environ.get("FFV_ADMIN_PASSWORD", "")
        if not password:
            raise CommandError("set FFV_ADMIN_PASSWORD")
        user_model = get_user_model()
        if user_model.objects.filter(username=username).exists():
            return
        user_model.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(f"created admin user {username!r}")
