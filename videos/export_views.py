"""`/exports/`: parse input, call one service or selector, serialize the output."""

from __future__ import annotations

from typing import Any

import django_filters
from django.http import FileResponse
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from videos import exports
from videos.errors import BadParam
from videos.filters import CreatedDateFilterSet, IntegerListFilter
from videos.models import EventKind, Export, ExportFormat, ExportStatus
from videos.pagination import KeysetPagination
from videos.permissions import requires
from videos.serializers.exports import ExportCreateSerializer, ExportSerializer
from videos.views import ListCountMixin


class ExportFilterSet(CreatedDateFilterSet):
    id_in = IntegerListFilter(field_name="id", label="Export ids (repeated or comma list).")
    kind = django_filters.ChoiceFilter(field_name="kind", choices=EventKind.choices)
    format = django_filters.ChoiceFilter(field_name="format", choices=ExportFormat.choices)
    status = django_filters.ChoiceFilter(field_name="status", choices=ExportStatus.choices)
    ordering = django_filters.OrderingFilter(fields=("id", "created_date"))

    class Meta:
        model = Export
        fields: list[str] = []


class _FileRenderer(BaseRenderer):
    """Declares the media types of download/ (its view returns the file itself); errors stay JSON."""

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return JSONRenderer().render(data, JSONRenderer.media_type, renderer_context)


class CsvRenderer(_FileRenderer):
    media_type = "text/csv"
    format = "csv"


class ZipRenderer(_FileRenderer):
    media_type = "application/zip"
    format = "zip"


_DOWNLOAD_RESPONSES = {
    (200, "text/csv"): OpenApiTypes.BINARY,
    (200, "application/zip"): OpenApiTypes.BINARY,
    409: OpenApiResponse(description="CONFLICT: the export is not completed (queued, in progress or failed)."),
    410: OpenApiResponse(description="GONE: the export expired (expires_at) and its file was deleted."),
}


@extend_schema_view(
    list=extend_schema(summary="List your exports (staff: everyone's)"),
    create=extend_schema(summary="Export the events a list query selects, as CSV or ZIP (built in the background)",
                         request=ExportCreateSerializer,
                         responses={201: ExportSerializer, 503: OpenApiResponse(description="SERVICE_UNAVAILABLE")}),
    retrieve=extend_schema(summary="An export's status and progress"),
    destroy=extend_schema(summary="Delete an export and its file"),
    count=extend_schema(summary="Count your exports"),
)
class ExportViewSet(ListCountMixin, mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                    mixins.DestroyModelMixin, viewsets.GenericViewSet):
    # Exports of events: create, list, count, retrieve, delete, and the file (`download/`); a user sees their own
    # exports only, staff everyone's (another user's export is a 404, so ids tell nothing).
    serializer_class = ExportSerializer
    filterset_class = ExportFilterSet
    pagination_class = KeysetPagination
    ordering_fields = {"id": "id", "created_date": "created_date"}
    default_ordering = "-id"
    http_method_names = ["get", "post", "delete", "head", "options"]
    lookup_value_regex = "[0-9]{1,18}"

    def get_queryset(self):
        return exports.export_list(user=self.request.user if self.request is not None else None)

    def create(self, request: Request, *args, **kwargs) -> Response:
        serializer = ExportCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        self._check_event_permission(request, data["kind"])
        export = exports.export_create(user=request.user, kind=data["kind"], format=data["format"],
                                       filters=data.get("filters") or {}, limit=data.get("limit"),
                                       base_url=request.build_absolute_uri("/"))
        body = self.get_serializer(export).data
        return Response(body, status=status.HTTP_201_CREATED,
                        headers={"Location": self.reverse_action("detail", args=[export.pk])})

    @staticmethod
    def _check_event_permission(request: Request, kind: str) -> None:
        """An export shows events: its user needs the event list's own permission too (view_<kind>event)."""
        if not request.user.has_perm(f"videos.view_{kind}event"):
            raise PermissionDenied(_("You may not view %(kind)s events.") % {"kind": kind})

    def perform_destroy(self, instance: Export) -> None:
        exports.export_delete(export=instance)

    @extend_schema(summary="Download the export's file (CSV, or ZIP of the CSV and thumbnails)",
                   responses=_DOWNLOAD_RESPONSES)
    @action(detail=True, methods=["get"], filter_backends=[], renderer_classes=[JSONRenderer, CsvRenderer,
                                                                                  ZipRenderer])
    @requires("view")
    def download(self, request: Request, pk: str) -> FileResponse:
        for key in request.query_params:
            raise BadParam(_("Unknown query parameter."), param=key)
        export = self.get_object()
        self._check_event_permission(request, export.kind)
        handle, content_type, name = exports.export_download(export=export)
        return FileResponse(handle, content_type=content_type, as_attachment=True, filename=name)

    def finalize_response(self, request, response, *args, **kwargs):
        # Errors of download/ are JSON whatever file type the client accepted.
        if isinstance(response, Response) and isinstance(getattr(request, "accepted_renderer", None), _FileRenderer):
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)
