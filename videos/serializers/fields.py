"""Strict JSON fields: a JSON API should not read "true" as a boolean or "5" as a number."""

from __future__ import annotations

import math
import re
from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": _("Must be a boolean (true or false).")}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictIntegerField(serializers.IntegerField):
    default_error_messages = {"invalid": _("Must be an integer.")}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            if isinstance(data, float) and data.is_integer():
                data = int(data)
            else:
                self.fail("invalid")
        self.run_validators(data)
        return data


class StrictNumberField(serializers.FloatField):
    """A JSON number; an integer stays an integer so the response echoes `1`, not `1.0`."""

    default_error_messages = {"invalid": _("Must be a number.")}

    def to_internal_value(self, data: Any) -> int | float:
        # An integer is always finite (and math.isfinite cannot take one beyond float range); the range
        # validators then refuse one that is too large.
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        if isinstance(data, float) and not math.isfinite(data):
            self.fail("invalid")
        self.run_validators(data)
        return data

    def to_representation(self, value: Any) -> int | float:
        return value


class StrictCharField(serializers.CharField):
    default_error_messages = {"invalid": _("Must be a string.")}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ExcessFieldsRejectMixin:
    """Rejects keys the serializer does not declare, at every nesting level.

    It lives in to_internal_value because validate() runs only after nested serializers have already dropped
    unknown keys. Read-only fields a client echoes back are ignored, not rejected (PUT of a GET body works).
    """

    default_error_messages = {"excess": _("Unknown field.")}

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(self.fields)  # type: ignore[attr-defined]
            excess = [key for key in data if key not in known]
            if excess:
                raise serializers.ValidationError({str(excess[0]): [self.error_messages["excess"]]})  # type: ignore[attr-defined]
        return super().to_internal_value(data)  # type: ignore[misc]


class QueryIntegerField(serializers.IntegerField):
    """An integer query parameter in ASCII digits: int() alone also reads "١٢٣", " 5", "+5" and "1_0"."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, str) and not re.fullmatch(r"-?[0-9]{1,18}", data):
            self.fail("invalid")
        return super().to_internal_value(data)
