"""Cursor pagination of `GET /videos/`: `limit`, the opaque `page` cursor, `next_page` / `prev_page` (api-notes.md)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from rest_framework.test import APIClient

from tests.errors import assert_bad_param
from videos.models import CameraGroup, VideoArchive

LIST = "/videos/"
BASE = "http://testserver/videos/?"

pytestmark = pytest.mark.django_db


def get_page(client: APIClient, url: str) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"next_page", "prev_page", "results"}
    for link in (body["next_page"], body["prev_page"]):
        if link is not None:
            assert link.startswith(BASE), link
            assert "page" in parse_qs(urlsplit(link).query)
    return body


def ids(page: dict[str, Any]) -> list[int]:
    return [row["id"] for row in page["results"]]


def walk(client: APIClient, first_url: str, link: str, max_pages: int = 500) -> list[dict[str, Any]]:
    """Pages from first_url on, following `link` ("next_page" or "prev_page") until it is null."""
    pages = [get_page(client, first_url)]
    while pages[-1][link] is not None:
        assert len(pages) < max_pages, "pagination does not end"
        pages.append(get_page(client, pages[-1][link]))
    return pages



def cursor(payload: Any) -> str:
    """A page token built the way a client could forge one: URL-safe base64 of JSON."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def page_token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["page"][0]


def decode_token(token: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def bulk(group: CameraGroup, count: int, **fields: Any) -> list[int]:
    VideoArchive.objects.bulk_create(VideoArchive(camera_group=group, **fields) for _ in range(count))
    return list(VideoArchive.objects.order_by("id").values_list("id", flat=True))


# --- walking the pages

NAMES = [None, "bravo", "alpha", "bravo", None, "echo", "charlie", "bravo", "delta", None, "alpha", "foxtrot"]
BASE_DATE = datetime(2024, 5, 10, 12, tzinfo=UTC)


@pytest.fixture
def rows(default_group) -> list[VideoArchive]:
    """24 archives with NULL and duplicate names and groups of equal created_date, none in id order."""
    created = []
    for index in range(24):
        archive = VideoArchive.objects.create(camera_group=default_group, name=NAMES[index % len(NAMES)])
        moment = BASE_DATE + timedelta(minutes=(index * 7) % 5)  # five distinct values, each shared
        VideoArchive.objects.filter(pk=archive.pk).update(created_date=moment)
        created.append(VideoArchive.objects.get(pk=archive.pk))
    return created


def expected_order(rows: list[VideoArchive], ordering: str | None) -> list[int]:
    """The documented order: ties broken by id in the direction of the first key, NULL names as the lowest."""
    parts = (ordering or "-id").split(",")
    if all(part.lstrip("-") != "id" for part in parts):
        parts.append("-id" if parts[0].startswith("-") else "id")
    keys = {
        "id": lambda row: row.pk,
        "name": lambda row: row.name or "",
        "created_date": lambda row: row.created_date,
    }
    ordered = list(rows)
    for part in reversed(parts):  # stable sorts, least significant key first
        ordered.sort(key=keys[part.lstrip("-")], reverse=part.startswith("-"))
    return [row.pk for row in ordered]


@pytest.mark.parametrize("limit", [1, 4, 7])
@pytest.mark.parametrize(
    "ordering",
    ["id", "-id", "name", "-name", "created_date", "-created_date", None,
     "created_date,-id", "-name,id", "name,-created_date"],
)
def test_walk_forward_then_back(api, rows, ordering, limit):
    params = {"limit": limit, **({"ordering": ordering} if ordering else {})}
    forward = walk(api, f"{LIST}?{urlencode(params)}", "next_page")

    walked = [row_id for page in forward for row_id in ids(page)]
    assert walked == expected_order(rows, ordering)  # right order, none missing, none twice
    assert all(len(page["results"]) == limit for page in forward[:-1])
    assert 1 <= len(forward[-1]["results"]) <= limit
    assert forward[0]["prev_page"] is None
    assert forward[-1]["next_page"] is None
    assert all(page["prev_page"] is not None for page in forward[1:])

    # The links keep the other query parameters.
    for page in forward:
        for link in (page["next_page"], page["prev_page"]):
            if link is not None:
                query = parse_qs(urlsplit(link).query)
                assert query["limit"] == [str(limit)]
                assert query.get("ordering") == ([ordering] if ordering else None)

    assert len(forward) > 1
    backward = walk(api, forward[-1]["prev_page"], "prev_page")
    assert [ids(page) for page in reversed(backward)] == [ids(page) for page in forward[:-1]]
    assert backward[-1]["prev_page"] is None  # back at the first page
    assert all(page["next_page"] is not None for page in backward)
    # Forward again from the first page reached backwards gives the second page.
    assert ids(get_page(api, backward[-1]["next_page"])) == ids(forward[1])


def test_viewer_can_page(viewer_api, rows):
    walked = [row_id for page in walk(viewer_api, f"{LIST}?limit=5", "next_page") for row_id in ids(page)]
    assert walked == expected_order(rows, None)


def test_null_and_duplicate_names_keep_their_place(api, rows):
    """With ordering=name, NULL names form one block at the start, duplicates one block each, ties by id."""
    walked = [row_id for page in walk(api, f"{LIST}?ordering=name&limit=2", "next_page") for row_id in ids(page)]
    names = {row.pk: row.name for row in rows}
    null_count = sum(1 for row in rows if row.name is None)
    assert [names[row_id] for row_id in walked[:null_count]] == [None] * null_count
    assert [names[row_id] for row_id in walked[null_count:]] == sorted(row.name for row in rows if row.name)
    bravo_ids = [row_id for row_id in walked if names[row_id] == "bravo"]
    assert bravo_ids == sorted(bravo_ids)


def test_equal_created_dates_are_not_lost_or_repeated(api, default_group):
    moment = datetime(2024, 1, 1, tzinfo=UTC)
    created = bulk(default_group, 9)
    VideoArchive.objects.update(created_date=moment)
    walked = [
        row_id
        for page in walk(api, f"{LIST}?ordering=-created_date&limit=2", "next_page")
        for row_id in ids(page)
    ]
    assert walked == sorted(created, reverse=True)


def test_pages_stay_put_while_rows_are_added(api, default_group):
    bulk(default_group, 10)
    first = get_page(api, f"{LIST}?limit=4")
    second_before = ids(get_page(api, first["next_page"]))
    bulk(default_group, 5)  # new rows sort before the first page under -id
    assert ids(get_page(api, first["next_page"])) == second_before


# --- response shape, links, limit


def test_first_page_shape_and_default_limit(api, default_group):
    created = bulk(default_group, 25)
    body = get_page(api, LIST)
    assert ids(body) == sorted(created, reverse=True)[:20]
    assert body["prev_page"] is None
    assert body["next_page"].startswith(BASE)
    second = get_page(api, body["next_page"])
    assert ids(second) == sorted(created, reverse=True)[20:]
    assert second["next_page"] is None
    assert second["prev_page"].startswith(BASE)
    assert ids(get_page(api, second["prev_page"])) == ids(body)


def test_single_page_has_no_links(api, default_group):
    created = bulk(default_group, 3)
    body = get_page(api, f"{LIST}?limit=3")
    assert ids(body) == sorted(created, reverse=True)
    assert body["next_page"] is None and body["prev_page"] is None


def test_empty_list(api, default_group):
    assert get_page(api, LIST) == {"next_page": None, "prev_page": None, "results": []}


def test_limit_1000(api, default_group):
    created = bulk(default_group, 1001)
    body = get_page(api, f"{LIST}?limit=1000")
    assert len(body["results"]) == 1000
    assert body["next_page"] is not None
    rest = get_page(api, body["next_page"])
    assert ids(rest) == [min(created)]
    assert rest["next_page"] is None


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "abc", "1.5", "", " 5", "1_0", "1e2", "٥", "9" * 5000])
def test_invalid_limit(api, default_group, limit):
    bulk(default_group, 2)
    assert_bad_param(api.get(LIST, {"limit": limit}), "limit")


