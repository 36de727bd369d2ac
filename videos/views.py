"""API views: parse input, call one service or selector, serialize the output."""

from __future__ import annotations

from typing import Any

import django_filters
from django.core.exceptions import RequestDataTooBig, ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse, QueryDict
from django.http.multipartparser import MultiPartParser, MultiPartParserError
from django.utils.datastructures import MultiValueDict
from django.utils.translation import gettext as _
from django_filters.constants import EMPTY_VALUES
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response

from videos import cleanup, selectors, services
from videos.errors import BadParam, endpoint_views
from videos.filters import CameraFilterSet, CameraGroupFilterSet, VideoArchiveFilterSet
from videos.negotiation import IMAGE_RENDERERS, ImageEndpointMixin
from videos.pagination import KeysetPagination
from videos.permissions import requires
from videos.serializers.archives import (
    CameraGroupSerializer,
    CameraSerializer,
    CountSerializer,
    VideoArchiveSerializer,
)
from videos.serializers.fields import QueryIntegerField
from videos.serializers.stream_settings import validate_geometry

# Error responses (all in the envelope) are added to every operation by videos.errors.postprocess_error_responses.


def _ignores_empty_value(filter_: django_filters.Filter, name: str) -> bool:
    """Whether `?name=` reads as if the parameter were absent: its field takes "" and the filter skips it."""
    field = filter_.field
    raw = field.widget.value_from_datadict(QueryDict(f"{name}="), MultiValueDict(), name)
    try:
        value = field.clean(raw)
    except ValidationError:
        return False
    return value in EMPTY_VALUES


def postprocess_empty_query_values(result: dict[str, Any], generator: Any, request: Any, public: bool,
                                   **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular hook: `allowEmptyValue` on the filters that read an empty value as absent (django-filter's
    rule, e.g. `?created_date_lt=`), so the schema says what the API accepts; the others answer BAD_PARAM."""
    for (path, method), view in endpoint_views(generator).items():
        operation = result.get("paths", {}).get(path, {}).get(method)
        filterset_class = getattr(view, "filterset_class", None) if getattr(view, "filter_backends", None) else None
        if operation is None or filterset_class is None:
            continue
        filters = filterset_class.base_filters
        for parameter in operation.get("parameters", []):
            name = parameter.get("name")
            if parameter.get("in") == "query" and name in filters and _ignores_empty_value(filters[name], name):
                parameter["allowEmptyValue"] = True
    return result


class RawUploadParser(BaseParser):
    """Declares the raw upload media types; the view streams the body itself and never calls parse()."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):  # pragma: no cover - never called
        raise BadParam(_("Unexpected body."))


class ListCountMixin:
    # (No class docstring: drf-spectacular would take it as the description of every operation of the view.)

    @extend_schema(responses={200: CountSerializer}, filters=True)
    @action(detail=False, methods=["get"], url_path="count")
    def count(self, request: Request) -> Response:
        """The number of rows the list's filters select."""
        if self.paginator is not None and "ordering" in request.query_params:
            # Checked as the list checks it (`ordering=,` is a BAD_PARAM there), though a count has no order.
            self.paginator._ordering(request, self)
        queryset = self.filter_queryset(self.get_queryset())
        return Response({"count": selectors.row_count(queryset)})


class ApiModelViewSet(ListCountMixin, viewsets.ModelViewSet):
    pagination_class = KeysetPagination
    ordering_fields = {"id": "id", "created_date": "created_date", "name": "name"}
    default_ordering = "-id"
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]
    # Ids beyond 18 digits cannot exist (bigint) and would reach the database as an error otherwise.
    lookup_value_regex = "[0-9]{1,18}"

    def get_success_headers(self, data: Any) -> dict[str, str]:
        # The created object's own URL. DRF's default echoes the body's `url` field, which on an archive is the
        # client's source URL.
        return {"Location": self.reverse_action("detail", args=[data["id"]])}


