"""`/watch-lists/`, `/cards/` (with `photos/`) and `/card-photos/`: parse input, call one service or selector,
serialize the output."""

from __future__ import annotations

from django.http import FileResponse
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from videos import watchlist_selectors, watchlist_services
from videos.detect_views import ImageBodyParser, _photo
from videos.errors import BadParam
from videos.event_views import ReadDeleteViewSet
from videos.filters import CardFilterSet, CardPhotoFilterSet, WatchListFilterSet
from videos.negotiation import IMAGE_RENDERERS, ImageEndpointMixin
from videos.permissions import requires
from videos.serializers.watchlists import CardPhotoSerializer, CardSerializer, WatchListSerializer
from videos.views import ApiModelViewSet

_PHOTO_REQUEST = {
    "multipart/form-data": {"type": "object", "properties": {"photo": {"type": "string", "format": "binary"}},
                            "required": ["photo"]},
    "image/jpeg": OpenApiTypes.BINARY,
    "image/png": OpenApiTypes.BINARY,
}


@extend_schema_view(list=extend_schema(summary="List watch lists"), create=extend_schema(summary="Add a watch list"))
class WatchListViewSet(ApiModelViewSet):
    serializer_class = WatchListSerializer
    filterset_class = WatchListFilterSet

    def get_queryset(self):
        return watchlist_selectors.watch_list_list()

    def perform_create(self, serializer: WatchListSerializer) -> None:
        serializer.instance = watchlist_services.watch_list_create(data=serializer.validated_data)

    def perform_update(self, serializer: WatchListSerializer) -> None:
        serializer.instance = watchlist_services.watch_list_update(watch_list=serializer.instance,
                                                                   data=serializer.validated_data)

    def perform_destroy(self, instance) -> None:
        watchlist_services.watch_list_delete(watch_list=instance)


@extend_schema_view(list=extend_schema(summary="List cards"), create=extend_schema(summary="Add a card"))
class CardViewSet(ApiModelViewSet):
    serializer_class = CardSerializer
    filterset_class = CardFilterSet

    def get_queryset(self):
        return watchlist_selectors.card_list()

    def perform_create(self, serializer: CardSerializer) -> None:
        serializer.instance = watchlist_services.card_create(data=serializer.validated_data)

    def perform_update(self, serializer: CardSerializer) -> None:
        serializer.instance = watchlist_services.card_update(card=serializer.instance, data=serializer.validated_data)

    def perform_destroy(self, instance) -> None:
        watchlist_services.card_delete(card=instance)

    @extend_schema(summary="The card's photos", responses={200: CardPhotoSerializer(many=True)})
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    @requires("view")
    def photos(self, request: Request, pk: str) -> Response:
        for key in request.query_params:
            raise BadParam(_("Unknown query parameter."), param=key)
        photos = watchlist_selectors.card_photos(card=self.get_object())
        return Response(CardPhotoSerializer(photos, many=True, context=self.get_serializer_context()).data)

    @extend_schema(summary="Add a face photo to the card", request=_PHOTO_REQUEST,
                   responses={201: CardPhotoSerializer})
    @photos.mapping.post
    @requires("change")
    def add_photo(self, request: Request, pk: str) -> Response:
        card = self.get_object()
        photo = watchlist_services.card_photo_add(card_id=card.pk, data=_photo(request))
        return Response(CardPhotoSerializer(photo, context=self.get_serializer_context()).data,
                        status=status.HTTP_201_CREATED)

    def get_parsers(self):
        if getattr(self, "action", None) == "add_photo":
            return [ImageBodyParser()]
        return super().get_parsers()


@extend_schema_view(list=extend_schema(summary="List card photos"), count=extend_schema(summary="Count card photos"))
class CardPhotoViewSet(ImageEndpointMixin, mixins.DestroyModelMixin, ReadDeleteViewSet):
    serializer_class = CardPhotoSerializer
    filterset_class = CardPhotoFilterSet
    ordering_fields = {"id": "id", "created_date": "created_date"}
    http_method_names = ["get", "delete", "head", "options"]

    def get_queryset(self):
        return watchlist_selectors.card_photo_list()

    def perform_destroy(self, instance) -> None:
        watchlist_services.card_photo_delete(photo=instance)

    @extend_schema(summary="The photo as uploaded",
                   responses={(200, "image/jpeg"): OpenApiTypes.BINARY, (200, "image/png"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], filter_backends=[], renderer_classes=IMAGE_RENDERERS)
    @requires("view")
    def image(self, request: Request, pk: str) -> FileResponse:
        for key in request.query_params:
            raise BadParam(_("Unknown query parameter."), param=key)
        picture = watchlist_selectors.card_photo_picture(photo=self.get_object())
        response = FileResponse(picture.file, content_type=picture.content_type, filename=picture.name)
        response["Cache-Control"] = "private, max-age=3600"
        return response
