"""Query filters of `GET /videos/` and `GET /videos/count/` (videos-api.txt and api-notes.md).

Every filter is checked with a row it must select and one it must not, through both endpoints (the count must
agree with the list), and every invalid value must come back as the BAD_PARAM envelope naming the parameter.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
import time_machine
from rest_framework.test import APIClient

from tests.errors import assert_bad_param
from videos.models import CameraGroup, Case, VideoArchive

LIST = "/videos/"
COUNT = "/videos/count/"

pytestmark = pytest.mark.django_db


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def make(group: CameraGroup, created: datetime | None = None, **fields: Any) -> VideoArchive:
    """An archive row; `created` overrides created_date (auto_now_add)."""
    fields.setdefault("name", "clip.mp4")
    archive = VideoArchive.objects.create(camera_group=group, **fields)
    if created is not None:
        VideoArchive.objects.filter(pk=archive.pk).update(created_date=created)
    return archive


def selected(client: APIClient, params: dict[str, Any] | str) -> set[int]:
    """Ids the list selects with these query parameters; asserts that /videos/count/ agrees."""
    query = params if isinstance(params, str) else urlencode(params, doseq=True)
    response = client.get(f"{LIST}?{query}&limit=1000" if query else f"{LIST}?limit=1000")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["next_page"] is None
    ids = [row["id"] for row in body["results"]]
    assert len(ids) == len(set(ids))
    count = client.get(f"{COUNT}?{query}")
    assert count.status_code == 200, count.content
    assert count.json() == {"count": len(ids)}
    return set(ids)



@pytest.fixture
def group2(db) -> CameraGroup:
    return CameraGroup.objects.create(name="second group")


# --- array filters: case_in, id_in, camera_groups


def test_case_in(api, default_group):
    c1, c2, c3 = (Case.objects.create(name=f"case {i}") for i in range(3))
    a1 = make(default_group, case=c1)
    a2 = make(default_group, case=c2)
    a3 = make(default_group, case=c3)
    make(default_group)  # no case: never selected by case_in

    assert selected(api, {"case_in": c1.pk}) == {a1.pk}
    assert selected(api, {"case_in": [c1.pk, c2.pk]}) == {a1.pk, a2.pk}
    assert selected(api, {"case_in": f"{c1.pk},{c3.pk}"}) == {a1.pk, a3.pk}
    assert selected(api, f"case_in={c1.pk},{c2.pk}&case_in={c3.pk}") == {a1.pk, a2.pk, a3.pk}
    assert selected(api, {"case_in": c3.pk + 1000}) == set()


def test_id_in(api, default_group):
    a1, a2, a3 = (make(default_group) for _ in range(3))

    assert selected(api, {"id_in": a2.pk}) == {a2.pk}
    assert selected(api, {"id_in": [a1.pk, a3.pk]}) == {a1.pk, a3.pk}
    assert selected(api, {"id_in": f"{a1.pk},{a2.pk}"}) == {a1.pk, a2.pk}
    assert selected(api, f"id_in={a1.pk}&id_in={a2.pk},{a3.pk}") == {a1.pk, a2.pk, a3.pk}
    assert selected(api, {"id_in": a3.pk + 1000}) == set()
    assert selected(api, {"id_in": 0}) == set()


def test_camera_groups(api, default_group, group2):
    group3 = CameraGroup.objects.create(name="third group")
    in_default = make(default_group)
    in_2 = make(group2)
    in_3 = make(group3)

    assert selected(api, {"camera_groups": group2.pk}) == {in_2.pk}
    assert selected(api, {"camera_groups": [default_group.pk, group3.pk]}) == {in_default.pk, in_3.pk}
    assert selected(api, {"camera_groups": f"{group2.pk},{group3.pk}"}) == {in_2.pk, in_3.pk}
    assert selected(api, {"camera_groups": group3.pk + 1000}) == set()


# --- created_date_gt / gte / lt / lte


@pytest.fixture
def around_noon(default_group) -> dict[str, int]:
    """Rows one microsecond before, exactly at and one microsecond after 2024-05-10 12:00:00 UTC."""
    noon = utc(2024, 5, 10, 12)
    return {
        "before": make(default_group, noon - timedelta(microseconds=1)).pk,
        "at": make(default_group, noon).pk,
        "after": make(default_group, noon + timedelta(microseconds=1)).pk,
    }


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("created_date_gt", {"after"}),
        ("created_date_gte", {"at", "after"}),
        ("created_date_lt", {"before"}),
        ("created_date_lte", {"before", "at"}),
    ],
)
@pytest.mark.parametrize(
    "value",
    [
        "2024-05-10T12:00:00Z",
        "2024-05-10T12:00:00.000000Z",
        "2024-05-10T12:00:00+00:00",
        "2024-05-10T15:00:00+03:00",
        "2024-05-10T07:00:00-05:00",
        "2024-05-10T12:00:00",  # naive: read in TIME_ZONE, UTC by default
    ],
)
def test_created_date_bounds_and_equality(api, around_noon, param, value, expected):
    assert selected(api, {param: value}) == {around_noon[key] for key in expected}


def test_created_date_range_combines(api, around_noon):
    params = {"created_date_gt": "2024-05-10T11:59:59Z", "created_date_lt": "2024-05-10T12:00:00Z"}
    assert selected(api, params) == {around_noon["before"]}
    params = {"created_date_gte": "2024-05-10T12:00:00Z", "created_date_lte": "2024-05-10T12:00:00Z"}
    assert selected(api, params) == {around_noon["at"]}
    params = {"created_date_gt": "2024-05-10T12:00:00Z", "created_date_lt": "2024-05-10T12:00:00Z"}
    assert selected(api, params) == set()


def test_naive_dates_are_read_in_time_zone(api, settings, around_noon):
    settings.TIME_ZONE = "Europe/Moscow"  # UTC+3 all year
    # 15:00 in Moscow is 12:00 UTC.
    assert selected(api, {"created_date_gte": "2024-05-10T15:00:00"}) == {around_noon["at"], around_noon["after"]}
    assert selected(api, {"created_date_lt": "2024-05-10T15:00:00"}) == {around_noon["before"]}
    # 12:00 naive is 09:00 UTC there: everything is after it.
    assert selected(api, {"created_date_gt": "2024-05-10T12:00:00"}) == set(around_noon.values())
    # Explicit offsets do not depend on TIME_ZONE.
    assert selected(api, {"created_date_gte": "2024-05-10T12:00:00Z"}) == {around_noon["at"], around_noon["after"]}


# --- created_date_last_n_days


@pytest.fixture
def frozen_now():
    now = utc(2024, 5, 15, 12)
    with time_machine.travel(now, tick=False):
        yield now


def test_last_n_days(api, default_group, frozen_now):
    now = frozen_now
    two_days = make(default_group, now - timedelta(days=2)).pk
    exactly_three = make(default_group, now - timedelta(days=3)).pk
    over_three = make(default_group, now - timedelta(days=3, microseconds=1)).pk
    ten_days = make(default_group, now - timedelta(days=10)).pk
    just_now = make(default_group, now).pk

    assert selected(api, {"created_date_last_n_days": 3}) == {just_now, two_days, exactly_three}
    assert selected(api, {"created_date_last_n_days": 1}) == {just_now}
    assert selected(api, {"created_date_last_n_days": "2.5"}) == {just_now, two_days}
    assert selected(api, {"created_date_last_n_days": 30}) == {just_now, two_days, exactly_three, over_three,
                                                               ten_days}
    assert selected(api, {"created_date_last_n_days": 0}) == {just_now}


# --- created_date_nth_full_week / created_date_nth_work_week

FULL = "created_date_nth_full_week"
WORK = "created_date_nth_work_week"


@pytest.fixture
def week_rows(default_group) -> dict[str, int]:
    """Rows around the weeks of Wednesday 2024-05-15 (Monday 2024-05-13), times in UTC."""
    last_us = timedelta(microseconds=1)
    moments = {
        "week3_sun_end": utc(2024, 5, 6) - last_us,
        "week2_mon_start": utc(2024, 5, 6),
        "week2_fri_end": utc(2024, 5, 11) - last_us,
        "week2_sat": utc(2024, 5, 11, 12),
        "week2_sun_end": utc(2024, 5, 13) - last_us,
        "week1_mon_start": utc(2024, 5, 13),
        "week1_wed": utc(2024, 5, 15, 12),
        "week1_fri_end": utc(2024, 5, 18) - last_us,
        "week1_sat_start": utc(2024, 5, 18),
        "week1_sun_end": utc(2024, 5, 20) - last_us,
        "week0_mon_start": utc(2024, 5, 20),
    }
    return {key: make(default_group, moment, name=key).pk for key, moment in moments.items()}


def pick(rows: dict[str, int], *keys: str) -> set[int]:
    return {rows[key] for key in keys}


WEEK1_WORK = ("week1_mon_start", "week1_wed", "week1_fri_end")
WEEK1_FULL = (*WEEK1_WORK, "week1_sat_start", "week1_sun_end")
WEEK2_WORK = ("week2_mon_start", "week2_fri_end")
WEEK2_FULL = (*WEEK2_WORK, "week2_sat", "week2_sun_end")


@pytest.mark.parametrize(
    "now",
    [
        utc(2024, 5, 15, 12),  # Wednesday
        utc(2024, 5, 13),  # Monday 00:00, the first moment of the week
        utc(2024, 5, 18, 10),  # Saturday: the work week is still this week's Monday to Friday
        utc(2024, 5, 20) - timedelta(microseconds=1),  # Sunday 23:59:59.999999, the last moment of the week
    ],
)
def test_nth_weeks_around_edges(api, week_rows, now):
    with time_machine.travel(now, tick=False):
        assert selected(api, {FULL: 1}) == pick(week_rows, *WEEK1_FULL)
        assert selected(api, {WORK: 1}) == pick(week_rows, *WEEK1_WORK)
        assert selected(api, {FULL: 2}) == pick(week_rows, *WEEK2_FULL)
        assert selected(api, {WORK: 2}) == pick(week_rows, *WEEK2_WORK)
        assert selected(api, {FULL: 3}) == pick(week_rows, "week3_sun_end")
        assert selected(api, {WORK: 3}) == set()
        assert selected(api, {FULL: 4}) == set()


def test_nth_week_a_moment_before_monday_is_last_week(api, week_rows):
    """Now = Monday 00:00: Sunday 23:59:59.999999 a microsecond ago is already week 2."""
    with time_machine.travel(utc(2024, 5, 13), tick=False):
        assert week_rows["week2_sun_end"] not in selected(api, {FULL: 1})
        assert week_rows["week2_sun_end"] in selected(api, {FULL: 2})
        assert week_rows["week2_sun_end"] not in selected(api, {WORK: 2})  # a Sunday is no work day


def test_nth_week_combines_with_other_filters(api, week_rows):
    with time_machine.travel(utc(2024, 5, 15, 12), tick=False):
        assert selected(api, {FULL: 1, "created_date_lt": "2024-05-15T12:00:00Z"}) == pick(
            week_rows, "week1_mon_start"
        )
        assert selected(api, {WORK: 1, "name_contains": "fri"}) == pick(week_rows, "week1_fri_end")


def test_nth_weeks_are_cut_in_time_zone(api, settings, default_group):
    """Europe/Moscow is UTC+3: its Monday 00:00 is Sunday 21:00 UTC, its Saturday 00:00 is Friday 21:00 UTC."""
    settings.TIME_ZONE = "Europe/Moscow"
    sun_2059 = make(default_group, utc(2024, 5, 12, 20, 59, 59)).pk  # Sunday 23:59:59 in Moscow
    sun_2100 = make(default_group, utc(2024, 5, 12, 21)).pk  # Monday 00:00 in Moscow
    fri_2059 = make(default_group, utc(2024, 5, 17, 20, 59, 59)).pk  # Friday 23:59:59 in Moscow
    fri_2100 = make(default_group, utc(2024, 5, 17, 21)).pk  # Saturday 00:00 in Moscow

    with time_machine.travel(utc(2024, 5, 15, 12), tick=False):
        assert selected(api, {FULL: 1}) == {sun_2100, fri_2059, fri_2100}
        assert selected(api, {WORK: 1}) == {sun_2100, fri_2059}
        assert selected(api, {FULL: 2}) == {sun_2059}
        assert selected(api, {WORK: 2}) == set()

    # Sunday 22:00 UTC is already Monday 01:00 in Moscow: week 1 is the new week there.
    with time_machine.travel(utc(2024, 5, 12, 22), tick=False):
        assert selected(api, {FULL: 1}) == {sun_2100, fri_2059, fri_2100}
        assert selected(api, {FULL: 2}) == {sun_2059}


def test_nth_weeks_across_a_dst_change(api, settings, default_group):
    """Europe/Berlin: CET (UTC+1) until Sunday 2024-03-31 02:00, then CEST (UTC+2)."""
    settings.TIME_ZONE = "Europe/Berlin"
    week3_end = make(default_group, utc(2024, 3, 24, 22, 59, 59)).pk  # Sunday 23:59:59 CET
    week2_start = make(default_group, utc(2024, 3, 24, 23)).pk  # Monday 2024-03-25 00:00 CET
    week2_end = make(default_group, utc(2024, 3, 31, 21, 59, 59)).pk  # Sunday 23:59:59 CEST
    week1_start = make(default_group, utc(2024, 3, 31, 22)).pk  # Monday 2024-04-01 00:00 CEST

    with time_machine.travel(utc(2024, 4, 3, 10), tick=False):
        assert selected(api, {FULL: 1}) == {week1_start}
        assert selected(api, {FULL: 2}) == {week2_start, week2_end}
        assert selected(api, {FULL: 3}) == {week3_end}


# --- name, name_contains, save_to


def test_name_is_exact(api, default_group):
    exact = make(default_group, name="clip.mp4").pk
    make(default_group, name="Clip.mp4")
    make(default_group, name="clip.mp4.bak")
    make(default_group, name="old clip.mp4")
    make(default_group, name=None)
    unicode_name = make(default_group, name="Питт&Джоли").pk

    assert selected(api, {"name": "clip.mp4"}) == {exact}
    assert selected(api, {"name": "Питт&Джоли"}) == {unicode_name}
    assert selected(api, {"name": "clip"}) == set()


def test_name_contains(api, default_group):
    pitt_jolie = make(default_group, name="Pitt&Jolie").pk
    pittsburgh = make(default_group, name="pittsburgh.mp4").pk
    percent = make(default_group, name="100%_done").pk
    make(default_group, name="100 done")
    make(default_group, name="jolie")
    make(default_group, name=None)

    assert selected(api, {"name_contains": "pitt"}) == {pitt_jolie, pittsburgh}
    assert selected(api, {"name_contains": "PITT"}) == {pitt_jolie, pittsburgh}
    assert selected(api, {"name_contains": "t&J"}) == {pitt_jolie}
    assert selected(api, {"name_contains": "Pitt&Jolie"}) == {pitt_jolie}
    # LIKE wildcards are taken literally.
    assert selected(api, {"name_contains": "%"}) == {percent}
    assert selected(api, {"name_contains": "_"}) == {percent}
    assert selected(api, {"name_contains": "0 d"}) == set(VideoArchive.objects.filter(name="100 done")
                                                            .values_list("pk", flat=True))
    assert selected(api, {"name_contains": "zzz"}) == set()


def test_save_to(api, default_group):
    to_a = make(default_group, save_to="http://a.example/events/").pk
    make(default_group, save_to="http://b.example/events/")
    make(default_group, save_to="http://a.example/events/more/")
    make(default_group, save_to=None)

    assert selected(api, {"save_to": "http://a.example/events/"}) == {to_a}
    assert selected(api, {"save_to": "http://a.example/"}) == set()


def test_filters_are_anded(api, default_group, group2):
    wanted = make(group2, utc(2024, 5, 10), name="keep me").pk
    make(default_group, utc(2024, 5, 10), name="keep me")  # other group
    make(group2, utc(2024, 5, 1), name="keep me")  # too old
    make(group2, utc(2024, 5, 10), name="drop me")  # other name

    params = {"camera_groups": group2.pk, "name_contains": "keep", "created_date_gte": "2024-05-05T00:00:00Z"}
    assert selected(api, params) == {wanted}


def test_no_filter_selects_everything(api, default_group, group2):
    ids = {make(default_group).pk, make(group2).pk, make(group2, name=None).pk}
    assert selected(api, {}) == ids


def _api_filtersets() -> list[type]:
    """The filterset class of every list and count/ the API routes (the face list's and its count's differ)."""
    from django.urls import get_resolver

    def walk(patterns):
        for pattern in patterns:
            if hasattr(pattern, "url_patterns"):
                yield from walk(pattern.url_patterns)
            else:
                yield pattern

    found: dict[str, type] = {}
    for pattern in walk(get_resolver().url_patterns):
        view = getattr(getattr(pattern, "callback", None), "cls", None)
        if view is None or not getattr(view, "filter_backends", None):
            continue
        for action in ("list", "count"):
            instance = view()
            instance.action = action
            filterset_class = getattr(instance, "filterset_class", None)
            if filterset_class is not None:
                found[filterset_class.__name__] = filterset_class
    return sorted(found.values(), key=lambda cls: cls.__name__)


def test_every_filterset_given_no_filter_selects_its_queryset_as_is(default_group):
    """videos.filters.StrictFilterBackend skips building the filterset when a request has no filter parameter;
    here every filterset of the API, given none, is valid and selects exactly the query it was given."""
    from django.http import QueryDict

    filtersets = _api_filtersets()
    assert len(filtersets) >= 8, filtersets  # archives, groups, cameras, events (+ face search), clusters
    for filterset_class in filtersets:
        queryset = filterset_class._meta.model.objects.filter(pk__gt=0).order_by("-id")
        filterset = filterset_class(QueryDict(""), queryset=queryset)
        assert filterset.is_valid(), (filterset_class, filterset.errors)
        assert str(filterset.qs.query) == str(queryset.query), filterset_class


def test_filters_answer_alike_in_every_language_after_the_form_is_cached(api, default_group):
    """The filterset's form class is built once per language (videos.filters): an error in one language, then
    the same in another, then the first again."""
    make(default_group)
    texts = {"en": "Enter a list of integers, e.g. 1,2,3.", "ru": "Введите список целых чисел, например 1,2,3."}
    for language in ("en", "ru", "en", "ru"):
        response = api.get(f"{LIST}?camera_groups=x", HTTP_ACCEPT_LANGUAGE=language)
        assert response.status_code == 400
        assert response.json()["param"] == "camera_groups"
        assert response.json()["desc"] == texts[language]
        assert selected(api, {"camera_groups": default_group.pk}) != set()


# --- SQL-looking values are data, not SQL


@pytest.mark.parametrize(
    "param",
    ["name", "name_contains", "save_to"],
)
@pytest.mark.parametrize(
    "value",
    ["x' OR 1=1 --", "x\" OR \"1\"=\"1", "'; DROP TABLE videos_videoarchive; --", "%' OR '%'='", "\\"],
)
def test_sql_looking_values_match_nothing(api, default_group, param, value):
    make(default_group, name="clip.mp4", save_to="http://a.example/")
    make(default_group, name=None, save_to=None)
    assert selected(api, {param: value}) == set()
    assert VideoArchive.objects.count() == 2


def test_sql_looking_value_is_matched_literally(api, default_group):
    odd = make(default_group, name="x' OR 1=1 --").pk
    make(default_group, name="x")
    assert selected(api, {"name": "x' OR 1=1 --"}) == {odd}
    assert selected(api, {"name_contains": "' OR 1=1"}) == {odd}


# --- ordering


@pytest.fixture
def three_rows(default_group) -> list[int]:
    """ids in creation order; names and created dates order them differently."""
    first = make(default_group, utc(2024, 1, 2), name="charlie").pk
    second = make(default_group, utc(2024, 1, 3), name="alpha").pk
    third = make(default_group, utc(2024, 1, 1), name="bravo").pk
    return [first, second, third]


@pytest.mark.parametrize(
    ("ordering", "positions"),
    [
        ("id", [0, 1, 2]),
        ("-id", [2, 1, 0]),
        ("name", [1, 2, 0]),
        ("-name", [0, 2, 1]),
        ("created_date", [2, 0, 1]),
        ("-created_date", [1, 0, 2]),
        (None, [2, 1, 0]),  # default: -id
    ],
)
def test_ordering(api, three_rows, ordering, positions):
    params = {"ordering": ordering} if ordering else {}
    response = api.get(LIST, params)
    assert response.status_code == 200, response.content
    assert [row["id"] for row in response.json()["results"]] == [three_rows[i] for i in positions]
    count = api.get(COUNT, params)
    assert count.status_code == 200
    assert count.json() == {"count": 3}


# --- invalid values and unknown parameters

LONG = "x" * 257
BAD_VALUES = [
    *[
        (param, value)
        for param in ("case_in", "id_in", "camera_groups")
        for value in ("abc", "1,x", "1,,2", "-1", "1.5", "1e3", "+1", "1_0", "١", "0x10",
                      "9" * 20, "9" * 5000, "1) OR (1=1")
    ],
    *[
        (param, value)
        for param in ("created_date_gt", "created_date_gte", "created_date_lt", "created_date_lte")
        for value in ("yesterday", "2024-13-01T00:00:00Z", "2024-02-30T00:00:00Z", "2024-05-10T25:00:00Z",
                      "2024-05-10T12:00:00+25:00", "10/05/2024 12:00", "2024-05-10T12:00:00Z' OR '1'='1",
                      "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00")
    ],
    *[(FULL, value) for value in ("0", "-1", "1.5", "abc", "NaN", "Infinity", "1e999")],
    *[(WORK, value) for value in ("0", "-1", "1.5", "abc", "NaN", "Infinity", "1e999")],
    *[("created_date_last_n_days", value) for value in ("-1", "abc", "NaN", "Infinity", "1e999", "3 days")],
    *[("ordering", value) for value in ("foo", "-foo", "file_size", "--id", "+id", "id;", "name desc",
                                        "id; DROP TABLE videos_videoarchive", "camera_group", "id,bogus")],
    ("name", LONG),
    ("name", "a\x00b"),
    ("name_contains", LONG),
    ("name_contains", "\x00"),
    ("save_to", "x" * 2049),
]


@pytest.mark.parametrize("path", [LIST, COUNT])
@pytest.mark.parametrize(("param", "value"), BAD_VALUES)
def test_invalid_value_is_bad_param(api, default_group, path, param, value):
    make(default_group)
    assert_bad_param(api.get(path, {param: value}), param)


@pytest.mark.parametrize("path", [LIST, COUNT])
def test_bad_value_among_good_ones_is_named(api, default_group, path):
    response = api.get(path, {"name": "clip.mp4", "id_in": "1", "created_date_gte": "soon"})
    assert_bad_param(response, "created_date_gte")


@pytest.mark.parametrize("path", [LIST, COUNT])
@pytest.mark.parametrize(
    "param", ["foo", "Name", "camera_group", "case", "created_date", "name__icontains", "search", "id"]
)
def test_unknown_parameter_is_bad_param(api, default_group, path, param):
    make(default_group)
    assert_bad_param(api.get(path, {param: "1"}), param)
    assert_bad_param(api.get(path, {"name": "clip.mp4", param: "1"}), param)


@pytest.mark.parametrize("path", [LIST, COUNT])
def test_error_text_follows_accept_language(api, default_group, path):
    english = api.get(path, {"id_in": "x"})
    russian = api.get(path, {"id_in": "x"}, HTTP_ACCEPT_LANGUAGE="ru")
    assert_bad_param(english, "id_in")
    assert_bad_param(russian, "id_in")
    assert english.json()["desc"] == "Enter a list of integers, e.g. 1,2,3."
    assert russian.json()["desc"] == "Введите список целых чисел, например 1,2,3."
