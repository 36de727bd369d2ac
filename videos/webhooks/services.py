"""Writes of webhook subscriptions (the API's and the admin's)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from videos.models import Webhook

FIELDS = ("name", "url", "secret", "active", "event_types", "watch_lists", "min_confidence")


def webhook_create(*, data: dict[str, Any]) -> Webhook:
    with transaction.atomic():
        webhook = Webhook.objects.create(**{name: data[name] for name in FIELDS if name in data})
        webhook.camera_groups.set(data.get("camera_groups") or [])
    return webhook


def webhook_update(*, webhook: Webhook, data: dict[str, Any]) -> Webhook:
    """Change the fields given; a missing or empty `secret` keeps the current one (the API never shows it)."""
    with transaction.atomic():
        for name in FIELDS:
            if name in data and not (name == "secret" and not data[name]):
                setattr(webhook, name, data[name])
        webhook.save()
        if "camera_groups" in data:
            webhook.camera_groups.set(data["camera_groups"] or [])
    if webhook.active:
        # Deliveries that waited while it was inactive go out now (the sweeper would find them too).
        transaction.on_commit(_resume_lines)
    return webhook


def webhook_delete(*, webhook_id: int) -> None:
    """Deletes the subscription and its delivery records; deliveries in flight end without a record."""
    Webhook.objects.filter(pk=webhook_id).delete()


def _resume_lines() -> None:
    from videos.webhooks.delivery import deliveries_sweep

    deliveries_sweep()
