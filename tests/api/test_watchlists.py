"""`/watch-lists/`, `/cards/`, `/card-photos/`, a face cluster's `card`, and matching on real faces.

Photos are opencv-doc's (messi5.jpg, a frame of Megamind.avi) with the prepared models; skips without them
locally and fails under CI=true. Matching is called as the task calls it (videos.matching), on events whose
embeddings are the real faces' embeddings.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.api.test_detect import face_models, photo  # noqa: F401 (fixture)
from tests.conftest import _user, requires, token_client
from tests.errors import assert_bad_param, assert_error
from tests.processing.conftest import OPENCV_DATA_DIR
from videos import matching
from videos.models import CameraGroup, Card, CardPhoto, FaceCluster, FaceEvent, VideoArchive, WatchList

pytestmark = pytest.mark.django_db

PERMS = [f"{action}_{model}" for action in ("view", "add", "change", "delete")
         for model in ("watchlist", "card", "cardphoto", "faceevent", "facecluster")]


@pytest.fixture
def admin_api(db):
    from django.contrib.auth.models import User

    return token_client(User.objects.create_superuser("root", password="pw-root", email=""))


@pytest.fixture
def staff(db):
    return token_client(_user("watcher", PERMS))


def other_face() -> bytes:
    """A JPEG of another person than messi5.jpg's: the first frame of Megamind.avi (every 10th) with one face."""
    from videos.detections import photo_faces

    path = OPENCV_DATA_DIR / "Megamind.avi"
    requires(path.is_file(), f"{path} is missing (./dev test fetches Debian's opencv-doc)")
    capture = cv2.VideoCapture(str(path))
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            assert ok, "no frame of Megamind.avi has exactly one face"
            index += 1
            if index % 10 == 0 and len(photo_faces(jpeg(frame))[1]) == 1:
                return jpeg(frame)
    finally:
        capture.release()


def jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def add_photo(api, card_id: int, data: bytes, name: str = "face.jpg"):
    return api.post(f"/cards/{card_id}/photos/", {"photo": SimpleUploadedFile(name, data, "image/jpeg")},
                    format="multipart")


