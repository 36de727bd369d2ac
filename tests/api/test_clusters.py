"""`/clusters/faces/`, `/clusters/bodies/`, `/clusters/cars/`: list, count, retrieve, filters, no N+1 queries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from rest_framework.test import APIClient

from tests.api.test_events import (
    EVENT_VIEW_PERMS,
    KINDS,
    PLURAL,
    make_archive,
    make_cluster,
    make_event,
)
from tests.conftest import _user, token_client
from tests.errors import assert_bad_param, assert_error
from videos.models import CLUSTER_MODELS, CameraGroup, Cluster, VideoArchive

pytestmark = pytest.mark.django_db

CLUSTER_KEYS = ["id", "name", "created_date", "modified_date", "event_count", "best_event", "thumbnail",
                "video_archives", "camera_groups"]


def url(kind: str, suffix: str = "") -> str:
    return f"/clusters/{PLURAL[kind]}/{suffix}"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def cl_api(db) -> APIClient:
    return token_client(_user("cluster-viewer", EVENT_VIEW_PERMS))


@pytest.fixture
def other_group(db) -> CameraGroup:
    return CameraGroup.objects.create(name="second group")


@pytest.fixture
def archives(default_group, other_group) -> list[VideoArchive]:
    return [make_archive(default_group), make_archive(other_group), make_archive(default_group)]


def cluster_of(kind: str, archive_list: list[VideoArchive], *, best: int | None = 0,
               created: datetime | None = None) -> Cluster:
    """A cluster with one event from each archive given (repeats allowed); best is an index into them or None."""
    events = [make_event(kind, archive, quality=0.5 + index / 100) for index, archive in enumerate(archive_list)]
    cluster = make_cluster(kind, events, best=None if best is None else events[best])
    if created is not None:
        type(cluster).objects.filter(pk=cluster.pk).update(created_date=created)
        cluster.refresh_from_db()
    return cluster


def selected(client: APIClient, kind: str, params: dict[str, Any] | str) -> set[int]:
    query = params if isinstance(params, str) else urlencode(params, doseq=True)
    response = client.get(f"{url(kind)}?{query}&limit=1000")
    assert response.status_code == 200, response.content
    ids = [row["id"] for row in response.json()["results"]]
    assert len(ids) == len(set(ids))
    count = client.get(f"{url(kind, 'count/')}?{query}")
    assert count.status_code == 200, count.content
    assert count.json() == {"count": len(ids)}
    return set(ids)


# --- shape


@pytest.mark.parametrize("kind", KINDS)
def test_list_and_retrieve_shape(cl_api, archives, default_group, other_group, kind):
    a1, a2, a3 = archives
    cluster = cluster_of(kind, [a3, a1, a2, a3], best=2)
    body = cl_api.get(url(kind)).json()
    assert list(body) == ["next_page", "prev_page", "results"]
    [row] = body["results"]
    assert list(row) == CLUSTER_KEYS + (["card"] if kind == "face" else [])
    expected = {
        "id": cluster.pk,
        "name": "",
        "created_date": iso(cluster.created_date),
        "modified_date": iso(cluster.modified_date),
        "event_count": 4,
        "best_event": cluster.best_event_id,
        "thumbnail": f"http://testserver/events/{PLURAL[kind]}/{cluster.best_event_id}/thumbnail/",
        "video_archives": sorted([a1.pk, a2.pk, a3.pk]),
        "camera_groups": sorted([default_group.pk, other_group.pk]),
        **({"card": None} if kind == "face" else {}),
    }
    assert row == expected
    detail = cl_api.get(url(kind, f"{cluster.pk}/"))
    assert detail.status_code == 200
    assert detail.json() == expected
    # The thumbnail URL serves the best event's picture.
    picture = cl_api.get(row["thumbnail"])
    assert picture.status_code == 200 and picture["Content-Type"] == "image/jpeg"


def test_cluster_without_best_event_or_members(cl_api, archives):
    no_best = cluster_of("face", [archives[0]], best=None)
    empty = CLUSTER_MODELS["face"].objects.create(event_count=0, centroid=b"")
    rows = {row["id"]: row for row in cl_api.get(url("face")).json()["results"]}
    assert rows[no_best.pk]["best_event"] is None and rows[no_best.pk]["thumbnail"] is None
    assert rows[no_best.pk]["video_archives"] == [archives[0].pk]
    assert rows[empty.pk]["video_archives"] == [] and rows[empty.pk]["camera_groups"] == []


def test_retrieve_unknown_is_not_found(cl_api, archives):
    cluster = cluster_of("body", [archives[0]])
    assert_error(cl_api.get(url("body", f"{cluster.pk + 100}/")), 404, "NOT_FOUND")
    assert_error(cl_api.get(url("face", f"{cluster.pk}/")), 404, "NOT_FOUND")  # ids are per kind
    assert_error(cl_api.get(url("body", "x/")), 404, "NOT_FOUND")


def test_clusters_are_made_by_clustering_only(archives):
    """Persons (tests/test_persons.py) name, merge and split them; nobody creates, replaces or deletes one."""
    client = token_client(_user("root", superuser=True))
    cluster = cluster_of("car", [archives[0]])
    assert client.post(url("car"), {}, format="json").status_code == 405
    assert client.put(url("car", f"{cluster.pk}/"), {}, format="json").status_code == 405
    assert client.delete(url("car", f"{cluster.pk}/")).status_code == 405


# --- filters


@pytest.mark.parametrize("kind", KINDS)
def test_video_archive(cl_api, archives, kind):
    a1, a2, a3 = archives
    c1 = cluster_of(kind, [a1])
    c12 = cluster_of(kind, [a1, a2])
    c3 = cluster_of(kind, [a3, a3])
    assert selected(cl_api, kind, {"video_archive": a1.pk}) == {c1.pk, c12.pk}
    assert selected(cl_api, kind, {"video_archive": a2.pk}) == {c12.pk}
    assert selected(cl_api, kind, {"video_archive": [a2.pk, a3.pk]}) == {c12.pk, c3.pk}
    assert selected(cl_api, kind, f"video_archive={a1.pk},{a2.pk}&video_archive={a3.pk}") == {c1.pk, c12.pk, c3.pk}
    assert selected(cl_api, kind, {"video_archive": a3.pk + 100}) == set()


def test_camera_groups(cl_api, archives, default_group, other_group):
    a1, a2, a3 = archives
    in_default = cluster_of("face", [a1, a3])
    in_both = cluster_of("face", [a1, a2])
    assert selected(cl_api, "face", {"camera_groups": other_group.pk}) == {in_both.pk}
    assert selected(cl_api, "face", {"camera_groups": default_group.pk}) == {in_default.pk, in_both.pk}


def test_id_in_and_created_date(cl_api, archives):
    noon = datetime(2024, 5, 10, 12, tzinfo=UTC)
    before = cluster_of("face", [archives[0]], created=noon - timedelta(seconds=1))
    at = cluster_of("face", [archives[0]], created=noon)
    after = cluster_of("face", [archives[1]], created=noon + timedelta(seconds=1))
    assert selected(cl_api, "face", {"id_in": [before.pk, after.pk]}) == {before.pk, after.pk}
    assert selected(cl_api, "face", {"id_in": f"{at.pk}"}) == {at.pk}
    assert selected(cl_api, "face", {"created_date_gte": "2024-05-10T12:00:00Z"}) == {at.pk, after.pk}
    assert selected(cl_api, "face", {"created_date_lt": "2024-05-10T12:00:00Z"}) == {before.pk}
    params = {"created_date_gt": "2024-05-10T12:00:00Z", "video_archive": archives[0].pk}
    assert selected(cl_api, "face", params) == set()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("param", "value"), [
    ("video_archive", "abc"), ("video_archive", "1,-2"), ("camera_groups", "x"), ("id_in", "1.0"),
    ("created_date_gte", "noon"), ("created_date_last_n_days", "-3"), ("ordering", "quality"),
    ("ordering", "best_event"), ("limit", "0"), ("page", "@@"),
])
def test_invalid_value_is_bad_param(cl_api, archives, kind, param, value):
    assert_bad_param(cl_api.get(url(kind), {param: value}), param)
    if param not in ("limit", "page"):
        assert_bad_param(cl_api.get(url(kind, "count/"), {param: value}), param)


@pytest.mark.parametrize("param", ["cluster_in", "camera_group", "looks_like", "name"])
def test_unknown_parameter_is_bad_param(cl_api, archives, param):
    assert_bad_param(cl_api.get(url("face"), {param: "1"}), param)
    assert_bad_param(cl_api.get(url("face", "count/"), {param: "1"}), param)


# --- ordering, pagination, count


@pytest.fixture
def many(archives) -> list[Cluster]:
    """11 clusters with repeated event counts and created dates, none in id order."""
    base = datetime(2024, 5, 10, 12, tzinfo=UTC)
    return [
        cluster_of("face", archives[: 1 + index % 3], created=base + timedelta(minutes=(index * 5) % 3))
        for index in range(11)
    ]


def expected_order(clusters: list[Cluster], ordering: str | None) -> list[int]:
    parts = (ordering or "-id").split(",")
    if all(part.lstrip("-") != "id" for part in parts):
        parts.append("-id" if parts[0].startswith("-") else "id")
    ordered = list(clusters)
    for part in reversed(parts):
        name = part.lstrip("-")
        ordered.sort(key=lambda cluster, name=name: getattr(cluster, "pk" if name == "id" else name),
                     reverse=part.startswith("-"))
    return [cluster.pk for cluster in ordered]


def walk(client: APIClient, first: str, link: str) -> list[dict[str, Any]]:
    pages = [client.get(first).json()]
    while pages[-1][link] is not None:
        assert len(pages) < 100
        assert pages[-1][link].startswith("http://testserver/clusters/faces/?")
        assert "page" in parse_qs(urlsplit(pages[-1][link]).query)
        pages.append(client.get(pages[-1][link]).json())
    return pages


@pytest.mark.parametrize("ordering", [None, "id", "-id", "event_count", "-event_count", "created_date",
                                      "-created_date", "-event_count,created_date"])
@pytest.mark.parametrize("limit", [1, 4])
def test_pages_forward_and_back(cl_api, many, ordering, limit):
    params = {"limit": limit, **({"ordering": ordering} if ordering else {})}
    forward = walk(cl_api, f"{url('face')}?{urlencode(params)}", "next_page")
    assert [row["id"] for page in forward for row in page["results"]] == expected_order(many, ordering)
    assert forward[0]["prev_page"] is None
    backward = walk(cl_api, forward[-1]["prev_page"], "prev_page")
    assert [[row["id"] for row in page["results"]] for page in reversed(backward)] == [
        [row["id"] for row in page["results"]] for page in forward[:-1]
    ]


def test_count(cl_api, archives):
    for kind in KINDS:
        assert cl_api.get(url(kind, "count/")).json() == {"count": 0}
    for _ in range(3):
        cluster_of("body", [archives[0]])
    cluster_of("body", [archives[1]])
    assert cl_api.get(url("body", "count/")).json() == {"count": 4}
    assert cl_api.get(url("body", "count/"), {"video_archive": archives[1].pk}).json() == {"count": 1}
    assert cl_api.get(url("face", "count/")).json() == {"count": 0}


def test_list_has_no_n_plus_1(cl_api, default_group, other_group, django_assert_max_num_queries):
    archives = [make_archive(default_group if index % 2 else other_group) for index in range(6)]
    for index in range(30):
        cluster_of("face", [archives[(index + offset) % 6] for offset in range(1 + index % 4)])
    cl_api.get(url("face"))  # warm caches outside the count
    # token with its user, permissions (user's and groups'), the page, the page's sources: 5 for any page size.
    with django_assert_max_num_queries(5):
        response = cl_api.get(url("face"), {"limit": 30})
    rows = response.json()["results"]
    assert len(rows) == 30
    assert all(row["video_archives"] and row["camera_groups"] for row in rows)
    with django_assert_max_num_queries(5):
        cl_api.get(url("face"), {"limit": 30, "video_archive": [archives[0].pk, archives[1].pk]})
    with django_assert_max_num_queries(5):
        assert cl_api.get(url("face", f"{rows[0]['id']}/")).status_code == 200


# --- permissions


@pytest.mark.parametrize("kind", KINDS)
def test_permissions(anon_api, outsider_api, api, archives, kind):
    cluster = cluster_of(kind, [archives[0]])
    for path in (url(kind), url(kind, "count/"), url(kind, f"{cluster.pk}/")):
        assert_error(anon_api.get(path), 401, "UNAUTHORIZED")
        assert_error(outsider_api.get(path), 403, "PERMISSION_DENIED")
        assert_error(api.get(path), 403, "PERMISSION_DENIED")  # archive permissions are not enough


def test_view_permission_is_per_kind(archives):
    client = token_client(_user("face-clusters-only", ["view_facecluster"]))
    cluster_of("face", [archives[0]])
    assert client.get(url("face")).status_code == 200
    assert_error(client.get(url("car")), 403, "PERMISSION_DENIED")