def test_links_keep_filters(api, default_group):
    group2 = CameraGroup.objects.create(name="second group")
    wanted = []
    for index in range(12):
        group = group2 if index % 3 else default_group
        name = f"keep {index:02d}" if index % 2 else f"drop {index:02d}"
        archive = VideoArchive.objects.create(camera_group=group, name=name)
        if group == group2 and name.startswith("keep"):
            wanted.append(archive.pk)
    assert len(wanted) == 4
    params = {"name_contains": "keep", "camera_groups": group2.pk, "ordering": "name", "limit": 1}
    pages = walk(api, f"{LIST}?{urlencode(params)}", "next_page")
    assert [row_id for page in pages for row_id in ids(page)] == wanted
    for page in pages[:-1]:
        query = parse_qs(urlsplit(page["next_page"]).query)
        assert query["name_contains"] == ["keep"]
        assert query["camera_groups"] == [str(group2.pk)]
        assert query["ordering"] == ["name"]
        assert query["limit"] == ["1"]
    back = walk(api, pages[-1]["prev_page"], "prev_page")
    assert [row_id for page in reversed(back) for row_id in ids(page)] == wanted[:-1]
    assert api.get("/videos/count/", {"name_contains": "keep", "camera_groups": group2.pk}).json() == {"count": 4}


def test_filters_apply_to_later_pages(api, default_group):
    """A filter added to a page URL applies there too: the cursor only says where to start."""
    bulk(default_group, 6, name="a")
    bulk(default_group, 6, name="b")
    first = get_page(api, f"{LIST}?limit=3&ordering=id")
    url = first["next_page"] + "&name=b"
    assert all(row["name"] == "b" for row in get_page(api, url)["results"])


# --- bad and tampered cursors: BAD_PARAM "page", never a 500 (nor a 503)


