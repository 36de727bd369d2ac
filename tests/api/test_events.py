"""`/events/faces/`, `/events/bodies/`, `/events/cars/`: list, count, retrieve, delete, pictures and looks_like.

Events are made with the ORM (small JPEG/PNG pictures through default_storage), no video is processed.
"""

from __future__ import annotations

import itertools
import sys
import types
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import cv2
import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from rest_framework.test import APIClient

from tests.conftest import _user, token_client
from tests.errors import assert_bad_param, assert_error
from videos.models import CLUSTER_MODELS, EVENT_MODELS, CameraGroup, Cluster, Event, FaceCluster, VideoArchive

pytestmark = pytest.mark.django_db

KINDS = ["face", "body", "car"]
PLURAL = {"face": "faces", "body": "bodies", "car": "cars"}
EVENT_KEYS = [
    "id", "created_date", "video_archive", "camera_group", "frame_timestamp", "frame_coords_left",
    "frame_coords_top", "frame_coords_right", "frame_coords_bottom", "quality", "track_id", "thumbnail",
    "fullframe", "cluster", "detector_params",
]
FACE_EVENT_KEYS = [*EVENT_KEYS, "looks_like_confidence", "matched", "matched_card", "matched_lists", "confidence"]
KEYS = {"face": FACE_EVENT_KEYS, "body": EVENT_KEYS, "car": EVENT_KEYS}

_serial = itertools.count(1)


def url(kind: str, suffix: str = "") -> str:
    return f"/events/{PLURAL[kind]}/{suffix}"


# --- factories


def picture(extension: str = ".jpg", color: tuple[int, int, int] = (0, 0, 255)) -> bytes:
    ok, data = cv2.imencode(extension, np.full((12, 16, 3), color, np.uint8))
    assert ok
    return data.tobytes()


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype="<f4")
    return vector / np.linalg.norm(vector)


def make_archive(group: CameraGroup, name: str = "clip.mp4") -> VideoArchive:
    return VideoArchive.objects.create(camera_group=group, name=name)


def make_event(
    kind: str, archive: VideoArchive, *, quality: float = 0.5, cluster: Cluster | None = None,
    created: datetime | None = None, embedding: np.ndarray | None = None, fullframe_format: str = "jpg",
    group: CameraGroup | None = None,
) -> Event:
    """One event with its pictures in storage, like videos.events.event_store makes them."""
    serial = next(_serial)
    base = f"events/{archive.pk}/{kind}/{serial:07d}-best-{serial:07d}"
    thumbnail = default_storage.save(f"{base}-thumb.jpg", ContentFile(picture()))
    fullframe = default_storage.save(f"{base}-full.{fullframe_format}", ContentFile(picture(f".{fullframe_format}")))
    normalized = default_storage.save(f"{base}-norm.jpg", ContentFile(picture())) if kind == "face" else ""
    event = EVENT_MODELS[kind].objects.create(
        video_archive=archive, camera_group=group or archive.camera_group, frame_timestamp=serial / 25,
        frame_index=serial, frame_coords_left=10, frame_coords_top=20, frame_coords_right=50, frame_coords_bottom=80,
        quality=quality, confidence=0.9, track_id=serial, post_policy="best", thumbnail=thumbnail,
        fullframe=fullframe, normalized=normalized, detector_params={"track_frames": 3, "model": kind},
        embedding=None if embedding is None else embedding.astype("<f4").tobytes(), cluster=cluster,
    )
    if created is not None:
        type(event).objects.filter(pk=event.pk).update(created_date=created)
        event.refresh_from_db()
    return event


def make_cluster(kind: str, events: list[Event], best: Event | None = None) -> Cluster:
    """A cluster of these events with a consistent event_count and centroid; the archives' counts recomputed."""
    centroid = sum((np.frombuffer(bytes(e.embedding), "<f4") for e in events if e.embedding), np.zeros(4, "<f4"))
    cluster = CLUSTER_MODELS[kind].objects.create(event_count=len(events), centroid=centroid.astype("<f4").tobytes(),
                                                  best_event=best)
    EVENT_MODELS[kind].objects.filter(pk__in=[e.pk for e in events]).update(cluster=cluster)
    for archive_id in {e.video_archive_id for e in events}:
        in_clusters = (EVENT_MODELS[kind].objects.filter(video_archive_id=archive_id, cluster__isnull=False)
                       .values("cluster_id").distinct().count())
        VideoArchive.objects.filter(pk=archive_id).update(**{f"{kind}_cluster_count": in_clusters})
    for event in events:
        event.refresh_from_db()
    return cluster


# --- users

EVENT_VIEW_PERMS = [f"view_{kind}event" for kind in KINDS] + [f"view_{kind}cluster" for kind in KINDS]
EVENT_ALL_PERMS = EVENT_VIEW_PERMS + [f"delete_{kind}event" for kind in KINDS]


@pytest.fixture
def ev_api(db) -> APIClient:
    """May view and delete events and view clusters."""
    return token_client(_user("event-operator", EVENT_ALL_PERMS))


