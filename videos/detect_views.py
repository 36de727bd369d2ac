"""`POST /detect/`: the faces of a photo, each with an id to search by (`looks_like=detection:<id>`).

The photo comes as a multipart form's `photo` field (as FindFace Multi takes it) or as the raw body with
`Content-Type: image/jpeg` or `image/png`. The answer has FindFace Multi's shape:

    {"orientation": 1, "objects": {"face": [{"id": "<detection id>", "bbox": {"left", "top", "right", "bottom"},
     "detection_score": 0.99, "low_quality": false, "quality": 0.99, "features": {}}]}}

`quality` (ours) is the detection's confidence, x0.8 where the box touches the edge, as for events; `low_quality`
is quality below the face detector's default `filter_min_quality`; `features` stays empty (no attributes).
"""

from __future__ import annotations

from django.conf import settings
from django.http.multipartparser import MultiPartParserError
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from processing.stream_settings import detector_defaults
from videos.detections import faces_detect
from videos.errors import BadParam, PayloadTooLarge, UnsupportedMediaType
from videos.models import FaceDetection

IMAGE_TYPES = ("image/jpeg", "image/jpg", "image/png")
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the photo


class ImageBodyParser(BaseParser):
    """Declares the accepted media types; the view reads the body itself and never calls parse()."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):  # pragma: no cover - never called
        raise BadParam(_("Unexpected body."))


class CanViewFaceEvents(permissions.BasePermission):
    """A photo's faces are probes for face events: the user must be allowed to see face events."""

    required_perms = ["videos.view_faceevent"]  # what the auth matrix test checks this class against

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.has_perm("videos.view_faceevent"))


class BoxSerializer(serializers.Serializer):
    left = serializers.IntegerField(source="frame_coords_left")
    top = serializers.IntegerField(source="frame_coords_top")
    right = serializers.IntegerField(source="frame_coords_right")
    bottom = serializers.IntegerField(source="frame_coords_bottom")


class DetectedFaceSerializer(serializers.Serializer):
    id = serializers.CharField()
    bbox = BoxSerializer(source="*")
    detection_score = serializers.FloatField(source="confidence")
    low_quality = serializers.SerializerMethodField()
    quality = serializers.FloatField()
    features = serializers.SerializerMethodField()

    def get_low_quality(self, detection: FaceDetection) -> bool:
        return detection.quality < detector_defaults("face")["filter_min_quality"]

    def get_features(self, detection: FaceDetection) -> dict:
        return {}


class DetectedObjectsSerializer(serializers.Serializer):
    face = DetectedFaceSerializer(many=True)


class DetectResponseSerializer(serializers.Serializer):
    orientation = serializers.IntegerField()
    objects = DetectedObjectsSerializer()


class DetectView(APIView):
    parser_classes = [ImageBodyParser]
    permission_classes = [CanViewFaceEvents]

    @extend_schema(
        summary="Detect faces on a photo",
        request={"multipart/form-data": {"type": "object", "properties": {"photo": {"type": "string",
                                                                                     "format": "binary"}},
                                         "required": ["photo"]},
                 "image/jpeg": OpenApiTypes.BINARY, "image/png": OpenApiTypes.BINARY},
        responses={200: DetectResponseSerializer},
    )
    def post(self, request: Request) -> Response:
        result = faces_detect(data=_photo(request), user=request.user)
        return Response(DetectResponseSerializer(
            {"orientation": result.orientation, "objects": {"face": result.detections}}).data)


def _photo(request: Request) -> bytes:
    """The photo's bytes from a multipart `photo` field or the raw body, never more than the limit."""
    raw = request._request
    limit = settings.FFV_DETECT_MAX_IMAGE_SIZE
    media_type = raw.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    length = _content_length(raw.META.get("CONTENT_LENGTH"))
    too_large = PayloadTooLarge(_("The photo is larger than the limit of %(limit)d bytes.") % {"limit": limit})
    if media_type == "multipart/form-data":
        if length is not None and length > limit + MULTIPART_OVERHEAD:
            raise too_large
        try:
            files = raw.FILES
        except MultiPartParserError as exc:
            raise BadParam(_("The multipart body cannot be read: %(reason)s") % {"reason": exc}, param="photo") from exc
        photo = files.get("photo")
        if photo is None:
            raise BadParam(_("The multipart form needs a 'photo' field."), param="photo")
        if photo.size > limit:
            raise too_large
        return photo.read()
    if media_type in IMAGE_TYPES:
        if length is not None and length > limit:
            raise too_large
        data = raw.read(limit + 1)
        if len(data) > limit:
            raise too_large
        return data
    raise UnsupportedMediaType(
        _("Send the photo as multipart/form-data with a 'photo' field, or as the raw body with Content-Type "
          "image/jpeg or image/png; got %(type)r.") % {"type": media_type or "none"}
    )


def _content_length(value: str | None) -> int | None:
    if value in (None, ""):
        return None
    try:
        length = int(value)
    except ValueError:
        raise BadParam(_("Content-Length must be an integer."), param="Content-Length") from None
    if length < 0:
        raise BadParam(_("Content-Length must not be negative."), param="Content-Length")
    return length
