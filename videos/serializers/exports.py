"""Serializers of `/exports/`: what a client asks for, and the export's state."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from videos import exports
from videos.errors import BadParam
from videos.models import EventKind, Export, ExportFormat, ExportStatus
from videos.serializers.events import absolute_url
from videos.serializers.fields import ExcessFieldsRejectMixin, StrictIntegerField

_FILTER_VALUE = {"oneOf": [{"type": "string"}, {"type": "number"},
                           {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "number"}]}}]}


@extend_schema_field({
    "type": "object", "additionalProperties": _FILTER_VALUE,
    "description": "The event list's query parameters (/events/<kind>/), e.g. {\"video_archive\": [1, 2], "
                   "\"quality_gte\": 0.5, \"ordering\": \"-quality\"}; no limit or page.",
})
class FiltersField(serializers.Field):
    def to_internal_value(self, data: Any) -> dict[str, list[str]]:
        try:
            return exports.normalize_filters(data)
        except BadParam as exc:
            if exc.param == "filters":
                raise serializers.ValidationError(exc.desc) from None
            # `filters.<name>`: the error's path names the filter (videos.errors.first_validation_error).
            raise serializers.ValidationError({exc.param.removeprefix("filters."): [exc.desc]}) from None

    def to_representation(self, value: Any) -> Any:
        return value


class ExportCreateSerializer(ExcessFieldsRejectMixin, serializers.Serializer):
    kind = serializers.ChoiceField(choices=EventKind.choices, help_text="face, body or car.")
    format = serializers.ChoiceField(choices=ExportFormat.choices, help_text="csv, or zip (CSV and thumbnails).")
    filters = FiltersField(required=False, default=dict)
    limit = StrictIntegerField(required=False, min_value=1, max_value=settings.FFV_EXPORT_MAX_ROWS,
                               help_text="At most this many events (default and most: FFV_EXPORT_MAX_ROWS).")

    def validate_limit(self, value: int) -> int:
        if value > settings.FFV_EXPORT_MAX_ROWS:
            # DRF's own message (and its translations), for the limit in force now.
            message = self.fields["limit"].error_messages["max_value"]
            raise serializers.ValidationError(str(message).format(max_value=settings.FFV_EXPORT_MAX_ROWS))
        return value


class ExportSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    created_date = serializers.DateTimeField(read_only=True)
    kind = serializers.ChoiceField(choices=EventKind.choices, read_only=True)
    format = serializers.ChoiceField(choices=ExportFormat.choices, read_only=True)
    filters = FiltersField(read_only=True)
    limit = serializers.IntegerField(read_only=True)
    status = serializers.ChoiceField(choices=ExportStatus.choices, read_only=True)
    progress = serializers.FloatField(read_only=True, help_text="0..1 of the rows written.")
    total = serializers.IntegerField(read_only=True, allow_null=True,
                                     help_text="Rows the export will have; null until its build starts.")
    row_count = serializers.IntegerField(read_only=True, help_text="Rows written so far.")
    truncated = serializers.BooleanField(read_only=True, help_text="More events matched than `limit`.")
    file_size = serializers.IntegerField(read_only=True)
    finish_date = serializers.DateTimeField(read_only=True, allow_null=True)
    expires_at = serializers.DateTimeField(read_only=True, allow_null=True,
                                           help_text="When the file is deleted (then download/ answers 410).")
    msg = serializers.SerializerMethodField(help_text="Why the export failed, or empty.")
    download = serializers.SerializerMethodField(help_text="The file's URL once completed (needs the token), "
                                                           "else null.")

    def get_msg(self, export: Export) -> str:
        return exports.export_message(export)

    @extend_schema_field({"type": "string", "format": "uri", "nullable": True})
    def get_download(self, export: Export) -> str | None:
        if export.status != ExportStatus.COMPLETED:
            return None
        return absolute_url(self.context, "export-download", export.pk)