@pytest.fixture
def ev_viewer_api(db) -> APIClient:
    """May only view events and clusters."""
    return token_client(_user("event-viewer", EVENT_VIEW_PERMS))


@pytest.fixture
def archive(default_group) -> VideoArchive:
    return make_archive(default_group)


@pytest.fixture
def other_group(db) -> CameraGroup:
    return CameraGroup.objects.create(name="second group")


def selected(client: APIClient, kind: str, params: dict[str, Any] | str) -> set[int]:
    """Ids the list selects with these query parameters; asserts that count/ agrees."""
    query = params if isinstance(params, str) else urlencode(params, doseq=True)
    response = client.get(f"{url(kind)}?{query}&limit=1000")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["next_page"] is None and body["prev_page"] is None
    ids = [row["id"] for row in body["results"]]
    assert len(ids) == len(set(ids))
    count = client.get(f"{url(kind, 'count/')}?{query}")
    assert count.status_code == 200, count.content
    assert count.json() == {"count": len(ids)}
    return set(ids)


# --- shape, retrieve


@pytest.mark.parametrize("kind", KINDS)
def test_list_and_retrieve_shape(ev_api, archive, kind):
    event = make_event(kind, archive, quality=0.625)
    body = ev_api.get(url(kind)).json()
    assert list(body) == ["next_page", "prev_page", "results"]
    [row] = body["results"]
    assert list(row) == KEYS[kind]
    expected = {
        "id": event.pk,
        "created_date": event.created_date.isoformat().replace("+00:00", "Z"),
        "video_archive": archive.pk,
        "camera_group": archive.camera_group_id,
        "frame_timestamp": event.frame_timestamp,
        "frame_coords_left": 10, "frame_coords_top": 20, "frame_coords_right": 50, "frame_coords_bottom": 80,
        "quality": 0.625,
        "track_id": event.track_id,
        "thumbnail": f"http://testserver/events/{PLURAL[kind]}/{event.pk}/thumbnail/",
        "fullframe": f"http://testserver/events/{PLURAL[kind]}/{event.pk}/fullframe/",
        "cluster": None,
        "detector_params": {"track_frames": 3, "model": kind},
    }
    if kind == "face":
        expected["looks_like_confidence"] = None
        expected.update(matched=False, matched_card=None, matched_lists=[], confidence=None)
    assert row == expected
    detail = ev_api.get(url(kind, f"{event.pk}/"))
    assert detail.status_code == 200
    assert detail.json() == expected


@pytest.mark.parametrize("kind", KINDS)
def test_event_in_a_cluster_shows_it(ev_api, archive, kind):
    event = make_event(kind, archive)
    cluster = make_cluster(kind, [event], best=event)
    assert ev_api.get(url(kind, f"{event.pk}/")).json()["cluster"] == cluster.pk


def test_kinds_are_separate_lists(ev_api, archive):
    face, body, car = (make_event(kind, archive) for kind in KINDS)
    assert [row["id"] for row in ev_api.get(url("face")).json()["results"]] == [face.pk]
    assert [row["id"] for row in ev_api.get(url("body")).json()["results"]] == [body.pk]
    assert [row["id"] for row in ev_api.get(url("car")).json()["results"]] == [car.pk]


@pytest.mark.parametrize("kind", KINDS)
def test_retrieve_unknown_is_not_found(ev_api, archive, kind):
    event = make_event(kind, archive)
    assert_error(ev_api.get(url(kind, f"{event.pk + 100}/")), 404, "NOT_FOUND")
    assert_error(ev_api.get(url(kind, "abc/")), 404, "NOT_FOUND")
    assert_error(ev_api.get(url(kind, f"{'9' * 19}/")), 404, "NOT_FOUND")


def test_write_methods_are_not_allowed(archive):
    """Events are made by processing only (a user without add/change permissions gets 403 first)."""
    client = token_client(_user("root", superuser=True))
    event = make_event("face", archive)
    assert client.post(url("face"), {}, format="json").status_code == 405
    assert client.patch(url("face", f"{event.pk}/"), {}, format="json").status_code == 405
    assert client.put(url("face", f"{event.pk}/"), {}, format="json").status_code == 405


# --- filters


@pytest.mark.parametrize("kind", KINDS)
def test_video_archive(ev_api, default_group, kind):
    a1, a2, a3 = (make_archive(default_group) for _ in range(3))
    e1, e2, e3 = make_event(kind, a1), make_event(kind, a2), make_event(kind, a3)
    assert selected(ev_api, kind, {"video_archive": a1.pk}) == {e1.pk}
    assert selected(ev_api, kind, {"video_archive": [a1.pk, a3.pk]}) == {e1.pk, e3.pk}
    assert selected(ev_api, kind, {"video_archive": f"{a2.pk},{a3.pk}"}) == {e2.pk, e3.pk}
    assert selected(ev_api, kind, f"video_archive={a1.pk},{a2.pk}&video_archive={a3.pk}") == {e1.pk, e2.pk, e3.pk}
    assert selected(ev_api, kind, {"video_archive": a3.pk + 100}) == set()