@extend_schema_view(
    list=extend_schema(summary="List video archives"),
    create=extend_schema(summary="Add a new video archive"),
)
class VideoArchiveViewSet(ImageEndpointMixin, ApiModelViewSet):
    serializer_class = VideoArchiveSerializer
    filterset_class = VideoArchiveFilterSet

    def get_queryset(self):
        return selectors.archive_page_list() if self.action == "list" else selectors.archive_list()

    def perform_create(self, serializer: VideoArchiveSerializer) -> None:
        serializer.instance = services.archive_create(data=serializer.validated_data)

    def perform_update(self, serializer: VideoArchiveSerializer) -> None:
        serializer.instance = services.archive_update(archive=serializer.instance, data=serializer.validated_data)

    def perform_destroy(self, instance) -> None:
        services.archive_delete(archive_id=instance.pk)

    @extend_schema(request=None, responses={200: None, 409: OpenApiResponse(description="CONFLICT"),
                                            503: OpenApiResponse(description="SERVICE_UNAVAILABLE")})
    @action(detail=True, methods=["post"], filter_backends=[])
    @requires("change")
    def process(self, request: Request, pk: str) -> Response:
        services.archive_process(archive_id=self._archive_id())
        return Response(status=status.HTTP_200_OK)

    @extend_schema(request=None, responses={200: None})
    @action(detail=True, methods=["post"], filter_backends=[])
    @requires("change")
    def stop(self, request: Request, pk: str) -> Response:
        services.archive_stop(archive_id=self._archive_id())
        return Response(status=status.HTTP_200_OK)

    @extend_schema(
        request={"application/octet-stream": OpenApiTypes.BINARY, "video/*": OpenApiTypes.BINARY,
                 "multipart/form-data": {"type": "object", "properties": {"file": {"type": "string",
                                                                                     "format": "binary"}}}},
        responses={201: None, 400: OpenApiResponse(description="BAD_PARAM"),
                   413: OpenApiResponse(description="PAYLOAD_TOO_LARGE"),
                   415: OpenApiResponse(description="UNSUPPORTED_MEDIA_TYPE")},
    )
    @action(detail=True, methods=["put"], url_path="upload/source_file", parser_classes=[RawUploadParser],
            filter_backends=[])
    @requires("change")
    def upload_source_file(self, request: Request, pk: str) -> Response:
        archive_id = self._archive_id()
        cleanup.upload_temps_sweep_now_and_then()  # what killed web workers of this host left behind
        raw = request._request
        content_type = raw.META.get("CONTENT_TYPE", "")
        content_length = _content_length(raw.META.get("CONTENT_LENGTH"))
        services.check_upload_headers(content_type=content_type, content_length=content_length)
        if content_type.lower().startswith("multipart/form-data"):
            # Refuse before reading the body: unknown archive (404) or one being processed (409).
            services.check_upload_target(archive_id=archive_id)
            upload = _multipart_file(raw, content_length or 0)
            try:
                services.archive_upload_source(archive_id=archive_id, reader=upload, size=upload.size)
            finally:
                upload.close()
        else:
            services.archive_upload_source(archive_id=archive_id, reader=raw, size=content_length or 0)
        return Response(status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["delete"], url_path="file", filter_backends=[])
    @requires("change")
    def delete_file(self, request: Request, pk: str) -> Response:
        services.archive_delete_source(archive_id=self._archive_id())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        methods=["GET", "POST"],
        request=None,
        parameters=[
            OpenApiParameter("width", int, description="Width of the screenshot in pixels."),
            OpenApiParameter("height", int, description="Height of the screenshot in pixels."),
            OpenApiParameter("quality", int, description="JPEG quality, 1-100."),
            OpenApiParameter("rot", str, description="Crop WxH+X+Y before scaling."),
        ],
        responses={(200, "image/jpeg"): OpenApiTypes.BINARY, 404: OpenApiResponse(description="NOT_FOUND")},
    )
    @action(detail=True, methods=["get", "post"], filter_backends=[], renderer_classes=IMAGE_RENDERERS)
    @requires("view")
    def screenshot(self, request: Request, pk: str) -> HttpResponse:
        params = ScreenshotQuerySerializer.parse(request)
        jpeg = services.archive_screenshot(
            archive_id=self._archive_id(), params=services.ScreenshotParams(**params),
            fresh=request.method == "POST",
        )
        return HttpResponse(jpeg, content_type="image/jpeg")

    def _archive_id(self) -> int:
        return int(self.kwargs["pk"])


