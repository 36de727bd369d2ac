"""FilterSets of the events and clusters lists (`/events/<kind>/`, `/clusters/<kind>/` and their `count/`)."""

from __future__ import annotations

import django_filters
from django.db.models import Exists, OuterRef, QuerySet
from django.utils.translation import gettext as _

from videos.errors import BadParam
from videos.filters import BooleanFilter, CreatedDateFilterSet, IntegerListFilter, NumberFilter
from videos.models import BodyCluster, BodyEvent, CarCluster, CarEvent, FaceCluster, FaceEvent

# looks_like's similarity threshold when the request gives none.
DEFAULT_THRESHOLD = 0.75


class EventFilterSet(CreatedDateFilterSet):
    video_archive = IntegerListFilter(field_name="video_archive_id", label="Archive ids (repeated or comma list).")
    camera_groups = IntegerListFilter(field_name="camera_group_id", label="Camera group ids (repeated or comma list).")
    camera_group = IntegerListFilter(field_name="camera_group_id", label="The same as camera_groups.")
    id_in = IntegerListFilter(field_name="id", label="Event ids (repeated or comma list).")
    cluster_in = IntegerListFilter(field_name="cluster_id", label="Cluster ids (repeated or comma list).")
    quality_gte = NumberFilter(field_name="quality", lookup_expr="gte", min_value=0, max_value=1,
                                              label="Quality at least this (0..1).")
    quality_lte = NumberFilter(field_name="quality", lookup_expr="lte", min_value=0, max_value=1,
                                              label="Quality at most this (0..1).")
    ordering = django_filters.OrderingFilter(fields=("id", "created_date", "quality"))

    class Meta:
        fields: list[str] = []


class FaceEventFilterSet(EventFilterSet):
    matched = BooleanFilter(field_name="matched_card", lookup_expr="isnull", exclude=True,
                                           label="Matched a watch list card (true) or not (false).")
    matched_card = IntegerListFilter(field_name="matched_card_id", label="Matched one of these cards.")
    matched_lists = IntegerListFilter(method="filter_matched_lists", field_name="watchlist_id",
                                      label="Matched through any of these watch lists.")
    confidence_gte = NumberFilter(field_name="match_confidence", lookup_expr="gte", min_value=0, max_value=1,
                                  label="Similarity to the matched card at least this (0..1).")

    class Meta(EventFilterSet.Meta):
        model = FaceEvent

    def filter_matched_lists(self, queryset: QuerySet, name: str, value: list[int] | None) -> QuerySet:
        """Events matched through at least one of the lists (each event once)."""
        if value is None:
            return queryset
        links = FaceEvent.matched_lists.through.objects.filter(faceevent_id=OuterRef("pk"), watchlist_id__in=value)
        return queryset.filter(Exists(links))


class BodyEventFilterSet(EventFilterSet):
    class Meta(EventFilterSet.Meta):
        model = BodyEvent


class CarEventFilterSet(EventFilterSet):
    class Meta(EventFilterSet.Meta):
        model = CarEvent


class FaceEventSearchFilterSet(FaceEventFilterSet):
    """The face list's filters plus `looks_like` and `threshold`; the view runs the search on the filtered rows.

    Only the list takes these (a search result is one page of at most `limit` matches), not `count/`.
    """

    looks_like = django_filters.CharFilter(
        method="filter_looks_like", max_length=256,
        label="detection:<id> or faceevent:<id>: events that look like it, most similar first, each with "
              "looks_like_confidence; one page of at most `limit`, no `page` or `ordering`.",
    )
    threshold = NumberFilter(
        method="filter_threshold", min_value=0, max_value=1,
        label=f"Least similarity for looks_like, 0..1 (default {DEFAULT_THRESHOLD}).",
    )

    def filter_looks_like(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        """Validated here, applied by the view."""
        return queryset

    def filter_threshold(self, queryset: QuerySet, name: str, value: float) -> QuerySet:
        """Validated here, applied by the view; threshold means nothing without looks_like."""
        if not self.form.cleaned_data.get("looks_like"):
            raise BadParam(_("threshold needs looks_like."), param="threshold")
        return queryset


class ClusterFilterSet(CreatedDateFilterSet):
    """`video_archive` / `camera_groups`: clusters with at least one event from those archives / groups."""

    id_in = IntegerListFilter(field_name="id", label="Cluster ids (repeated or comma list).")
    name_contains = django_filters.CharFilter(field_name="name", lookup_expr="icontains", max_length=256,
                                              label="Clusters whose name contains this (any case).")
    video_archive = IntegerListFilter(method="filter_member", field_name="video_archive_id",
                                      label="Clusters with events from these archives (repeated or comma list).")
    camera_groups = IntegerListFilter(method="filter_member", field_name="camera_group_id",
                                      label="Clusters with events from these camera groups (repeated or comma list).")
    ordering = django_filters.OrderingFilter(fields=("id", "created_date", "event_count"))

    class Meta:
        fields: list[str] = []

    def filter_member(self, queryset: QuerySet, name: str, value: list[int] | None) -> QuerySet:
        """Clusters with at least one event whose `name` (video_archive_id, camera_group_id) is in the list."""
        if value is None:
            return queryset
        event_model = queryset.model._meta.get_field("events").related_model
        members = event_model.objects.order_by().filter(cluster_id=OuterRef("pk"), **{f"{name}__in": value})
        return queryset.filter(Exists(members))


class FaceClusterFilterSet(ClusterFilterSet):
    class Meta(ClusterFilterSet.Meta):
        model = FaceCluster


class BodyClusterFilterSet(ClusterFilterSet):
    class Meta(ClusterFilterSet.Meta):
        model = BodyCluster


class CarClusterFilterSet(ClusterFilterSet):
    class Meta(ClusterFilterSet.Meta):
        model = CarCluster