@pytest.mark.parametrize("param", ["camera_groups", "camera_group"])
def test_camera_groups(ev_api, default_group, other_group, param):
    third = CameraGroup.objects.create(name="third")
    archive = make_archive(default_group)
    e1 = make_event("face", archive)
    e2 = make_event("face", archive, group=other_group)
    e3 = make_event("face", archive, group=third)
    assert selected(ev_api, "face", {param: other_group.pk}) == {e2.pk}
    assert selected(ev_api, "face", {param: [default_group.pk, third.pk]}) == {e1.pk, e3.pk}
    assert selected(ev_api, "face", {param: f"{other_group.pk},{third.pk}"}) == {e2.pk, e3.pk}


def test_id_in_and_cluster_in(ev_api, archive):
    e1, e2, e3, e4 = (make_event("body", archive) for _ in range(4))
    c1 = make_cluster("body", [e1, e2])
    c2 = make_cluster("body", [e3])
    assert selected(ev_api, "body", {"id_in": [e1.pk, e4.pk]}) == {e1.pk, e4.pk}
    assert selected(ev_api, "body", {"id_in": f"{e2.pk},{e3.pk}"}) == {e2.pk, e3.pk}
    assert selected(ev_api, "body", {"cluster_in": c1.pk}) == {e1.pk, e2.pk}
    assert selected(ev_api, "body", {"cluster_in": f"{c1.pk},{c2.pk}"}) == {e1.pk, e2.pk, e3.pk}
    assert selected(ev_api, "body", {"cluster_in": c2.pk + 100}) == set()


def test_quality(ev_api, archive):
    low, mid, high = (make_event("car", archive, quality=q) for q in (0.25, 0.5, 0.75))
    assert selected(ev_api, "car", {"quality_gte": "0.5"}) == {mid.pk, high.pk}
    assert selected(ev_api, "car", {"quality_gte": 0.51}) == {high.pk}
    assert selected(ev_api, "car", {"quality_lte": "0.5"}) == {low.pk, mid.pk}
    assert selected(ev_api, "car", {"quality_gte": 0, "quality_lte": 1}) == {low.pk, mid.pk, high.pk}
    assert selected(ev_api, "car", {"quality_gte": "0.3", "quality_lte": "0.6"}) == {mid.pk}


def test_created_date(ev_api, archive):
    noon = datetime(2024, 5, 10, 12, tzinfo=UTC)
    before = make_event("face", archive, created=noon - timedelta(microseconds=1))
    at = make_event("face", archive, created=noon)
    after = make_event("face", archive, created=noon + timedelta(microseconds=1))
    assert selected(ev_api, "face", {"created_date_gt": "2024-05-10T12:00:00Z"}) == {after.pk}
    assert selected(ev_api, "face", {"created_date_gte": "2024-05-10T15:00:00+03:00"}) == {at.pk, after.pk}
    assert selected(ev_api, "face", {"created_date_lt": "2024-05-10T12:00:00"}) == {before.pk}
    assert selected(ev_api, "face", {"created_date_lte": "2024-05-10T12:00:00Z"}) == {before.pk, at.pk}


def test_created_date_relative_filters(ev_api, archive):
    old = make_event("face", archive, created=datetime.now(UTC) - timedelta(days=40))
    new = make_event("face", archive)
    assert selected(ev_api, "face", {"created_date_last_n_days": 7}) == {new.pk}
    assert new.pk in selected(ev_api, "face", {"created_date_nth_full_week": 1})
    assert old.pk not in selected(ev_api, "face", {"created_date_nth_full_week": 1})
    assert old.pk not in selected(ev_api, "face", {"created_date_nth_work_week": 1})


def test_filters_are_anded(ev_api, default_group, other_group):
    a1, a2 = make_archive(default_group), make_archive(other_group)
    hit = make_event("face", a1, quality=0.9)
    make_event("face", a1, quality=0.1)
    make_event("face", a2, quality=0.9)
    assert selected(ev_api, "face", {"video_archive": a1.pk, "quality_gte": 0.5}) == {hit.pk}
    assert selected(ev_api, "face", {"camera_groups": default_group.pk, "quality_gte": 0.5}) == {hit.pk}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("video_archive", "abc"), ("video_archive", "-1"), ("video_archive", "1,,2"), ("video_archive", "1.5"),
        ("camera_groups", "x"), ("camera_group", "1;2"), ("id_in", "9" * 30), ("cluster_in", "one"),
        ("quality_gte", "high"), ("quality_gte", "1.5"), ("quality_gte", "-0.1"), ("quality_lte", "NaN"),
        ("quality_lte", "inf"),
        ("created_date_gte", "yesterday"), ("created_date_lt", "2024-13-01T00:00:00Z"),
        ("created_date_last_n_days", "-1"), ("created_date_nth_full_week", "0"), ("created_date_nth_work_week", "1.5"),
        ("ordering", "name"), ("ordering", "-frame_timestamp"), ("limit", "0"), ("limit", "1001"), ("limit", "x"),
        ("page", "garbage!"),
    ],
)
def test_invalid_value_is_bad_param(ev_api, archive, kind, param, value):
    assert_bad_param(ev_api.get(url(kind), {param: value}), param)
    if param not in ("limit", "page"):
        assert_bad_param(ev_api.get(url(kind, "count/"), {param: value}), param)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("param", ["name", "case_in", "video_archives", "cursor", "format", "quality"])