def make_list(api, **fields) -> dict:
    response = api.post("/watch-lists/", {"name": "wanted", **fields}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def make_card(api, **fields) -> dict:
    response = api.post("/cards/", {"name": "someone", **fields}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


# --- watch lists


def test_watch_list_crud(staff, default_group):
    created = make_list(staff, color="FF0000", threshold=0.8, camera_groups=[default_group.pk])
    assert {key: created[key] for key in ("name", "color", "active", "threshold", "camera_groups", "comment")} == {
        "name": "wanted", "color": "ff0000", "active": True, "threshold": 0.8,
        "camera_groups": [default_group.pk], "comment": ""}
    url = f"/watch-lists/{created['id']}/"
    assert staff.get(url).json() == created
    changed = staff.patch(url, {"active": False, "camera_groups": []}, format="json")
    assert changed.status_code == 200 and changed.json()["active"] is False and changed.json()["camera_groups"] == []
    assert staff.get("/watch-lists/count/").json() == {"count": 1}
    assert staff.get("/watch-lists/", {"active": "false"}).json()["results"][0]["id"] == created["id"]
    assert staff.get("/watch-lists/", {"active": "true"}).json()["results"] == []
    assert staff.delete(url).status_code == 204
    assert_error(staff.get(url), 404, "NOT_FOUND")


@pytest.mark.parametrize(("body", "param"), [
    ({"name": ""}, "name"),
    ({"name": 5}, "name"),
    ({"name": "x", "color": "red"}, "color"),
    ({"name": "x", "threshold": 1.5}, "threshold"),
    ({"name": "x", "threshold": "0.5"}, "threshold"),
    ({"name": "x", "active": "yes"}, "active"),
    ({"name": "x", "camera_groups": [987654]}, "camera_groups"),
    ({"name": "x", "camera_groups": ["1"]}, "camera_groups"),
    ({"name": "x", "camera_groups": 1}, "camera_groups"),
    ({"name": "x", "camera_groups": list(range(1, 200))}, "camera_groups"),
    ({"name": "x", "cards": []}, "cards"),
])
def test_watch_list_bad_input(staff, body, param):
    assert_bad_param(staff.post("/watch-lists/", body, format="json"), param)
    assert not WatchList.objects.exists()


def test_watch_list_names_are_unique_and_filters_are_checked(staff):
    make_list(staff)
    assert_bad_param(staff.post("/watch-lists/", {"name": "wanted"}, format="json"), "name")
    assert_bad_param(staff.get("/watch-lists/", {"active": "maybe"}), "active")
    assert_bad_param(staff.get("/watch-lists/", {"colour": "x"}), "colour")


def test_watch_lists_need_their_permissions(db, default_group):
    viewer = token_client(_user("list-viewer", ["view_watchlist"]))
    assert viewer.get("/watch-lists/").status_code == 200
    assert_error(viewer.post("/watch-lists/", {"name": "x"}, format="json"), 403, "PERMISSION_DENIED")


# --- cards


def test_card_crud_and_filters(staff):
    watch_list = make_list(staff)
    card = make_card(staff, comment="seen twice", watch_lists=[watch_list["id"], watch_list["id"]])
    assert card["watch_lists"] == [watch_list["id"]] and card["photos"] == [] and card["active"] is True
    other = make_card(staff, name="nobody")
    found = staff.get("/cards/", {"watch_lists": watch_list["id"]}).json()["results"]
    assert [row["id"] for row in found] == [card["id"]]
    assert staff.get("/cards/count/", {"name_contains": "NOB"}).json() == {"count": 1}
    changed = staff.put(f"/cards/{other['id']}/", {"name": "renamed", "active": False}, format="json")
    assert changed.status_code == 200 and changed.json()["name"] == "renamed" and changed.json()["active"] is False
    assert staff.delete(f"/cards/{card['id']}/").status_code == 204
    assert list(Card.objects.values_list("name", flat=True)) == ["renamed"]


@pytest.mark.parametrize(("body", "param"), [
    ({}, "name"),
    ({"name": None}, "name"),
    ({"name": "x" * 257}, "name"),
    ({"name": "x", "watch_lists": [987654]}, "watch_lists"),
    ({"name": "x", "watch_lists": [True]}, "watch_lists"),
    ({"name": "x", "watch_lists": {"a": 1}}, "watch_lists"),
    ({"name": "x", "faces": [1]}, "faces"),
    ({"name": "x", "comment": 3}, "comment"),
])
def test_card_bad_input(staff, body, param):
    assert_bad_param(staff.post("/cards/", body, format="json"), param)
    assert not Card.objects.exists()


def test_card_photos_bad_input(staff, settings):
    card = make_card(staff)
    assert_bad_param(add_photo(staff, card["id"], b"not an image"), "photo")
    assert_bad_param(add_photo(staff, card["id"], b""), "photo")
    assert_bad_param(staff.post(f"/cards/{card['id']}/photos/", {"picture": "x"}, format="multipart"), "photo")
    assert_error(staff.post(f"/cards/{card['id']}/photos/", {"photo": "x"}, format="json"), 415,
                 "UNSUPPORTED_MEDIA_TYPE")
    settings.FFV_DETECT_MAX_IMAGE_SIZE = 1024
    assert_error(add_photo(staff, card["id"], b"\xff\xd8\xff" + bytes(4096)), 413, "PAYLOAD_TOO_LARGE")
    assert_error(add_photo(staff, 987654321, jpeg(np.zeros((8, 8, 3), np.uint8))), 404, "NOT_FOUND")
    assert not CardPhoto.objects.exists()


def test_a_card_photo_needs_exactly_one_face(staff, face_models):  # noqa: F811
    card = make_card(staff)
    blank = np.full((240, 320, 3), 128, np.uint8)
    cv2.rectangle(blank, (40, 40), (200, 160), (30, 90, 200), -1)
    body = assert_bad_param(add_photo(staff, card["id"], jpeg(blank)), "photo")
    assert "No face" in body["desc"]
    messi = cv2.imdecode(np.frombuffer(photo("messi5.jpg"), np.uint8), cv2.IMREAD_COLOR)
    other = cv2.imdecode(np.frombuffer(other_face(), np.uint8), cv2.IMREAD_COLOR)
    lena = cv2.resize(other, (other.shape[1] * messi.shape[0] // other.shape[0], messi.shape[0]))
    body = assert_bad_param(add_photo(staff, card["id"], jpeg(np.hstack([messi, lena]))), "photo")
    assert "2 faces" in body["desc"]
    ru = token_client(_user("watcher-ru", PERMS), language="ru")
    body = assert_bad_param(add_photo(ru, card["id"], jpeg(blank)), "photo")
    assert "лиц" in body["desc"]
    assert not CardPhoto.objects.exists()

    added = add_photo(staff, card["id"], photo("messi5.jpg"))
    assert added.status_code == 201, added.content
    body = added.json()
    assert body["card"] == card["id"] and 0 < body["quality"] <= 1
    assert staff.get(f"/cards/{card['id']}/").json()["photos"] == [body["id"]]
    assert [row["id"] for row in staff.get(f"/cards/{card['id']}/photos/").json()] == [body["id"]]
    image = staff.get(f"/card-photos/{body['id']}/image/")
    assert image.status_code == 200 and b"".join(image.streaming_content) == photo("messi5.jpg")
    assert staff.get("/card-photos/", {"card": card["id"]}).json()["results"][0]["id"] == body["id"]
    assert staff.delete(f"/card-photos/{body['id']}/").status_code == 204
    assert staff.get(f"/cards/{card['id']}/").json()["photos"] == []


# --- matching, on real faces


def _embedding(api, data: bytes) -> bytes:
    """The embedding of the one face of a photo, as /detect/ makes it."""
    from videos.detections import photo_faces

    _info, faces = photo_faces(data)
    assert len(faces) == 1
    return np.asarray(faces[0].embedding, dtype="<f4").tobytes()


def _event(archive: VideoArchive, embedding: bytes, index: int) -> FaceEvent:
    return FaceEvent.objects.create(
        video_archive=archive, camera_group=archive.camera_group, frame_timestamp=index, frame_index=index,
        frame_coords_left=0, frame_coords_top=0, frame_coords_right=10, frame_coords_bottom=10, quality=0.9,
        confidence=0.9, track_id=index, post_policy="best", thumbnail="x.jpg", fullframe="x.jpg",
        embedding=embedding)


def test_matching_follows_cards_lists_and_camera_groups(staff, face_models, default_group):  # noqa: F811
    messi, lena = photo("messi5.jpg"), other_face()  # "lena": another person, from Megamind.avi
    other_group = CameraGroup.objects.create(name="elsewhere")
    here = VideoArchive.objects.create(camera_group=default_group, name="here")
    there = VideoArchive.objects.create(camera_group=other_group, name="there")
    # Events: the same photos slightly changed (another picture of the same face), in two camera groups.
    messi_small = jpeg(cv2.resize(cv2.imdecode(np.frombuffer(messi, np.uint8), cv2.IMREAD_COLOR), None, fx=0.8, fy=0.8))
    lena_flip = jpeg(cv2.flip(cv2.imdecode(np.frombuffer(lena, np.uint8), cv2.IMREAD_COLOR), 1))
    messi_here = _event(here, _embedding(staff, messi_small), 1)
    lena_here = _event(here, _embedding(staff, lena_flip), 2)
    messi_there = _event(there, _embedding(staff, messi_small), 3)
    assert matching.faces_match_pending() == []  # no cards: nothing matches, nothing stays pending
    assert not FaceEvent.objects.filter(match_pending=True).exists()

    watch_list = make_list(staff, threshold=0.6, camera_groups=[default_group.pk])
    card = make_card(staff, name="messi", watch_lists=[watch_list["id"]])
    assert add_photo(staff, card["id"], messi).status_code == 201
    assert matching.match_faces(card_ids=[card["id"]]) == [messi_here.pk]
    events = {row["id"]: row for row in staff.get("/events/faces/").json()["results"]}
    assert events[messi_here.pk]["matched"] is True and events[messi_here.pk]["matched_card"] == card["id"]
    assert events[messi_here.pk]["matched_lists"] == [watch_list["id"]]
    assert 0.6 <= events[messi_here.pk]["confidence"] <= 1
    for other in (lena_here.pk, messi_there.pk):  # another person; the right person in a group not watched
        assert (events[other]["matched"], events[other]["matched_card"], events[other]["confidence"],
                events[other]["matched_lists"]) == (False, None, None, [])
    assert [row["id"] for row in staff.get("/events/faces/", {"matched": "true"}).json()["results"]] == [
        messi_here.pk]
    assert staff.get("/events/faces/count/", {"matched": "false"}).json() == {"count": 2}
    assert staff.get("/events/faces/count/", {"matched_card": card["id"]}).json() == {"count": 1}
    assert staff.get("/events/faces/count/", {"matched_lists": watch_list["id"]}).json() == {"count": 1}
    assert staff.get("/events/faces/count/", {"confidence_gte": 0.99}).json() == {"count": 0}
    assert_bad_param(staff.get("/events/faces/", {"matched": "perhaps"}), "matched")
    assert_bad_param(staff.get("/events/faces/", {"confidence_gte": 2}), "confidence_gte")

    # The list applies to every camera group once it names none: the other archive's event matches too.
    staff.patch(f"/watch-lists/{watch_list['id']}/", {"camera_groups": []}, format="json")
    assert matching.match_faces(list_ids=[watch_list["id"]]) == [messi_there.pk]
    # A threshold above the similarity removes the matches; lowering it again restores them.
    staff.patch(f"/watch-lists/{watch_list['id']}/", {"threshold": 1}, format="json")
    assert matching.match_faces(list_ids=[watch_list["id"]]) == []
    assert not FaceEvent.objects.filter(matched_card__isnull=False).exists()
    assert not FaceEvent.matched_lists.through.objects.exists()
    staff.patch(f"/watch-lists/{watch_list['id']}/", {"threshold": 0.6}, format="json")
    assert matching.match_faces(list_ids=[watch_list["id"]]) == [messi_here.pk, messi_there.pk]
    # A deactivated card matches nothing; a deleted card's matches go.
    staff.patch(f"/cards/{card['id']}/", {"active": False}, format="json")
    matching.match_faces(card_ids=[card["id"]])
    assert staff.get("/events/faces/count/", {"matched": "true"}).json() == {"count": 0}
    staff.patch(f"/cards/{card['id']}/", {"active": True}, format="json")
    assert len(matching.match_faces(card_ids=[card["id"]])) == 2
    # A second card of lena's: her event matches it, messi's keep theirs.
    lena_card = make_card(staff, name="lena", watch_lists=[watch_list["id"]])
    assert add_photo(staff, lena_card["id"], lena).status_code == 201
    assert matching.match_faces(card_ids=[lena_card["id"]]) == [lena_here.pk]
    assert staff.delete(f"/cards/{card['id']}/").status_code == 204
    matching.match_faces()
    assert dict(FaceEvent.objects.filter(matched_card__isnull=False).values_list("pk", "matched_card_id")) == {
        lena_here.pk: lena_card["id"]}
    # Deleting the list removes every match through it.
    assert staff.delete(f"/watch-lists/{watch_list['id']}/").status_code == 204
    matching.match_faces()
    assert staff.get("/events/faces/count/", {"matched": "true"}).json() == {"count": 0}


def test_a_face_cluster_is_attached_to_a_card(staff):
    card = make_card(staff)
    cluster = FaceCluster.objects.create(event_count=0, centroid=bytes(4 * 512))
    url = f"/clusters/faces/{cluster.pk}/"
    assert staff.get(url).json()["card"] is None
    attached = staff.patch(url, {"card": card["id"]}, format="json")
    assert attached.status_code == 200 and attached.json()["card"] == card["id"]
    assert FaceCluster.objects.get(pk=cluster.pk).card_id == card["id"]
    assert FaceCluster.objects.get(pk=cluster.pk).curated  # a person's: re-processing keeps it and its card
    assert_bad_param(staff.patch(url, {"card": 987654}, format="json"), "card")
    assert_bad_param(staff.patch(url, {"card": str(card["id"])}, format="json"), "card")
    # (read-only fields a client echoes back are ignored; unknown ones are not)
    assert_bad_param(staff.patch(url, {"bogus": 5}, format="json"), "bogus")
    staff.delete(f"/cards/{card['id']}/")
    assert staff.get(url).json()["card"] is None
    viewer = token_client(_user("cluster-viewer", ["view_facecluster"]))
    assert_error(viewer.patch(url, {"card": None}, format="json"), 403, "PERMISSION_DENIED")


def test_the_sweeper_sends_matching_only_while_events_wait(default_group, django_capture_on_commit_callbacks):
    archive = VideoArchive.objects.create(camera_group=default_group, name="waiting")
    with django_capture_on_commit_callbacks() as callbacks:
        assert matching.matching_sweep() is False
    assert callbacks == []
    event = _event(archive, np.ones(512, "<f4").tobytes(), 1)
    with django_capture_on_commit_callbacks() as callbacks:
        assert matching.matching_sweep() is True
    assert len(callbacks) == 1
    assert matching.faces_match_pending() == []  # no card: the event is done, unmatched
    event.refresh_from_db()
    assert (event.match_pending, event.matched_card_id, event.match_confidence) == (False, None, None)
    assert matching.matching_sweep() is False


def test_matching_writes_an_event_matched_webhook_delivery(staff, face_models, default_group):  # noqa: F811
    """A new match is an `event.matched` delivery of the webhooks that want it, written with the match (README
    "Webhooks"); a webhook filtering on another watch list gets none."""
    from videos.models import Webhook, WebhookDelivery

    messi = photo("messi5.jpg")
    archive = VideoArchive.objects.create(camera_group=default_group, name="here")
    event = _event(archive, _embedding(staff, messi), 1)
    watch_list = make_list(staff, threshold=0.6)
    other_list = make_list(staff, name="other list")
    wanted = Webhook.objects.create(url="https://hooks.example.com/a", secret="s" * 16,
                                    event_types=["event.matched"])
    elsewhere = Webhook.objects.create(url="https://hooks.example.com/b", secret="s" * 16,
                                       event_types=["event.matched"], watch_lists=[other_list["id"]])
    card = make_card(staff, name="messi", watch_lists=[watch_list["id"]])
    assert add_photo(staff, card["id"], messi).status_code == 201
    assert matching.match_faces(card_ids=[card["id"]]) == [event.pk]
    [delivery] = WebhookDelivery.objects.filter(event_type="event.matched")
    assert delivery.webhook_id == wanted.pk and not elsewhere.deliveries.exists()
    [item] = [item["data"] if "data" in item else item for item in delivery.events]
    assert (item["event"], item["matched_card"], item["matched_lists"]) == (event.pk, card["id"], [watch_list["id"]])
    assert 0.6 <= item["confidence"] <= 1
    assert matching.match_faces(card_ids=[card["id"]]) == []  # matched already: nothing new to send
    assert WebhookDelivery.objects.filter(event_type="event.matched").count() == 1


def test_a_camera_group_a_watch_list_or_webhook_names_is_not_deleted(admin_api, default_group):
    """A list or webhook naming only that group would name none after the delete, which means every group: its
    matches and deliveries would widen to all cameras. The delete is refused until the group is taken out."""
    from videos.models import Webhook

    group = CameraGroup.objects.create(name="gate")
    watch_list = make_list(admin_api, camera_groups=[group.pk])
    assert_error(admin_api.delete(f"/camera-groups/{group.pk}/"), 409, "CONFLICT")
    admin_api.patch(f"/watch-lists/{watch_list['id']}/", {"camera_groups": [default_group.pk]}, format="json")
    webhook = Webhook.objects.create(url="https://hooks.example.com/a", secret="s" * 16,
                                     event_types=["archive.status"])
    webhook.camera_groups.set([group])
    assert_error(admin_api.delete(f"/camera-groups/{group.pk}/"), 409, "CONFLICT")
    assert list(webhook.camera_groups.all()) == [group]
    webhook.camera_groups.set([default_group])
    assert admin_api.delete(f"/camera-groups/{group.pk}/").status_code == 204


def test_a_merge_keeps_a_merged_clusters_card(admin_api):
    card = make_card(admin_api)
    target = FaceCluster.objects.create(event_count=0, centroid=bytes(4 * 512), curated=True)
    other = FaceCluster.objects.create(event_count=0, centroid=bytes(4 * 512), card_id=card["id"])
    answer = admin_api.post(f"/clusters/faces/{target.pk}/merge/", {"ids": [other.pk]}, format="json")
    assert answer.status_code == 200 and answer.json()[0]["success"] is True, answer.content
    assert admin_api.get(f"/clusters/faces/{target.pk}/").json()["card"] == card["id"]
