"""`/webhooks/` and `/webhooks/{id}/deliveries/`: parse input, call one service or selector, serialize the output."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from videos.models import DeliveryStatus, WebhookEventType
from videos.permissions import requires
from videos.serializers.webhooks import WebhookDeliveryPageSerializer, WebhookDeliverySerializer, WebhookSerializer
from videos.views import ApiModelViewSet
from videos.webhook_filters import WebhookDeliveryFilterSet, WebhookFilterSet
from videos.webhooks import selectors, services


@extend_schema_view(
    list=extend_schema(summary="List webhooks"),
    create=extend_schema(summary="Add a webhook (README \"Webhooks\": signature, retries, order)"),
    deliveries=extend_schema(summary="The webhook's deliveries, newest first: status, attempts, last error",
                             # The filters by hand: drf-spectacular would read them against the webhooks' queryset.
                             responses={200: WebhookDeliveryPageSerializer},
                             parameters=[
                                 OpenApiParameter("status", {"type": "array", "items": {
                                     "type": "string", "enum": list(DeliveryStatus.values)}}, explode=True,
                                     description="pending, delivered, failed (repeated for several)."),
                                 OpenApiParameter("event_type", {"type": "string",
                                                                 "enum": list(WebhookEventType.values)}),
                                 OpenApiParameter("ordering", {"type": "string", "enum": [
                                     "id", "-id", "created_date", "-created_date"]}),
                                 *[OpenApiParameter(f"created_date_{op}", {"type": "string", "format": "date-time"})
                                   for op in ("gt", "gte", "lt", "lte")],
                                 OpenApiParameter("created_date_last_n_days", {"type": "number", "minimum": 0,
                                                                               "maximum": 100000}),
                                 *[OpenApiParameter(f"created_date_nth_{week}_week", {"type": "integer", "minimum": 1,
                                                                                      "maximum": 10000})
                                   for week in ("full", "work")],
                                 OpenApiParameter("limit", {"type": "integer", "minimum": 1,
                                                            "maximum": settings.FFV_PAGE_SIZE_MAX},
                                                  description="Number of results to return per page."),
                                 OpenApiParameter("page", str, description="The cursor of a page (next_page)."),
                             ]),
)
class WebhookViewSet(ApiModelViewSet):
    serializer_class = WebhookSerializer
    ordering_fields = {"id": "id", "created_date": "created_date"}

    @property
    def filterset_class(self) -> Any:  # type: ignore[override]
        return WebhookDeliveryFilterSet if getattr(self, "action", None) == "deliveries" else WebhookFilterSet

    def get_queryset(self):
        return selectors.webhook_list()

    def perform_create(self, serializer: WebhookSerializer) -> None:
        serializer.instance = services.webhook_create(data=serializer.validated_data)

    def perform_update(self, serializer: WebhookSerializer) -> None:
        serializer.instance = services.webhook_update(webhook=serializer.instance, data=serializer.validated_data)

    def perform_destroy(self, instance) -> None:
        services.webhook_delete(webhook_id=instance.pk)

    @action(detail=True, methods=["get"], serializer_class=WebhookDeliverySerializer)
    @requires("view")
    def deliveries(self, request: Request, pk: str) -> Response:
        webhook = selectors.webhook_get(webhook_id=int(pk))
        queryset = self.filter_queryset(selectors.delivery_list(webhook_id=webhook.pk))
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)