def test_unknown_parameter_is_bad_param(ev_api, archive, kind, param):
    assert_bad_param(ev_api.get(url(kind), {param: "1"}), param)
    assert_bad_param(ev_api.get(url(kind, "count/"), {param: "1"}), param)
    assert_bad_param(ev_api.get(url(kind), {"video_archive": archive.pk, param: "1"}), param)


@pytest.mark.parametrize("kind", ["body", "car"])
def test_looks_like_is_only_for_faces(ev_api, archive, kind):
    assert_bad_param(ev_api.get(url(kind), {"looks_like": "detection:1"}), "looks_like")


# --- ordering and pagination


@pytest.fixture
def ordered_events(archive) -> list[Event]:
    """12 face events with repeated qualities and created dates, none in id order."""
    base = datetime(2024, 5, 10, 12, tzinfo=UTC)
    return [
        make_event("face", archive, quality=[0.5, 0.25, 0.75][index % 3],
                   created=base + timedelta(minutes=(index * 7) % 4))
        for index in range(12)
    ]


def expected_order(events: list[Event], ordering: str | None) -> list[int]:
    parts = (ordering or "-id").split(",")
    if all(part.lstrip("-") != "id" for part in parts):
        parts.append("-id" if parts[0].startswith("-") else "id")
    ordered = list(events)
    for part in reversed(parts):
        name = part.lstrip("-")
        ordered.sort(key=lambda event, name=name: getattr(event, "pk" if name == "id" else name),
                     reverse=part.startswith("-"))
    return [event.pk for event in ordered]


def walk(client: APIClient, first: str, link: str) -> list[dict[str, Any]]:
    pages = [client.get(first).json()]
    while pages[-1][link] is not None:
        assert len(pages) < 100
        assert pages[-1][link].startswith("http://testserver/events/faces/?")
        assert "page" in parse_qs(urlsplit(pages[-1][link]).query)
        response = client.get(pages[-1][link])
        assert response.status_code == 200, response.content
        pages.append(response.json())
    return pages


@pytest.mark.parametrize("ordering", [None, "id", "-id", "quality", "-quality", "created_date", "-created_date",
                                      "-quality,created_date"])
@pytest.mark.parametrize("limit", [1, 5])
def test_pages_forward_and_back(ev_api, ordered_events, ordering, limit):
    params = {"limit": limit, **({"ordering": ordering} if ordering else {})}
    forward = walk(ev_api, f"{url('face')}?{urlencode(params)}", "next_page")
    walked = [row["id"] for page in forward for row in page["results"]]
    assert walked == expected_order(ordered_events, ordering)
    assert all(len(page["results"]) == limit for page in forward[:-1])
    assert forward[0]["prev_page"] is None
    backward = walk(ev_api, forward[-1]["prev_page"], "prev_page")
    assert [[row["id"] for row in page["results"]] for page in reversed(backward)] == [
        [row["id"] for row in page["results"]] for page in forward[:-1]
    ]


def test_pages_keep_the_filters(ev_api, default_group):
    a1, a2 = make_archive(default_group), make_archive(default_group)
    wanted = [make_event("face", a1).pk for _ in range(5)]
    for _ in range(5):
        make_event("face", a2)
    pages = walk(ev_api, f"{url('face')}?video_archive={a1.pk}&limit=2", "next_page")
    assert [row["id"] for page in pages for row in page["results"]] == sorted(wanted, reverse=True)
    assert parse_qs(urlsplit(pages[0]["next_page"]).query)["video_archive"] == [str(a1.pk)]


def test_default_limit_and_count(ev_api, archive):
    created = [make_event("body", archive).pk for _ in range(23)]
    body = ev_api.get(url("body")).json()
    assert [row["id"] for row in body["results"]] == sorted(created, reverse=True)[:20]
    assert body["next_page"] is not None
    assert ev_api.get(url("body", "count/")).json() == {"count": 23}
    assert ev_api.get(url("body", "count/"), {"id_in": created[:3]}).json() == {"count": 3}


def test_empty_list_and_count(ev_api, db):
    for kind in KINDS:
        assert ev_api.get(url(kind)).json() == {"next_page": None, "prev_page": None, "results": []}
        assert ev_api.get(url(kind, "count/")).json() == {"count": 0}


