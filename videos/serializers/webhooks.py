"""Serializers of `/webhooks/` and `/webhooks/{id}/deliveries/`."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from processing.sources import SourceNotAllowed
from processing.webhooks import check_url
from videos.models import CameraGroup, DeliveryStatus, Webhook, WebhookDelivery, WebhookEventType
from videos.serializers.archives import StrictPrimaryKeyRelatedField, check_url_characters, url_policy_message
from videos.serializers.fields import (
    ExcessFieldsRejectMixin,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    StrictNumberField,
)


def validate_webhook_url(value: str) -> str:
    """The url policy of archive sources (plus FFV_WEBHOOK_ALLOWED_NETWORKS), as written; each delivery checks
    the addresses the host resolves to again and connects to a checked one."""
    from videos.webhooks.delivery import webhook_policy

    check_url_characters(value)
    try:
        check_url(value, webhook_policy())
    except SourceNotAllowed as exc:
        raise serializers.ValidationError(url_policy_message(exc)) from exc
    return value


class StrictChoiceField(serializers.ChoiceField):
    default_error_messages = {"invalid_choice": _("{input} is not one of the allowed values.")}

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=ascii(data)[:64])
        if data not in self.choices:
            self.fail("invalid_choice", input=ascii(data)[:64])
        return data


class StrictListField(serializers.ListField):
    default_error_messages = {"not_a_list": _("Must be a list."), "duplicate": _("Values must not repeat.")}

    def to_internal_value(self, data: Any) -> list[Any]:
        if not isinstance(data, list):
            self.fail("not_a_list")
        values = super().to_internal_value(data)
        if len({repr(value) for value in values}) != len(values):
            self.fail("duplicate")
        return values


class WebhookSerializer(ExcessFieldsRejectMixin, serializers.ModelSerializer):
    name = StrictCharField(allow_blank=True, max_length=256, required=False, default="")
    url = StrictCharField(min_length=1, max_length=2048, validators=[validate_webhook_url],
                          help_text="http(s) URL of the receiver; the url policy of archive sources applies.")
    secret = StrictCharField(write_only=True, min_length=16, max_length=256, required=False, trim_whitespace=False,
                             help_text="Key of the HMAC-SHA256 signature (required on create, never shown; an "
                                       "update without it keeps the current one).")
    active = StrictBooleanField(required=False, default=True)
    event_types = StrictListField(
        child=StrictChoiceField(choices=WebhookEventType.choices), max_length=len(WebhookEventType),
        help_text="One or more of archive.status, event.matched, cluster.created.")
    camera_groups = StrictListField(
        child=StrictPrimaryKeyRelatedField(queryset=CameraGroup.objects.all()), required=False, default=list,
        max_length=1000, help_text="Only events of these camera groups (empty: all).")
    watch_lists = StrictListField(
        child=StrictIntegerField(min_value=1, max_value=2**63 - 1), required=False, default=list, max_length=1000,
        help_text="event.matched only: events matched in one of these watch lists (empty: all).")
    min_confidence = StrictNumberField(
        min_value=0, max_value=1, allow_null=True, required=False, default=None,
        help_text="event.matched only: events matched with at least this confidence (null: all).")

    class Meta:
        model = Webhook
        fields = ["id", "name", "url", "secret", "active", "event_types", "camera_groups", "watch_lists",
                  "min_confidence", "created_date", "modified_date"]
        read_only_fields = ["id", "created_date", "modified_date"]

    def validate_event_types(self, value: list[str]) -> list[str]:
        # Not `min_length` on the field: the response schema would then claim it of rows the admin may have saved.
        if not value:
            raise serializers.ValidationError(_("Choose at least one event type."))
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is None and not attrs.get("secret"):
            raise serializers.ValidationError({"secret": [_("This field is required.")]})
        if "camera_groups" in attrs:
            attrs["camera_groups"] = [group.pk for group in attrs["camera_groups"]]
        return attrs

    def to_representation(self, instance: Webhook) -> dict[str, Any]:
        return {
            "id": instance.pk,
            "name": instance.name,
            "url": instance.url,
            "active": instance.active,
            "event_types": list(instance.event_types or []),
            "camera_groups": sorted(group.pk for group in instance.camera_groups.all()),
            "watch_lists": list(instance.watch_lists or []),
            "min_confidence": instance.min_confidence,
            "created_date": serializers.DateTimeField().to_representation(instance.created_date),
            "modified_date": serializers.DateTimeField().to_representation(instance.modified_date),
        }


class WebhookDeliverySerializer(serializers.ModelSerializer):
    delivery = serializers.UUIDField(source="uuid", read_only=True, help_text="The X-FFV-Delivery header.")
    status = serializers.ChoiceField(choices=DeliveryStatus.choices, read_only=True)
    events = serializers.ListField(child=serializers.DictField(), read_only=True,
                                   help_text="The events this delivery carries, as in its body.")

    class Meta:
        model = WebhookDelivery
        fields = ["id", "delivery", "event_type", "ordering_key", "status", "attempts", "last_status_code",
                  "last_error", "next_attempt_date", "created_date", "delivered_date", "event_count", "events"]
        read_only_fields = fields


class WebhookDeliveryPageSerializer(serializers.Serializer):
    next_page = serializers.URLField(allow_null=True)
    prev_page = serializers.URLField(allow_null=True)
    results = WebhookDeliverySerializer(many=True)
