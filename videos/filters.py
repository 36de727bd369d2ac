"""FilterSets of the list endpoints and the backend that makes every bad query parameter a BAD_PARAM."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import django_filters
from django import forms
from django.db import connection
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone
from django.utils.translation import get_language, gettext_lazy
from django.utils.translation import gettext as _
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from videos.errors import BadParam
from videos.models import Camera, CameraGroup, Card, CardPhoto, VideoArchive, WatchList

# Query parameters that pagination reads; every other parameter must be a declared filter.
PAGINATION_PARAMS = {"limit", "page"}


class CommaOrRepeatedWidget(forms.Widget):
    """Reads `?x=1&x=2` and `?x=1,2` (and both mixed) as one list."""

    def value_from_datadict(self, data: Any, files: Any, name: str) -> list[str] | None:
        if name not in data:
            return None
        values = data.getlist(name) if hasattr(data, "getlist") else [data[name]]
        return [part.strip() for value in values for part in str(value).split(",")]


class AsciiDecimalField(forms.DecimalField):
    def to_python(self, value: Any) -> Any:
        # Decimal() alone also reads other scripts' digits ("٠.٥").
        if isinstance(value, str) and not value.isascii():
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        return super().to_python(value)


class NumberFilter(django_filters.NumberFilter):
    """django-filter's NumberFilter in ASCII digits only."""

    field_class = AsciiDecimalField


class IntegerListField(forms.Field):
    widget = CommaOrRepeatedWidget
    default_error_messages = {"invalid": gettext_lazy("Enter a list of integers, e.g. 1,2,3.")}

    def to_python(self, value: list[str] | None) -> list[int] | None:
        if value is None:
            return None
        result = []
        for item in value:
            # Plain ASCII digits only: int() alone would also take "1_0", "+1", "-1" and non-ASCII digits.
            try:
                number = int(item) if item.isascii() and item.isdigit() else -1
            except ValueError:  # more digits than int() converts
                number = -1
            if number < 0 or number > 2**63 - 1:
                raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
            result.append(number)
        return result


@extend_schema_field(serializers.ListField(child=serializers.IntegerField(min_value=0)))
class IntegerListFilter(django_filters.Filter):
    """Matches rows whose field is in the given ids; repeated keys and comma lists both work."""

    field_class = IntegerListField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("lookup_expr", "in")
        super().__init__(*args, **kwargs)

    def filter(self, qs: QuerySet, value: list[int] | None) -> QuerySet:
        if value is None:
            return qs
        return qs.filter(**{f"{self.field_name}__in": value})


class StrictBooleanField(forms.Field):
    """`true` or `false` (also `1` / `0`); anything else is invalid, not read as absent."""

    default_error_messages = {"invalid": gettext_lazy("Must be true or false.")}

    def to_python(self, value: Any) -> bool | None:
        if value in (None, ""):
            return None
        text = str(value).strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise forms.ValidationError(self.error_messages["invalid"], code="invalid")


@extend_schema_field(serializers.BooleanField())
class BooleanFilter(django_filters.Filter):
    field_class = StrictBooleanField


class BoundedIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time that also exists in UTC (the database's zone): years 1 to 9999 there too."""

    def to_python(self, value: Any) -> datetime | None:
        result = super().to_python(value)
        if result is not None:
            try:
                result.astimezone(UTC)
            except OverflowError:
                raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from None
        return result


class BoundedIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = BoundedIsoDateTimeField


def week_start(now: datetime, weeks_back: int) -> datetime:
    """Monday 00:00, in the current time zone, of the week `weeks_back` weeks before this one (1 = this week)."""
    local = timezone.localtime(now)
    monday = local.date() - timedelta(days=local.weekday()) - timedelta(weeks=weeks_back - 1)
    return timezone.make_aware(datetime.combine(monday, datetime.min.time()))


# Form classes by (FilterSet class, language): django-filter builds one per request, every filter's form field with
# its translated label; none of this API's filters depends on the request (no querysets of choices).
_FORM_CLASSES: dict[tuple[type, str | None], type[forms.Form]] = {}


class CreatedDateFilterSet(django_filters.FilterSet):
    """`created_date_*` filters shared by every list of the API."""

    def get_form_class(self) -> type[forms.Form]:
        key = (type(self), get_language())
        form_class = _FORM_CLASSES.get(key)
        if form_class is None:
            form_class = _FORM_CLASSES[key] = super().get_form_class()
        return form_class

    created_date_gt = BoundedIsoDateTimeFilter(field_name="created_date", lookup_expr="gt")
    created_date_gte = BoundedIsoDateTimeFilter(field_name="created_date", lookup_expr="gte")
    created_date_lt = BoundedIsoDateTimeFilter(field_name="created_date", lookup_expr="lt")
    created_date_lte = BoundedIsoDateTimeFilter(field_name="created_date", lookup_expr="lte")
    created_date_last_n_days = NumberFilter(method="filter_last_n_days", min_value=0, max_value=100000)
    created_date_nth_full_week = NumberFilter(
        method="filter_nth_full_week", min_value=1, max_value=10000
    )
    created_date_nth_work_week = NumberFilter(
        method="filter_nth_work_week", min_value=1, max_value=10000
    )

    def filter_last_n_days(self, queryset: QuerySet, name: str, value: float) -> QuerySet:
        """Created at or after now minus N days (N may be fractional)."""
        return queryset.filter(created_date__gte=timezone.now() - timedelta(days=float(value)))

    def filter_nth_full_week(self, queryset: QuerySet, name: str, value: int) -> QuerySet:
        """The N-th calendar week counting back (1 = this week): Monday 00:00 to next Monday 00:00."""
        start = week_start(timezone.now(), self._week_number(name, value))
        return queryset.filter(created_date__gte=start, created_date__lt=start + timedelta(days=7))

    def filter_nth_work_week(self, queryset: QuerySet, name: str, value: int) -> QuerySet:
        """The same week as nth_full_week, working days only: Monday 00:00 to Saturday 00:00."""
        start = week_start(timezone.now(), self._week_number(name, value))
        return queryset.filter(created_date__gte=start, created_date__lt=start + timedelta(days=5))

    @staticmethod
    def _week_number(name: str, value: Any) -> int:
        if value != int(value):
            raise BadParam(_("Must be an integer >= 1."), param=name)
        return int(value)


# Matches of `name_contains` read by id instead of filtering a walk of the page's index (filter_name_contains).
NAME_PROBE_ROWS = 2000


class VideoArchiveFilterSet(CreatedDateFilterSet):
    case_in = IntegerListFilter(field_name="case_id")
    id_in = IntegerListFilter(field_name="id")
    camera_groups = IntegerListFilter(field_name="camera_group_id")
    name = django_filters.CharFilter(field_name="name", lookup_expr="exact", max_length=256)
    name_contains = django_filters.CharFilter(field_name="name", method="filter_name_contains", max_length=256)
    save_to = django_filters.CharFilter(field_name="save_to", lookup_expr="exact", max_length=2048)
    ordering = django_filters.OrderingFilter(fields=("id", "created_date", "name"))

    class Meta:
        model = VideoArchive
        fields: list[str] = []

    def filter_name_contains(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        """Names containing `value`, any case. On PostgreSQL a page walks an index in its order and tests each
        name, and the planner assumes the matches are spread evenly. When they lie far from where the page starts
        (names that follow ids, as `archive 12` in the bench's 100k archives), that read 37,000 rows for 21. So
        the trigram index is asked first for at most NAME_PROBE_ROWS ids; when there are no more, the page takes
        them by id (bench/RESULTS.md, session 9)."""
        queryset = queryset.filter(name__icontains=value)
        if connection.vendor != "postgresql":
            return queryset
        ids = list(VideoArchive.objects.filter(name__icontains=value).order_by()
                   .values_list("pk", flat=True)[:NAME_PROBE_ROWS + 1])
        return queryset.filter(pk__in=ids) if len(ids) <= NAME_PROBE_ROWS else queryset


class StrictFilterBackend(DjangoFilterBackend):
    """django-filter with two rules of this API: unknown parameters and invalid values are BAD_PARAM."""

    def filter_queryset(self, request, queryset, view):
        if all(key in PAGINATION_PARAMS for key in request.query_params) and \
                self.get_filterset_class(view, queryset) is not None:
            # No filter given: the filterset would select `queryset` as it is (tests/api/test_filters.py checks
            # that for every filterset), after building a form for nothing.
            return queryset.all()
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        allowed = set(filterset.filters) | PAGINATION_PARAMS | set(getattr(view, "extra_query_params", ()))
        for key in request.query_params:
            if key not in allowed:
                raise BadParam(_("Unknown query parameter."), param=key)
        if not filterset.is_valid():
            param, errors = next(iter(filterset.errors.items()))
            raise BadParam(str(errors[0]), param=param)
        return filterset.qs


class CameraGroupFilterSet(CreatedDateFilterSet):
    id_in = IntegerListFilter(field_name="id")
    name_contains = django_filters.CharFilter(field_name="name", lookup_expr="icontains", max_length=256)
    ordering = django_filters.OrderingFilter(fields=("id", "created_date", "name"))

    class Meta:
        model = CameraGroup
        fields: list[str] = []


class CameraFilterSet(CreatedDateFilterSet):
    id_in = IntegerListFilter(field_name="id")
    camera_groups = IntegerListFilter(field_name="camera_group_id")
    name_contains = django_filters.CharFilter(field_name="name", lookup_expr="icontains", max_length=256)
    ordering = django_filters.OrderingFilter(fields=("id", "created_date", "name"))

    class Meta:
        model = Camera
        fields: list[str] = []


class WatchListFilterSet(CreatedDateFilterSet):
    id_in = IntegerListFilter(field_name="id", label="Watch list ids (repeated or comma list).")
    name_contains = django_filters.CharFilter(field_name="name", lookup_expr="icontains", max_length=256)
    active = BooleanFilter(field_name="active", label="Active (true) or not (false).")
    ordering = django_filters.OrderingFilter(fields=("id", "created_date", "name"))

    class Meta:
        model = WatchList
        fields: list[str] = []


class CardFilterSet(CreatedDateFilterSet):
    id_in = IntegerListFilter(field_name="id", label="Card ids (repeated or comma list).")
    name_contains = django_filters.CharFilter(field_name="name", lookup_expr="icontains", max_length=256)
    active = BooleanFilter(field_name="active", label="Active (true) or not (false).")
    watch_lists = IntegerListFilter(method="filter_watch_lists", field_name="watch_lists",
                                    label="Cards in any of these watch lists (repeated or comma list).")
    ordering = django_filters.OrderingFilter(fields=("id", "created_date", "name"))

    class Meta:
        model = Card
        fields: list[str] = []

    def filter_watch_lists(self, queryset: QuerySet, name: str, value: list[int] | None) -> QuerySet:
        """Cards in at least one of the lists (each card once)."""
        if value is None:
            return queryset
        members = Card.watch_lists.through.objects.filter(card_id=OuterRef("pk"), watchlist_id__in=value)
        return queryset.filter(Exists(members))


class CardPhotoFilterSet(CreatedDateFilterSet):
    id_in = IntegerListFilter(field_name="id", label="Photo ids (repeated or comma list).")
    card = IntegerListFilter(field_name="card_id", label="Photos of these cards (repeated or comma list).")
    ordering = django_filters.OrderingFilter(fields=("id", "created_date"))

    class Meta:
        model = CardPhoto
        fields: list[str] = []