def test_list_has_no_n_plus_1(ev_api, default_group, django_assert_max_num_queries):
    archives = [make_archive(default_group) for _ in range(5)]
    events = [make_event("face", archives[index % 5], embedding=unit(1, index, 0, 0)) for index in range(40)]
    make_cluster("face", events[:10], best=events[0])
    make_cluster("face", events[10:20])
    ev_api.get(url("face"))  # warm caches (content types, permissions) outside the count
    # token with its user, permissions (user's and groups'), the page: the same for 1 or 1000 rows.
    with django_assert_max_num_queries(4):
        response = ev_api.get(url("face"), {"limit": 40})
    assert len(response.json()["results"]) == 40
    with django_assert_max_num_queries(4):
        assert ev_api.get(url("face", "count/")).json() == {"count": 40}


# --- permissions


@pytest.mark.parametrize("kind", KINDS)
def test_anonymous_is_unauthorized(anon_api, archive, kind):
    event = make_event(kind, archive)
    for path in (url(kind), url(kind, "count/"), url(kind, f"{event.pk}/"), url(kind, f"{event.pk}/thumbnail/"),
                 url(kind, f"{event.pk}/fullframe/")):
        assert_error(anon_api.get(path), 401, "UNAUTHORIZED")
    assert_error(anon_api.delete(url(kind, f"{event.pk}/")), 401, "UNAUTHORIZED")


@pytest.mark.parametrize("kind", KINDS)
def test_outsider_is_denied(outsider_api, api, archive, kind):
    """Neither a user without permissions nor the archive operator (archive permissions only) may see events."""
    event = make_event(kind, archive)
    for client in (outsider_api, api):
        for path in (url(kind), url(kind, "count/"), url(kind, f"{event.pk}/"), url(kind, f"{event.pk}/thumbnail/"),
                     url(kind, f"{event.pk}/fullframe/")):
            assert_error(client.get(path), 403, "PERMISSION_DENIED")
        assert_error(client.delete(url(kind, f"{event.pk}/")), 403, "PERMISSION_DENIED")
    assert EVENT_MODELS[kind].objects.filter(pk=event.pk).exists()


def test_view_permission_is_per_kind(archive, db):
    client = token_client(_user("faces-only", ["view_faceevent"]))
    face, body = make_event("face", archive), make_event("body", archive)
    assert client.get(url("face")).status_code == 200
    assert client.get(url("face", f"{face.pk}/thumbnail/")).status_code == 200
    assert_error(client.get(url("body")), 403, "PERMISSION_DENIED")
    assert_error(client.get(url("body", f"{body.pk}/thumbnail/")), 403, "PERMISSION_DENIED")


def test_viewer_cannot_delete(ev_viewer_api, archive):
    event = make_event("face", archive)
    assert ev_viewer_api.get(url("face", f"{event.pk}/")).status_code == 200
    assert_error(ev_viewer_api.delete(url("face", f"{event.pk}/")), 403, "PERMISSION_DENIED")
    assert default_storage.exists(event.thumbnail.name)


# --- pictures


@pytest.mark.parametrize("kind", KINDS)
def test_thumbnail_and_fullframe_bytes(ev_viewer_api, archive, kind):
    event = make_event(kind, archive, fullframe_format="png")
    response = ev_viewer_api.get(url(kind, f"{event.pk}/thumbnail/"))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    with default_storage.open(event.thumbnail.name, "rb") as stored:
        assert b"".join(response.streaming_content) == stored.read()
    response = ev_viewer_api.get(url(kind, f"{event.pk}/fullframe/"))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    data = b"".join(response.streaming_content)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (12, 16, 3)


def test_picture_urls_in_the_event_work(ev_viewer_api, archive):
    event = make_event("face", archive)
    row = ev_viewer_api.get(url("face", f"{event.pk}/")).json()
    for key in ("thumbnail", "fullframe"):
        response = ev_viewer_api.get(row[key])
        assert response.status_code == 200
        assert response["Content-Type"] == "image/jpeg"


def test_picture_head(ev_viewer_api, archive):
    event = make_event("face", archive)
    response = ev_viewer_api.head(url("face", f"{event.pk}/thumbnail/"))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"


def test_picture_of_unknown_event_is_not_found(ev_viewer_api, archive):
    event = make_event("face", archive)
    assert_error(ev_viewer_api.get(url("face", f"{event.pk + 1}/thumbnail/")), 404, "NOT_FOUND")
    assert_error(ev_viewer_api.get(url("face", f"{event.pk + 1}/fullframe/")), 404, "NOT_FOUND")


def test_missing_picture_file_is_not_found(ev_viewer_api, archive):
    event = make_event("car", archive)
    default_storage.delete(event.thumbnail.name)
    assert_error(ev_viewer_api.get(url("car", f"{event.pk}/thumbnail/")), 404, "NOT_FOUND")
    type(event).objects.filter(pk=event.pk).update(fullframe="")
    assert_error(ev_viewer_api.get(url("car", f"{event.pk}/fullframe/")), 404, "NOT_FOUND")


def test_picture_takes_no_query_parameters(ev_viewer_api, archive):
    event = make_event("face", archive)
    assert_bad_param(ev_viewer_api.get(url("face", f"{event.pk}/thumbnail/"), {"width": 10}), "width")


# --- delete