class _CountingReader:
    """Counts the bytes read from the request body; a client that went away reads as the end of the body."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._stream.read(size)
        except OSError:
            return b""
        self.count += len(data)
        return data


class _UploadMultiPartParser(MultiPartParser):
    def sanitize_file_name(self, file_name: str) -> str:
        # Django skips a file part whose name sanitizes to nothing ("../", "..", "/"). The client's file name is
        # never used (the stored name is generated), so such a part is taken like any other.
        return super().sanitize_file_name(file_name) or "upload"


def _multipart_file(raw: HttpRequest, content_length: int) -> UploadedFile:
    """The `file` field of a multipart body, streamed to a temporary file by Django's upload handlers.

    Django parses multipart bodies only for POST, so a PUT is parsed here.
    """
    reader = _CountingReader(raw)
    # A part without a filename is a text field to Django, read into memory up to DATA_UPLOAD_MAX_MEMORY_SIZE.
    no_filename = BadParam(
        _("The 'file' part has no filename in its Content-Disposition, so it is read as a text field; send the video "
          "as a file part (any filename will do)."),
        param="file",
    )
    try:
        fields, files = _UploadMultiPartParser(raw.META, reader, raw.upload_handlers, raw.encoding).parse()
    except MultiPartParserError as exc:
        raise BadParam(_("The multipart body cannot be read: %(reason)s") % {"reason": exc}, param="file") from exc
    except RequestDataTooBig:
        raise no_filename from None
    upload = files.get("file")
    error = None
    if reader.count < content_length:
        error = BadParam(
            _("The upload was truncated: %(received)d of %(size)d bytes arrived.")
            % {"received": reader.count, "size": content_length},
            param="source_file",
        )
    elif upload is None and "file" in fields:
        error = no_filename
    elif upload is None:
        error = BadParam(_("The multipart form needs a 'file' field."), param="file")
    if error is not None:
        for _name, uploads in files.lists():
            for uploaded in uploads:
                uploaded.close()
        raise error
    return upload


def _content_length(raw: str | None) -> int | None:
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadParam(_("Content-Length must be an integer."), param="Content-Length") from None
    if value < 0:
        raise BadParam(_("Content-Length must not be negative."), param="Content-Length")
    return value


class ScreenshotQuerySerializer(serializers.Serializer):
    width = QueryIntegerField(min_value=1, max_value=8192, required=False)
    height = QueryIntegerField(min_value=1, max_value=8192, required=False)
    quality = QueryIntegerField(min_value=1, max_value=100, required=False, default=95)
    rot = serializers.CharField(allow_blank=True, max_length=64, required=False, default="",
                                validators=[validate_geometry])

    @classmethod
    def parse(cls, request: Request) -> dict[str, Any]:
        for key in request.query_params:
            if key not in cls().fields:
                raise BadParam(_("Unknown query parameter."), param=key)
        serializer = cls(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)


class CameraGroupViewSet(ApiModelViewSet):
    serializer_class = CameraGroupSerializer
    filterset_class = CameraGroupFilterSet

    def get_queryset(self):
        return selectors.camera_group_list()

    def perform_destroy(self, instance) -> None:
        services.camera_group_delete(group=instance)


class CameraViewSet(ApiModelViewSet):
    serializer_class = CameraSerializer
    filterset_class = CameraFilterSet

    def get_queryset(self):
        return selectors.camera_list()