GARBAGE_CURSORS = [
    "garbage",
    "!!!",
    "a",
    "é",
    "%",
    "eyJ2IjpbMV0sInIiOmZhbHNlf",  # truncated base64
    base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
    base64.urlsafe_b64encode(b"not json").decode(),
    cursor([1]),
    cursor("string"),
    cursor(42),
    cursor(None),
    cursor({}),
    cursor({"v": [1]}),
    cursor({"r": False}),
    cursor({"v": 1, "r": False}),
    cursor({"v": [], "r": False}),
    cursor({"v": [1, 2], "r": False}),  # -id has one key
    cursor({"v": ["1"], "r": False}),
    cursor({"v": [1.5], "r": False}),
    cursor({"v": [True], "r": False}),
    cursor({"v": [None], "r": False}),
    cursor({"v": [[1]], "r": False}),
    cursor({"v": [{"id": 1}], "r": False}),
    cursor({"v": [1], "r": "yes"}),
    cursor({"v": [1], "r": None}),
    cursor({"v": [1], "r": 0}),
]


@pytest.mark.parametrize("token", GARBAGE_CURSORS)
def test_garbage_cursor(api, default_group, token):
    bulk(default_group, 3)
    assert_bad_param(api.get(LIST, {"page": token}), "page")


TAMPERED = [
    ("name", [5, 1]),
    ("name", [None, 1]),
    ("name", ["a\x00b", 1]),  # PostgreSQL text cannot hold NUL
    ("name", ["alpha", "1"]),
    ("name", ["alpha"]),
    ("name", ["alpha", 1, 2]),
    ("-created_date", ["yesterday", 1]),
    ("-created_date", [1715342400, 1]),
    ("-created_date", ["2024-02-30T00:00:00+00:00", 1]),
    ("-created_date", ["2024-05-10T12:00:00", 1]),  # naive: the API never hands those out
    ("-created_date", ["9999-12-31T23:59:59-05:00", 1]),  # beyond year 9999 in UTC
    ("-created_date", ["0001-01-01T00:00:00+05:00", 1]),  # before year 1 in UTC
    ("-created_date", ["2024-05-10T12:00:00+00:00", None]),
    ("created_date", [None, 1]),
    ("id", [1, 1]),
    ("id", ["2024-05-10T12:00:00+00:00"]),
]


@pytest.mark.parametrize(("ordering", "values"), TAMPERED)
@pytest.mark.parametrize("reverse", [False, True])
def test_tampered_cursor(api, rows, ordering, values, reverse):
    token = cursor({"v": values, "r": reverse})
    assert_bad_param(api.get(LIST, {"ordering": ordering, "page": token}), "page")


def test_cursor_of_one_ordering_used_with_another(api, rows):
    by_id = get_page(api, f"{LIST}?ordering=id&limit=5")
    by_name = get_page(api, f"{LIST}?ordering=name&limit=5")
    assert_bad_param(api.get(LIST, {"ordering": "name", "page": page_token(by_id["next_page"])}), "page")
    assert_bad_param(api.get(LIST, {"ordering": "id", "page": page_token(by_name["next_page"])}), "page")
    assert_bad_param(api.get(LIST, {"ordering": "created_date", "page": page_token(by_name["next_page"])}), "page")


def test_real_cursor_edited(api, rows):
    """Decode a real cursor, change it, encode it again: a wrong shape is BAD_PARAM, a moved position works."""
    first = get_page(api, f"{LIST}?ordering=created_date&limit=5")
    payload = decode_token(page_token(first["next_page"]))
    assert set(payload) == {"v", "r"}

    for broken in (
        {**payload, "v": payload["v"][:1]},
        {**payload, "v": [*payload["v"], 1]},
        {**payload, "v": list(reversed(payload["v"]))},
        {**payload, "r": "false"},
    ):
        assert_bad_param(api.get(LIST, {"ordering": "created_date", "limit": 5, "page": cursor(broken)}), "page")

    # Values of the right types at another position just start the page there.
    earliest = min(rows, key=lambda row: (row.created_date, row.pk))
    moved = {"v": [earliest.created_date.isoformat(), earliest.pk], "r": False}
    page = get_page(api, f"{LIST}?{urlencode({'ordering': 'created_date', 'limit': 5, 'page': cursor(moved)})}")
    assert ids(page) == expected_order(rows, "created_date")[1:6]


@pytest.mark.parametrize(("values", "reverse"), [([10**30], False), ([-(10**30)], True), ([2**63], False)])
def test_cursor_with_huge_id_is_an_empty_page(api, rows, values, reverse):
    page = get_page(api, f"{LIST}?{urlencode({'ordering': 'id', 'page': cursor({'v': values, 'r': reverse})})}")
    assert page["results"] == []
    assert page["next_page"] is None and page["prev_page"] is None


def test_empty_page_parameter_is_the_first_page(api, default_group):
    created = bulk(default_group, 3)
    assert ids(get_page(api, f"{LIST}?page=")) == sorted(created, reverse=True)