@pytest.mark.parametrize("kind", KINDS)
def test_delete_removes_the_event_and_its_files(ev_api, archive, kind, django_capture_on_commit_callbacks):
    event = make_event(kind, archive)
    keep = make_event(kind, archive)
    names = [name for name in (event.thumbnail.name, event.fullframe.name, event.normalized.name) if name]
    assert all(default_storage.exists(name) for name in names)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:  # files go once the delete commits
        response = ev_api.delete(url(kind, f"{event.pk}/"))
    assert len(callbacks) == 1
    assert response.status_code == 204
    assert not EVENT_MODELS[kind].objects.filter(pk=event.pk).exists()
    assert not any(default_storage.exists(name) for name in names)
    assert default_storage.exists(keep.thumbnail.name)
    assert_error(ev_api.get(url(kind, f"{event.pk}/")), 404, "NOT_FOUND")
    assert_error(ev_api.delete(url(kind, f"{event.pk}/")), 404, "NOT_FOUND")
    assert getattr(VideoArchive.objects.get(pk=archive.pk), f"{kind}_count") == 1


@pytest.mark.parametrize("kind", KINDS)
def test_delete_updates_the_cluster(ev_api, default_group, kind):
    a1, a2 = make_archive(default_group), make_archive(default_group)
    best = make_event(kind, a1, quality=0.9, embedding=unit(1, 0, 0, 0))
    second = make_event(kind, a2, quality=0.8, embedding=unit(0, 1, 0, 0))
    third = make_event(kind, a2, quality=0.3, embedding=unit(0, 0, 1, 0))
    cluster = make_cluster(kind, [best, second, third], best=best)
    assert getattr(VideoArchive.objects.get(pk=a1.pk), f"{kind}_cluster_count") == 1

    assert ev_api.delete(url(kind, f"{best.pk}/")).status_code == 204

    cluster.refresh_from_db()
    assert cluster.event_count == 2
    assert cluster.best_event_id == second.pk  # the best remaining member by quality
    np.testing.assert_allclose(np.frombuffer(bytes(cluster.centroid), "<f4"), [0, 1, 1, 0], atol=1e-6)
    assert getattr(VideoArchive.objects.get(pk=a1.pk), f"{kind}_cluster_count") == 0
    assert getattr(VideoArchive.objects.get(pk=a2.pk), f"{kind}_cluster_count") == 1

    assert ev_api.delete(url(kind, f"{third.pk}/")).status_code == 204
    cluster.refresh_from_db()
    assert cluster.event_count == 1
    assert cluster.best_event_id == second.pk  # unchanged: it was not the deleted one

    assert ev_api.delete(url(kind, f"{second.pk}/")).status_code == 204
    assert not CLUSTER_MODELS[kind].objects.filter(pk=cluster.pk).exists()  # empty: dropped
    assert getattr(VideoArchive.objects.get(pk=a2.pk), f"{kind}_cluster_count") == 0


def test_delete_keeps_other_clusters_of_the_archive(ev_api, archive):
    e1, e2, e3 = (make_event("face", archive) for _ in range(3))
    make_cluster("face", [e1])
    kept = make_cluster("face", [e2, e3], best=e2)
    assert VideoArchive.objects.get(pk=archive.pk).face_cluster_count == 2
    assert ev_api.delete(url("face", f"{e1.pk}/")).status_code == 204
    assert VideoArchive.objects.get(pk=archive.pk).face_cluster_count == 1
    assert list(FaceCluster.objects.values_list("pk", flat=True)) == [kept.pk]


def test_delete_recounts_a_drifted_count(ev_api, archive):
    e1, e2 = make_event("face", archive), make_event("face", archive)
    cluster = make_cluster("face", [e1, e2], best=e1)
    FaceCluster.objects.filter(pk=cluster.pk).update(event_count=0)
    assert ev_api.delete(url("face", f"{e1.pk}/")).status_code == 204
    cluster.refresh_from_db()
    assert cluster.event_count == 1
    assert cluster.best_event_id == e2.pk


def test_delete_without_an_embedding_sums_the_members_left(ev_api, archive):
    e1 = make_event("face", archive)  # no embedding: nothing to subtract
    e2 = make_event("face", archive, embedding=unit(0, 3, 4, 0))
    e3 = make_event("face", archive, embedding=unit(1, 0, 0, 0))
    cluster = make_cluster("face", [e1, e2, e3], best=e3)
    FaceCluster.objects.filter(pk=cluster.pk).update(centroid=unit(9, 9, 9, 9).tobytes())  # drifted
    before = cluster.modified_date
    assert ev_api.delete(url("face", f"{e1.pk}/")).status_code == 204
    cluster.refresh_from_db()
    np.testing.assert_allclose(np.frombuffer(bytes(cluster.centroid), "<f4"), [1, 0.6, 0.8, 0], atol=1e-6)
    assert cluster.event_count == 2 and cluster.best_event_id == e3.pk
    assert cluster.modified_date > before


