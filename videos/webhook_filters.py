"""FilterSets of `/webhooks/` and `/webhooks/{id}/deliveries/`."""

from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from videos.filters import CreatedDateFilterSet, IntegerListFilter
from videos.models import DeliveryStatus, Webhook, WebhookDelivery, WebhookEventType


class WebhookFilterSet(CreatedDateFilterSet):
    id_in = IntegerListFilter(field_name="id", label="Webhook ids (repeated or comma list).")
    active = django_filters.ChoiceFilter(
        method="filter_active", choices=[("true", "true"), ("false", "false")],
        label="true: active webhooks only; false: inactive ones.")
    ordering = django_filters.OrderingFilter(fields=("id", "created_date"))

    class Meta:
        model = Webhook
        fields: list[str] = []

    def filter_active(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        """`true` or `false` as written (a string enum in the schema, not a boolean that reads "1" or "on")."""
        return queryset.filter(active=value == "true")


class WebhookDeliveryFilterSet(CreatedDateFilterSet):
    status = django_filters.MultipleChoiceFilter(
        field_name="status", choices=DeliveryStatus.choices,
        label="pending, delivered, failed (repeated for several).")
    event_type = django_filters.ChoiceFilter(field_name="event_type", choices=WebhookEventType.choices)
    ordering = django_filters.OrderingFilter(fields=("id", "created_date"))

    class Meta:
        model = WebhookDelivery
        fields: list[str] = []
