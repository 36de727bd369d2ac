"""Serializers of `/watch-lists/`, `/cards/` and `/card-photos/`."""

from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.validators import UniqueValidator

from videos.models import CameraGroup, Card, CardPhoto, WatchList
from videos.serializers.archives import StrictPrimaryKeyRelatedField
from videos.serializers.events import absolute_url
from videos.serializers.fields import (
    ExcessFieldsRejectMixin,
    StrictBooleanField,
    StrictCharField,
    StrictNumberField,
)

MAX_RELATED = 100  # ids in one list field (each is looked up)


class IdListField(serializers.ManyRelatedField):
    """A JSON list of at most MAX_RELATED ids of existing rows."""

    default_error_messages = {"too_long": _("At most %(limit)d ids.")}

    def to_internal_value(self, data: Any) -> list[Any]:
        if isinstance(data, list) and len(data) > MAX_RELATED:
            raise serializers.ValidationError(self.error_messages["too_long"] % {"limit": MAX_RELATED})
        if not isinstance(data, list):
            self.fail("not_a_list", input_type=type(data).__name__)
        return super().to_internal_value(data)


def _id_list(queryset, help_text: str) -> IdListField:
    return IdListField(child_relation=StrictPrimaryKeyRelatedField(queryset=queryset), required=False,
                       help_text=help_text)


def _unique_ids(values: list[Any]) -> list[Any]:
    return list({value.pk: value for value in values}.values())


class WatchListSerializer(ExcessFieldsRejectMixin, serializers.ModelSerializer):
    name = StrictCharField(min_length=1, max_length=256, validators=[UniqueValidator(queryset=WatchList.objects.all())])
    color = StrictCharField(required=False, default="ffffff", validators=[
        RegexValidator(r"\A[0-9a-fA-F]{6}\Z", _("A color is six hex digits (RGB), e.g. ff0000."))])
    comment = StrictCharField(allow_blank=True, max_length=2048, required=False, default="")
    active = StrictBooleanField(required=False, default=True)
    threshold = StrictNumberField(min_value=0, max_value=1, required=False, default=0.7,
                                  help_text="Least similarity (0..1) of an event's face to a card photo.")
    camera_groups = _id_list(CameraGroup.objects.all(),
                             "Camera groups whose archives' events are matched; empty: all of them.")

    class Meta:
        model = WatchList
        fields = ["id", "name", "color", "comment", "active", "threshold", "camera_groups", "created_date",
                  "modified_date"]
        read_only_fields = ["id", "created_date", "modified_date"]

    def validate_color(self, value: str) -> str:
        return value.lower()

    def validate_camera_groups(self, value: list[CameraGroup]) -> list[CameraGroup]:
        return _unique_ids(value)


class CardSerializer(ExcessFieldsRejectMixin, serializers.ModelSerializer):
    name = StrictCharField(min_length=1, max_length=256)
    comment = StrictCharField(allow_blank=True, max_length=2048, required=False, default="")
    active = StrictBooleanField(required=False, default=True)
    watch_lists = _id_list(WatchList.objects.all(), "The watch lists the card is in.")
    photos = serializers.SerializerMethodField(help_text="Ids of its photos (/card-photos/), newest first.")

    class Meta:
        model = Card
        fields = ["id", "name", "comment", "active", "watch_lists", "photos", "created_date", "modified_date"]
        read_only_fields = ["id", "created_date", "modified_date"]

    def validate_watch_lists(self, value: list[WatchList]) -> list[WatchList]:
        return _unique_ids(value)

    @extend_schema_field({"type": "array", "items": {"type": "integer"}})
    def get_photos(self, card: Card) -> list[int]:
        return sorted((photo.pk for photo in card.photos.all()), reverse=True)


class CardPhotoSerializer(serializers.ModelSerializer):
    image = serializers.SerializerMethodField(help_text="The photo's URL (needs the token too).")
    bbox = serializers.SerializerMethodField(help_text="The face's box on the photo.")

    class Meta:
        model = CardPhoto
        fields = ["id", "card", "image", "bbox", "confidence", "quality", "created_date"]
        read_only_fields = fields

    @extend_schema_field({"type": "string", "format": "uri"})
    def get_image(self, photo: CardPhoto) -> str:
        return absolute_url(self.context, "cardphoto-image", photo.pk)

    @extend_schema_field({"type": "object", "properties": {key: {"type": "integer"}
                                                           for key in ("left", "top", "right", "bottom")}})
    def get_bbox(self, photo: CardPhoto) -> dict[str, int]:
        return {"left": photo.frame_coords_left, "top": photo.frame_coords_top, "right": photo.frame_coords_right,
                "bottom": photo.frame_coords_bottom}
