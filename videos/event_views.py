"""`/events/<kind>/` and `/clusters/<kind>/`: parse input, call one selector or service, serialize the output."""

from __future__ import annotations

from django.http import FileResponse
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from videos import event_filters, event_selectors, event_services, persons, watchlist_services
from videos.errors import BadParam
from videos.negotiation import IMAGE_RENDERERS, ImageEndpointMixin
from videos.pagination import KeysetPagination, parse_limit
from videos.permissions import requires
from videos.serializers.clusters import (
    ClusterMergeSerializer,
    ClusterSerializer,
    ClusterSplitSerializer,
    ClusterUpdateSerializer,
    FaceClusterSerializer,
    FaceClusterUpdateSerializer,
    MergeResultSerializer,
)
from videos.serializers.events import EventSerializer, FaceEventSerializer
from videos.views import ListCountMixin

PLURAL = {"face": "faces", "body": "bodies", "car": "cars"}

# Error responses (401, 403, 404, ...) are added to every operation by videos.errors.postprocess_error_responses.
_PICTURE_RESPONSES = {(200, "image/jpeg"): OpenApiTypes.BINARY, (200, "image/png"): OpenApiTypes.BINARY}


class ReadDeleteViewSet(ListCountMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    pagination_class = KeysetPagination
    default_ordering = "-id"
    http_method_names = ["get", "head", "options"]
    # Ids beyond 18 digits cannot exist (bigint) and would reach the database as an error otherwise.
    lookup_value_regex = "[0-9]{1,18}"
    kind: str


class EventViewSet(ImageEndpointMixin, mixins.DestroyModelMixin, ReadDeleteViewSet):
    # Events of one kind: list, count, retrieve, delete, and the two pictures (`thumbnail/`, `fullframe/`).
    # (No class docstrings here: drf-spectacular would take one as the description of every operation.)

    serializer_class = EventSerializer
    ordering_fields = {"id": "id", "created_date": "created_date", "quality": "quality"}
    http_method_names = ["get", "delete", "head", "options"]

    def get_queryset(self):
        return event_selectors.event_list(kind=self.kind)

    def perform_destroy(self, instance) -> None:
        event_services.event_delete(event=instance)

    @extend_schema(summary="The event's thumbnail", responses=_PICTURE_RESPONSES)
    @action(detail=True, methods=["get"], filter_backends=[], renderer_classes=IMAGE_RENDERERS)
    @requires("view")
    def thumbnail(self, request: Request, pk: str) -> FileResponse:
        return self._picture(request, "thumbnail")

    @extend_schema(summary="The event's full frame", responses=_PICTURE_RESPONSES)
    @action(detail=True, methods=["get"], filter_backends=[], renderer_classes=IMAGE_RENDERERS)
    @requires("view")
    def fullframe(self, request: Request, pk: str) -> FileResponse:
        return self._picture(request, "fullframe")

    def _picture(self, request: Request, which: event_selectors.PictureName) -> FileResponse:
        for key in request.query_params:
            raise BadParam(_("Unknown query parameter."), param=key)
        picture = event_selectors.event_picture(event=self.get_object(), which=which)
        response = FileResponse(picture.file, content_type=picture.content_type, filename=picture.name)
        response["Cache-Control"] = "private, max-age=3600"
        return response


@extend_schema_view(
    list=extend_schema(summary="List face events (or search them with looks_like)"),
    count=extend_schema(summary="Count face events"),
)
class FaceEventViewSet(EventViewSet):
    kind = "face"
    serializer_class = FaceEventSerializer

    @property
    def filterset_class(self):
        # looks_like and threshold belong to the list only (count/ would have no limit to count up to).
        if getattr(self, "action", None) == "list":
            return event_filters.FaceEventSearchFilterSet
        return event_filters.FaceEventFilterSet

    def list(self, request: Request, *args, **kwargs) -> Response:
        if "looks_like" not in request.query_params:
            return super().list(request, *args, **kwargs)
        for param in ("page", "ordering"):
            if param in request.query_params:
                raise BadParam(_("looks_like results are one page ordered by similarity; %(param)s cannot be "
                                 "combined with it.") % {"param": param}, param=param)
        queryset = self.filter_queryset(self.get_queryset())  # validates every parameter, looks_like included
        threshold = request.query_params.get("threshold")
        events = event_selectors.face_event_search(
            queryset=queryset,
            looks_like=request.query_params["looks_like"],
            threshold=float(threshold) if threshold else event_filters.DEFAULT_THRESHOLD,
            limit=parse_limit(request),
            user=request.user,
        )
        return Response({"next_page": None, "prev_page": None,
                         "results": self.get_serializer(events, many=True).data})


@extend_schema_view(list=extend_schema(summary="List body events"), count=extend_schema(summary="Count body events"))
class BodyEventViewSet(EventViewSet):
    kind = "body"
    filterset_class = event_filters.BodyEventFilterSet


@extend_schema_view(list=extend_schema(summary="List car events"), count=extend_schema(summary="Count car events"))
class CarEventViewSet(EventViewSet):
    kind = "car"
    filterset_class = event_filters.CarEventFilterSet


class ClusterViewSet(ReadDeleteViewSet):
    # Clusters of one kind: list, count, retrieve; each with the archives and camera groups of its events. Persons
    # (videos.persons): PATCH names one, merge/ and split/ regroup their events.

    serializer_class = ClusterSerializer
    ordering_fields = {"id": "id", "created_date": "created_date", "event_count": "event_count"}
    http_method_names = ["get", "patch", "post", "head", "options"]

    @extend_schema(summary="Name a cluster", request=ClusterUpdateSerializer, responses={200: ClusterSerializer})
    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        cluster = self.get_object()
        serializer = ClusterUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        if "name" in serializer.validated_data:
            cluster = persons.cluster_update(kind=self.kind, cluster_id=cluster.pk,
                                             name=serializer.validated_data["name"])
        return Response(self._serialize([cluster], many=False))

    @extend_schema(summary="Merge clusters into this one", request=ClusterMergeSerializer,
                   responses={200: MergeResultSerializer(many=True)})
    @action(detail=True, methods=["post"], filter_backends=[], pagination_class=None)
    @requires("change", "delete")
    def merge(self, request: Request, pk: str) -> Response:
        serializer = ClusterMergeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        results = persons.cluster_merge(kind=self.kind, cluster_id=int(pk), ids=serializer.validated_data["ids"])
        return Response(MergeResultSerializer(results, many=True).data)

    @extend_schema(summary="Split events out of this cluster into a new one", request=ClusterSplitSerializer,
                   responses={201: ClusterSerializer})
    @action(detail=True, methods=["post"], filter_backends=[])
    @requires("change", "add")
    def split(self, request: Request, pk: str) -> Response:
        serializer = ClusterSplitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        cluster = persons.cluster_split(kind=self.kind, cluster_id=int(pk),
                                        event_ids=serializer.validated_data["events"],
                                        name=serializer.validated_data["name"])
        return Response(self._serialize([cluster], many=False), status=status.HTTP_201_CREATED,
                        headers={"Location": self.reverse_action("detail", args=[cluster.pk])})

    def get_queryset(self):
        return event_selectors.cluster_list(kind=self.kind)

    def list(self, request: Request, *args, **kwargs) -> Response:
        clusters = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(self._serialize(clusters, many=True))

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        return Response(self._serialize([self.get_object()], many=False))

    def _serialize(self, clusters: list, *, many: bool):
        sources = event_selectors.cluster_sources(kind=self.kind, cluster_ids=[cluster.pk for cluster in clusters])
        context = {**self.get_serializer_context(), "sources": sources}
        return self.get_serializer(clusters if many else clusters[0], many=many, context=context).data


@extend_schema_view(list=extend_schema(summary="List face clusters"),
                    count=extend_schema(summary="Count face clusters"),
                    partial_update=extend_schema(summary="Name a face cluster, attach it to a card (or detach it)",
                                                 request=FaceClusterUpdateSerializer,
                                                 responses={200: FaceClusterSerializer}))
class FaceClusterViewSet(ClusterViewSet):
    kind = "face"
    filterset_class = event_filters.FaceClusterFilterSet
    serializer_class = FaceClusterSerializer

    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        cluster = self.get_object()
        serializer = FaceClusterUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if "name" in data:
            cluster = persons.cluster_update(kind=self.kind, cluster_id=cluster.pk, name=data["name"])
        if "card" in data:
            cluster = watchlist_services.face_cluster_set_card(cluster=cluster, card=data["card"])
        return Response(self._serialize([cluster], many=False))


@extend_schema_view(list=extend_schema(summary="List body clusters"),
                    count=extend_schema(summary="Count body clusters"))
class BodyClusterViewSet(ClusterViewSet):
    kind = "body"
    filterset_class = event_filters.BodyClusterFilterSet


@extend_schema_view(list=extend_schema(summary="List car clusters"), count=extend_schema(summary="Count car clusters"))
class CarClusterViewSet(ClusterViewSet):
    kind = "car"
    filterset_class = event_filters.CarClusterFilterSet


EVENT_VIEWSETS = {"face": FaceEventViewSet, "body": BodyEventViewSet, "car": CarEventViewSet}
CLUSTER_VIEWSETS = {"face": FaceClusterViewSet, "body": BodyClusterViewSet, "car": CarClusterViewSet}
