"""Keyset ("cursor") pagination: `limit`, an opaque `page` cursor, `next_page` / `prev_page` absolute URLs.

Pages are cut by the values of the ordering keys (with `id` as the tie-breaker), not by offsets, so a page
stays stable while rows are added and deep pages cost the same as the first. Nullable keys are coalesced so
that NULLs sort the same way on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db.models import F, Q, QuerySet, Value
from django.db.models.expressions import BaseExpression
from django.db.models.functions import Coalesce
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from videos.errors import BadParam


@dataclass(frozen=True)
class OrderKey:
    name: str
    descending: bool


@dataclass(frozen=True)
class Cursor:
    values: list[Any]
    reverse: bool


def _encode(cursor: Cursor) -> str:
    raw = json.dumps({"v": cursor.values, "r": cursor.reverse}, separators=(",", ":"), default=str)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(token: str, size: int) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
        values, reverse = payload["v"], payload["r"]
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise BadParam(_("Invalid page cursor."), param="page") from None
    if not isinstance(values, list) or len(values) != size or not isinstance(reverse, bool):
        raise BadParam(_("Invalid page cursor."), param="page")
    return Cursor(values=values, reverse=reverse)


def parse_limit(request, param: str = "limit") -> int:
    """The `limit` query parameter: 1..FFV_PAGE_SIZE_MAX, FFV_PAGE_SIZE_DEFAULT when absent."""
    raw = request.query_params.get(param)
    if raw is None:
        return settings.FFV_PAGE_SIZE_DEFAULT
    # Plain ASCII digits only: int() alone would also take " 5", "1_0" and non-ASCII digits.
    try:
        limit = int(raw) if raw.isascii() and raw.isdigit() else 0
    except ValueError:  # more digits than int() converts
        limit = 0
    if not 1 <= limit <= settings.FFV_PAGE_SIZE_MAX:
        raise BadParam(
            _("Must be an integer from 1 to %(max)d.") % {"max": settings.FFV_PAGE_SIZE_MAX},
            param=param,
        )
    return limit


class KeysetPagination(BasePagination):
    """Views declare `ordering_fields` ({api name: model field}) and `default_ordering` (e.g. "-id")."""

    page_query_param = "page"
    limit_query_param = "limit"

    def paginate_queryset(self, queryset: QuerySet, request, view=None) -> list[Any]:
        self.request = request
        self.limit = self._limit(request)
        self._model = queryset.model
        self.keys = self._ordering(request, view)
        self.fields: dict[str, BaseExpression] = {
            key.name: self._expression(queryset, key.name) for key in self.keys
        }
        annotated = queryset.annotate(**{f"_k_{name}": expr for name, expr in self.fields.items()})
        token = request.query_params.get(self.page_query_param)
        cursor = _decode(token, len(self.keys)) if token else None
        reverse = cursor.reverse if cursor else False
        order = [
            (F(f"_k_{key.name}").asc() if key.descending == reverse else F(f"_k_{key.name}").desc())
            for key in self.keys
        ]
        page_qs = annotated.order_by(*order)
        if cursor is not None:
            page_qs = page_qs.filter(self._after(self._parse_values(cursor.values), reverse))
        rows = list(page_qs[: self.limit + 1])
        has_more = len(rows) > self.limit
        rows = rows[: self.limit]
        if reverse:
            rows.reverse()
        self.has_next = has_more if not reverse else cursor is not None
        self.has_prev = (cursor is not None) if not reverse else has_more
        self.rows = rows
        return rows

    def get_paginated_response(self, data: list[Any]) -> Response:
        return Response({"next_page": self._link(False), "prev_page": self._link(True), "results": data})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["next_page", "prev_page", "results"],
            "properties": {
                "next_page": {"type": "string", "nullable": True, "format": "uri"},
                "prev_page": {"type": "string", "nullable": True, "format": "uri"},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view) -> list[dict[str, Any]]:
        return [
            {
                "name": self.limit_query_param,
                "required": False,
                "in": "query",
                "description": "Number of results to return per page.",
                "schema": {"type": "integer", "minimum": 1, "maximum": settings.FFV_PAGE_SIZE_MAX},
            },
            {
                "name": self.page_query_param,
                "required": False,
                "in": "query",
                "description": "Pagination cursor value.",
                "schema": {"type": "string"},
            },
        ]

    # -- helpers

    def _limit(self, request) -> int:
        return parse_limit(request, self.limit_query_param)

    def _ordering(self, request, view) -> list[OrderKey]:
        allowed: dict[str, str] = getattr(view, "ordering_fields", {"id": "id"})
        raw = request.query_params.get("ordering") or getattr(view, "default_ordering", "-id")
        keys: list[OrderKey] = []
        for part in raw.split(","):
            part = part.strip()
            name = part.lstrip("-")
            if name not in allowed:
                raise BadParam(_("Unknown ordering field."), param="ordering")
            if all(key.name != name for key in keys):
                keys.append(OrderKey(name=name, descending=part.startswith("-")))
        if all(key.name != "id" for key in keys):
            keys.append(OrderKey(name="id", descending=keys[0].descending))
        self._model_fields = allowed
        return keys

    def _expression(self, queryset: QuerySet, name: str) -> BaseExpression:
        field_name = self._model_fields[name]
        field = queryset.model._meta.get_field(field_name)
        if getattr(field, "null", False) and field.get_internal_type() in ("CharField", "TextField"):
            return Coalesce(F(field_name), Value(""))
        return F(field_name)

    def _parse_values(self, values: list[Any]) -> list[Any]:
        parsed = []
        for key, value in zip(self.keys, values, strict=True):
            field = self._model._meta.get_field(self._model_fields[key.name])
            internal = field.get_internal_type()
            try:
                if internal == "DateTimeField":
                    result = parse_datetime(value) if isinstance(value, str) else None
                    # Cursors carry aware values; one that does not exist in UTC (the database's zone) would
                    # overflow in the database adapter.
                    if result is None or result.tzinfo is None:
                        raise ValueError
                    result.astimezone(UTC)
                elif internal in ("AutoField", "BigAutoField", "IntegerField", "BigIntegerField",
                                  "PositiveIntegerField", "ForeignKey"):
                    if isinstance(value, bool) or not isinstance(value, int):
                        raise ValueError
                    result = value
                elif internal == "FloatField":
                    if isinstance(value, bool) or not isinstance(value, (int, float)):
                        raise ValueError
                    result = value
                else:
                    # PostgreSQL text cannot hold NUL characters; the query would fail in the database.
                    if not isinstance(value, str) or "\x00" in value:
                        raise ValueError
                    result = value
            except (ValueError, OverflowError):
                raise BadParam(_("Invalid page cursor."), param="page") from None
            parsed.append(result)
        return parsed

    def _after(self, values: list[Any], reverse: bool) -> Q:
        """Rows strictly after the cursor position in the (possibly reversed) ordering."""
        condition = Q()
        equal_so_far = Q()
        for key, value in zip(self.keys, values, strict=True):
            forward_gt = key.descending == reverse  # ascending in the effective direction
            lookup = "gt" if forward_gt else "lt"
            condition |= equal_so_far & Q(**{f"_k_{key.name}__{lookup}": value})
            equal_so_far &= Q(**{f"_k_{key.name}": value})
        # Implied by the OR above, but only a plain range on the first key lets the database start its index scan
        # at the cursor instead of reading every row before it.
        first = self.keys[0]
        bound = "gte" if first.descending == reverse else "lte"
        return Q(**{f"_k_{first.name}__{bound}": values[0]}) & condition

    def _position(self, row: Any) -> list[Any]:
        values = []
        for key in self.keys:
            value = getattr(row, f"_k_{key.name}")
            values.append(value.isoformat() if isinstance(value, datetime) else value)
        return values

    def _link(self, previous: bool) -> str | None:
        if previous and not self.has_prev or not previous and not self.has_next or not self.rows:
            return None
        row = self.rows[0] if previous else self.rows[-1]
        token = _encode(Cursor(values=self._position(row), reverse=previous))
        return replace_query_param(self.request.build_absolute_uri(), self.page_query_param, token)
