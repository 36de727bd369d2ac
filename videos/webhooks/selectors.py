"""Reads of webhook subscriptions and their deliveries."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils.translation import gettext as _

from videos.errors import NotFound
from videos.models import Webhook, WebhookDelivery


def webhook_list() -> QuerySet[Webhook]:
    return Webhook.objects.prefetch_related("camera_groups")


def webhook_get(*, webhook_id: int) -> Webhook:
    webhook = Webhook.objects.filter(pk=webhook_id).first()
    if webhook is None:
        raise NotFound(_("Webhook %(id)s not found.") % {"id": webhook_id})
    return webhook


def delivery_list(*, webhook_id: int) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(webhook_id=webhook_id)