def test_delete_leaves_a_null_cluster_count_null(ev_api, archive):
    """Null means clustering has not run for the archive yet (it is being processed)."""
    e1, e2 = make_event("face", archive), make_event("face", archive)
    make_cluster("face", [e1])
    VideoArchive.objects.filter(pk=archive.pk).update(face_cluster_count=None)
    assert ev_api.delete(url("face", f"{e2.pk}/")).status_code == 204
    archive.refresh_from_db()
    assert archive.face_cluster_count is None
    assert archive.face_count == 1


def test_delete_takes_no_unknown_parameters(ev_api, archive):
    event = make_event("face", archive)
    assert_bad_param(ev_api.delete(url("face", f"{event.pk}/") + "?force=1"), "force")
    assert EVENT_MODELS["face"].objects.filter(pk=event.pk).exists()


# --- looks_like (videos.search replaced by a fake with the same interface)


@dataclass
class FakeSearch:
    """Stands in for videos.search: `hits` is the engine's ranking of (face event id, similarity)."""

    hits: list[tuple[int, float]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    probes: list[tuple[str, Any]] = field(default_factory=list)


@pytest.fixture
def fake_search(monkeypatch) -> FakeSearch:
    state = FakeSearch()
    module = types.ModuleType("videos.search")

    class SearchError(Exception):
        pass

    def probe_vector(value: str, user) -> np.ndarray:
        state.probes.append((value, user))
        if not value.startswith(("detection:", "faceevent:")) or value.endswith(":404"):
            raise SearchError(f"Unknown probe {value!r}.")
        return unit(1, 0, 0, 0)

    def search_faces(vector: np.ndarray, *, threshold: float, limit: int) -> list[tuple[int, float]]:
        state.calls.append({"threshold": threshold, "limit": limit})
        return [(event_id, sim) for event_id, sim in state.hits if sim >= threshold][:limit]

    module.SearchError = SearchError
    module.probe_vector = probe_vector
    module.search_faces = search_faces
    monkeypatch.setitem(sys.modules, "videos.search", module)
    return state


def looks_like(client: APIClient, **params: Any):
    return client.get(url("face"), {"looks_like": "faceevent:1", **params})


def test_looks_like_orders_by_similarity(ev_viewer_api, archive, fake_search):
    events = [make_event("face", archive) for _ in range(4)]
    fake_search.hits = [(events[2].pk, 0.99), (events[0].pk, 0.9), (events[3].pk, 0.8), (events[1].pk, 0.5)]
    response = looks_like(ev_viewer_api)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["next_page"] is None and body["prev_page"] is None
    assert [(row["id"], row["looks_like_confidence"]) for row in body["results"]] == [
        (events[2].pk, 0.99), (events[0].pk, 0.9), (events[3].pk, 0.8)  # default threshold 0.75
    ]
    assert [list(row) for row in body["results"]] == [FACE_EVENT_KEYS] * 3
    assert fake_search.calls == [{"threshold": 0.75, "limit": 20}]
    value, user = fake_search.probes[0]
    assert value == "faceevent:1" and user.username == "event-viewer"


def test_looks_like_threshold_and_limit(ev_viewer_api, archive, fake_search):
    events = [make_event("face", archive) for _ in range(4)]
    fake_search.hits = [(event.pk, 0.9 - index * 0.2) for index, event in enumerate(events)]
    rows = looks_like(ev_viewer_api, threshold="0.4").json()["results"]
    assert [row["id"] for row in rows] == [events[0].pk, events[1].pk, events[2].pk]
    rows = looks_like(ev_viewer_api, threshold=0, limit=2).json()["results"]
    assert [row["id"] for row in rows] == [events[0].pk, events[1].pk]
    assert fake_search.calls[-1] == {"threshold": 0.0, "limit": 2}
    assert looks_like(ev_viewer_api, threshold=1).json()["results"] == []


def test_looks_like_combines_with_filters(ev_viewer_api, default_group, fake_search):
    """The engine ranks everything; it is asked for more until `limit` matches pass the other filters."""
    a1, a2 = make_archive(default_group), make_archive(default_group)
    crowd = [make_event("face", a1) for _ in range(30)]
    wanted = [make_event("face", a2) for _ in range(3)]
    fake_search.hits = [(event.pk, 0.99 - index * 0.005) for index, event in enumerate(crowd + wanted)]
    rows = looks_like(ev_viewer_api, video_archive=a2.pk, limit=2, threshold=0.5).json()["results"]
    assert [row["id"] for row in rows] == [wanted[0].pk, wanted[1].pk]
    assert [call["limit"] for call in fake_search.calls] == [2, 8, 32]
    fake_search.calls.clear()
    rows = looks_like(ev_viewer_api, video_archive=a2.pk, quality_gte="0.9").json()["results"]
    assert rows == []
    assert [call["limit"] for call in fake_search.calls] == [20, 80]  # the engine had no more to give


def test_looks_like_skips_ids_that_are_gone(ev_viewer_api, archive, fake_search):
    event = make_event("face", archive)
    fake_search.hits = [(event.pk + 1000, 0.95), (event.pk, 0.9)]
    rows = looks_like(ev_viewer_api).json()["results"]
    assert [(row["id"], row["looks_like_confidence"]) for row in rows] == [(event.pk, 0.9)]


def test_looks_like_search_error_is_bad_param(ev_viewer_api, archive, fake_search):
    assert_bad_param(ev_viewer_api.get(url("face"), {"looks_like": "faceevent:404"}), "looks_like")
    assert_bad_param(ev_viewer_api.get(url("face"), {"looks_like": "nonsense"}), "looks_like")


@pytest.mark.parametrize(("params", "param"), [
    ({"looks_like": "faceevent:1", "threshold": "high"}, "threshold"),
    ({"looks_like": "faceevent:1", "threshold": "1.01"}, "threshold"),
    ({"looks_like": "faceevent:1", "threshold": "-0.5"}, "threshold"),
    ({"looks_like": "faceevent:1", "threshold": "NaN"}, "threshold"),
    ({"threshold": "0.5"}, "threshold"),  # threshold without looks_like
    ({"looks_like": "faceevent:1", "ordering": "-quality"}, "ordering"),
    ({"looks_like": "faceevent:1", "page": "abc"}, "page"),
    ({"looks_like": "faceevent:1", "limit": "0"}, "limit"),
    ({"looks_like": "faceevent:1", "video_archive": "x"}, "video_archive"),
    ({"looks_like": "faceevent:1", "bogus": "1"}, "bogus"),
    ({"looks_like": "x" * 300}, "looks_like"),
])
def test_looks_like_bad_params(ev_viewer_api, archive, fake_search, params, param):
    assert_bad_param(ev_viewer_api.get(url("face"), params), param)


def test_count_does_not_take_looks_like(ev_viewer_api, archive, fake_search):
    assert_bad_param(ev_viewer_api.get(url("face", "count/"), {"looks_like": "faceevent:1"}), "looks_like")
    assert_bad_param(ev_viewer_api.get(url("face", "count/"), {"threshold": "0.5"}), "threshold")


def test_looks_like_needs_view_permission(outsider_api, anon_api, archive, fake_search):
    assert_error(outsider_api.get(url("face"), {"looks_like": "faceevent:1"}), 403, "PERMISSION_DENIED")
    assert_error(anon_api.get(url("face"), {"looks_like": "faceevent:1"}), 401, "UNAUTHORIZED")
    assert fake_search.probes == []


def test_empty_looks_like_is_bad_param(ev_viewer_api, archive, fake_search):
    assert_bad_param(ev_viewer_api.get(url("face"), {"looks_like": ""}), "looks_like")
    assert fake_search.probes == []


# --- looks_like with the real search engine (videos.search)


@pytest.fixture
def real_search(settings, tmp_path):
    search = pytest.importorskip("videos.search")
    settings.FFV_SEARCH_INDEX_DIR = tmp_path / "index"
    settings.FFV_SEARCH_RECONCILE_SECONDS = 0.0
    search.reset_search_index()
    yield search
    search.reset_search_index()


def test_looks_like_with_the_search_engine(ev_viewer_api, default_group, real_search):
    a1, a2 = make_archive(default_group), make_archive(default_group)
    probe = make_event("face", a1, embedding=unit(1, 0, 0, 0, 0, 0, 0, 0))
    near = make_event("face", a2, embedding=unit(1, 0.2, 0, 0, 0, 0, 0, 0))
    farther = make_event("face", a1, embedding=unit(1, 0.7, 0, 0, 0, 0, 0, 0))
    make_event("face", a1, embedding=unit(0, 0, 1, 0, 0, 0, 0, 0))  # a stranger
    make_event("face", a1)  # no embedding

    rows = ev_viewer_api.get(url("face"), {"looks_like": f"faceevent:{probe.pk}"}).json()["results"]
    assert [row["id"] for row in rows] == [probe.pk, near.pk, farther.pk]
    assert rows[0]["looks_like_confidence"] == pytest.approx(1.0, abs=1e-5)
    assert rows[1]["looks_like_confidence"] == pytest.approx(float(unit(1, 0.2, 0, 0, 0, 0, 0, 0)[0]), abs=1e-5)
    assert rows[0]["looks_like_confidence"] > rows[1]["looks_like_confidence"] > rows[2]["looks_like_confidence"]

    rows = ev_viewer_api.get(url("face"), {"looks_like": f"faceevent:{probe.pk}", "threshold": "0.9"}).json()
    assert [row["id"] for row in rows["results"]] == [probe.pk, near.pk]
    rows = ev_viewer_api.get(url("face"), {"looks_like": f"faceevent:{probe.pk}", "video_archive": a2.pk}).json()
    assert [row["id"] for row in rows["results"]] == [near.pk]
    assert_bad_param(ev_viewer_api.get(url("face"), {"looks_like": f"faceevent:{probe.pk + 100}"}), "looks_like")
    assert_bad_param(ev_viewer_api.get(url("face"), {"looks_like": "detection:nope"}), "looks_like")
    assert_bad_param(ev_viewer_api.get(url("face"), {"looks_like": "face:1"}), "looks_like")
