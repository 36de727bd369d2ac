"""`/camera-groups/` and `/cameras/`: CRUD, validation, pagination shape, deletion rules, count."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from tests.conftest import token_client
from tests.errors import assert_error
from videos.models import Camera, CameraGroup, VideoArchive

GROUP_FIELDS = ["id", "name", "comment", "created_date", "modified_date"]
CAMERA_FIELDS = ["id", "camera_group", "name", "comment", "created_date", "modified_date"]



def new_group(api, name: str = "Group", **extra) -> dict:
    response = api.post("/camera-groups/", {"name": name, **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def new_camera(api, group_id: int, name: str = "Camera", **extra) -> dict:
    response = api.post("/cameras/", {"camera_group": group_id, "name": name, **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def is_iso(value: str) -> bool:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


# --- camera groups


def test_create_camera_group(api, db):
    response = api.post("/camera-groups/", {"name": "Entrance", "comment": "north side"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert list(body) == GROUP_FIELDS
    assert type(body["id"]) is int
    assert (body["name"], body["comment"]) == ("Entrance", "north side")
    assert is_iso(body["created_date"]) and is_iso(body["modified_date"])
    assert CameraGroup.objects.get(pk=body["id"]).name == "Entrance"


def test_create_camera_group_comment_defaults_to_empty(api, db):
    assert new_group(api)["comment"] == ""


@pytest.mark.parametrize(
    ("data", "param"),
    [({}, "name"), ({"name": ""}, "name"), ({"name": None}, "name"), ({"name": 1}, "name"),
     ({"name": "x" * 257}, "name"), ({"name": "x", "comment": None}, "comment"),
     ({"name": "x", "comment": 5}, "comment"), ({"name": "x", "bogus": 1}, "bogus")],
)
def test_create_camera_group_validation(api, db, data, param):
    assert_error(api.post("/camera-groups/", data, format="json"), 400, "BAD_PARAM", param)


def test_camera_group_names_are_unique(api, db):
    new_group(api, "Same")

    assert_error(api.post("/camera-groups/", {"name": "Same"}, format="json"), 400, "BAD_PARAM", "name")
    assert CameraGroup.objects.filter(name="Same").count() == 1
    # The API still works after the refusal (no broken transaction).
    assert api.get("/camera-groups/count/?name_contains=Same").json() == {"count": 1}


def test_renaming_a_group_to_a_taken_name_is_bad_param(api, db):
    new_group(api, "Taken")
    group = new_group(api, "Mine")

    response = api.patch(f"/camera-groups/{group['id']}/", {"name": "Taken"}, format="json")

    assert_error(response, 400, "BAD_PARAM", "name")
    assert api.get(f"/camera-groups/{group['id']}/").json()["name"] == "Mine"


def test_renaming_a_group_to_its_own_name_is_fine(api, db):
    group = new_group(api, "Same")

    response = api.put(f"/camera-groups/{group['id']}/", {"name": "Same", "comment": "c"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["comment"] == "c"


def test_get_update_and_delete_camera_group(api, db):
    group = new_group(api, "Old", comment="c")
    url = f"/camera-groups/{group['id']}/"

    assert api.get(url).json() == group

    response = api.patch(url, {"name": "New"}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["name"], response.json()["comment"]) == ("New", "c")

    response = api.put(url, {"name": "Newer"}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["name"], response.json()["comment"]) == ("Newer", "")
    assert_error(api.put(url, {"comment": "x"}, format="json"), 400, "BAD_PARAM", "name")

    response = api.delete(url)
    assert response.status_code == 204
    assert not CameraGroup.objects.filter(pk=group["id"]).exists()
    assert_error(api.get(url), 404, "NOT_FOUND", "")
    assert_error(api.delete(url), 404, "NOT_FOUND", "")


def test_camera_group_read_only_fields_are_ignored(api, db):
    group = new_group(api)

    body = api.get(f"/camera-groups/{group['id']}/").json()
    response = api.put(f"/camera-groups/{group['id']}/", {**body, "id": 999, "name": "Renamed"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["id"] == group["id"]
    assert response.json()["created_date"] == group["created_date"]


def test_unknown_camera_group_is_not_found(api, db):
    assert_error(api.get("/camera-groups/999999/"), 404, "NOT_FOUND", "")
    assert_error(api.patch("/camera-groups/999999/", {"name": "x"}, format="json"), 404, "NOT_FOUND", "")


def test_list_camera_groups_with_pagination(api, db):
    # The data migration's default group, if the database has it, is listed as well.
    ids = [*CameraGroup.objects.values_list("id", flat=True)]
    ids += [new_group(api, f"g{index}")["id"] for index in range(5)]

    response = api.get("/camera-groups/")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["next_page", "prev_page", "results"]
    assert (body["next_page"], body["prev_page"]) == (None, None)
    assert [item["id"] for item in body["results"]] == sorted(ids, reverse=True)
    assert all(list(item) == GROUP_FIELDS for item in body["results"])

    first = api.get("/camera-groups/?limit=2").json()
    assert [item["id"] for item in first["results"]] == sorted(ids, reverse=True)[:2]
    assert first["prev_page"] is None
    assert first["next_page"].startswith("http://testserver/camera-groups/?")
    assert "page=" in first["next_page"]

    seen = [item["id"] for item in first["results"]]
    page = first
    while page["next_page"]:
        page = api.get(page["next_page"]).json()
        assert page["prev_page"] is not None
        seen += [item["id"] for item in page["results"]]
    assert seen == sorted(ids, reverse=True)


def test_list_camera_groups_ordering_and_filters(api, db):
    CameraGroup.objects.all().delete()
    for name in ("b", "a", "c"):
        new_group(api, name)

    names = [item["name"] for item in api.get("/camera-groups/?ordering=name").json()["results"]]
    assert names == ["a", "b", "c"]
    names = [item["name"] for item in api.get("/camera-groups/?ordering=-name").json()["results"]]
    assert names == ["c", "b", "a"]
    assert [item["name"] for item in api.get("/camera-groups/?name_contains=B").json()["results"]] == ["b"]
    assert_error(api.get("/camera-groups/?ordering=comment"), 400, "BAD_PARAM", "ordering")
    assert_error(api.get("/camera-groups/?bogus=1"), 400, "BAD_PARAM", "bogus")
    assert_error(api.get("/camera-groups/?limit=0"), 400, "BAD_PARAM", "limit")


def test_camera_group_count(api, db):
    CameraGroup.objects.all().delete()
    assert api.get("/camera-groups/count/").json() == {"count": 0}
    for index in range(3):
        new_group(api, f"g{index}")

    response = api.get("/camera-groups/count/")

    assert response.status_code == 200
    assert response.json() == {"count": 3}
    assert api.get("/camera-groups/count/?name_contains=g1").json() == {"count": 1}
    assert_error(api.get("/camera-groups/count/?bogus=1"), 400, "BAD_PARAM", "bogus")


def test_deleting_a_group_with_archives_is_a_conflict(api, db):
    group = new_group(api)
    archive = api.post("/videos/", {"camera_group": group["id"], "name": "a"}, format="json").json()

    body = assert_error(api.delete(f"/camera-groups/{group['id']}/"), 409, "CONFLICT", "")

    assert body["desc"]
    assert CameraGroup.objects.filter(pk=group["id"]).exists()
    assert api.get(f"/videos/{archive['id']}/").status_code == 200
    # Once the archive is gone the group can go.
    assert api.delete(f"/videos/{archive['id']}/").status_code == 204
    assert api.delete(f"/camera-groups/{group['id']}/").status_code == 204


def test_deleting_a_group_with_cameras_is_a_conflict(api, db):
    group = new_group(api)
    camera = new_camera(api, group["id"])

    assert_error(api.delete(f"/camera-groups/{group['id']}/"), 409, "CONFLICT", "")

    assert Camera.objects.filter(pk=camera["id"]).exists()
    assert api.delete(f"/cameras/{camera['id']}/").status_code == 204
    assert api.delete(f"/camera-groups/{group['id']}/").status_code == 204


def test_conflict_in_russian(operator, db):
    api = token_client(operator, "ru")
    group = new_group(api)
    api.post("/videos/", {"camera_group": group["id"], "name": "a"}, format="json")

    body = assert_error(api.delete(f"/camera-groups/{group['id']}/"), 409, "CONFLICT", "")

    assert body["desc"] == "Объект используется другими объектами и не может быть удалён."


def test_duplicate_name_in_russian(operator, db):
    api = token_client(operator, "ru")
    new_group(api, "Same")

    body = assert_error(api.post("/camera-groups/", {"name": "Same"}, format="json"), 400, "BAD_PARAM", "name")

    assert re.search("[а-яА-Я]", body["desc"]), body


# --- cameras


def test_create_camera(api, default_group):
    response = api.post("/cameras/", {"camera_group": default_group.pk, "name": "Door"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert list(body) == CAMERA_FIELDS
    assert (body["camera_group"], body["name"], body["comment"]) == (default_group.pk, "Door", "")
    assert is_iso(body["created_date"]) and is_iso(body["modified_date"])


@pytest.mark.parametrize(
    ("data", "param"),
    [({"name": "x"}, "camera_group"), ({"camera_group": 1}, "name"), ({"camera_group": 1, "name": ""}, "name"),
     ({"camera_group": None, "name": "x"}, "camera_group"), ({"camera_group": "1", "name": "x"}, "camera_group"),
     ({"camera_group": 999999, "name": "x"}, "camera_group"), ({"camera_group": 1, "name": "x" * 257}, "name"),
     ({"camera_group": 1, "name": "x", "bogus": 1}, "bogus"), ({"camera_group": 1, "name": True}, "name")],
)
def test_create_camera_validation(api, default_group, data, param):
    assert_error(api.post("/cameras/", data, format="json"), 400, "BAD_PARAM", param)
    assert not Camera.objects.exists()


def test_get_update_and_delete_camera(api, default_group):
    other = new_group(api, "Other")
    camera = new_camera(api, default_group.pk, "Old")
    url = f"/cameras/{camera['id']}/"

    assert api.get(url).json() == camera
    response = api.patch(url, {"name": "New", "comment": "c"}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["name"], response.json()["comment"]) == ("New", "c")
    response = api.put(url, {"camera_group": other["id"], "name": "Moved"}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["camera_group"], response.json()["name"], response.json()["comment"]) == (
        other["id"], "Moved", ""
    )
    assert_error(api.put(url, {"name": "x"}, format="json"), 400, "BAD_PARAM", "camera_group")

    assert api.delete(url).status_code == 204
    assert_error(api.get(url), 404, "NOT_FOUND", "")
    assert_error(api.delete(url), 404, "NOT_FOUND", "")


def test_deleting_a_camera_keeps_its_archives(api, default_group):
    camera = new_camera(api, default_group.pk)
    archive = api.post(
        "/videos/", {"camera_group": default_group.pk, "name": "a", "camera": camera["id"]}, format="json"
    ).json()
    assert archive["camera"] == camera["id"]

    assert api.delete(f"/cameras/{camera['id']}/").status_code == 204

    assert api.get(f"/videos/{archive['id']}/").json()["camera"] is None
    assert VideoArchive.objects.filter(pk=archive["id"]).exists()


def test_list_cameras_with_pagination_and_filters(api, default_group):
    other = new_group(api, "Other")
    ids = [new_camera(api, default_group.pk, f"c{index}")["id"] for index in range(3)]
    foreign = new_camera(api, other["id"], "f")["id"]

    body = api.get("/cameras/").json()
    assert list(body) == ["next_page", "prev_page", "results"]
    assert [item["id"] for item in body["results"]] == [foreign, *sorted(ids, reverse=True)]
    assert all(list(item) == CAMERA_FIELDS for item in body["results"])

    body = api.get(f"/cameras/?camera_groups={default_group.pk}&limit=2").json()
    assert [item["id"] for item in body["results"]] == sorted(ids, reverse=True)[:2]
    assert body["next_page"] is not None
    rest = api.get(body["next_page"]).json()
    assert [item["id"] for item in rest["results"]] == sorted(ids, reverse=True)[2:]
    assert rest["next_page"] is None


def test_camera_count(api, default_group):
    other = new_group(api, "Other")
    for index in range(2):
        new_camera(api, default_group.pk, f"c{index}")
    new_camera(api, other["id"], "f")

    assert api.get("/cameras/count/").json() == {"count": 3}
    assert api.get(f"/cameras/count/?camera_groups={other['id']}").json() == {"count": 1}


# --- permissions


def test_viewer_reads_but_does_not_write(viewer_api, api, default_group):
    camera = new_camera(api, default_group.pk)

    assert viewer_api.get("/camera-groups/").status_code == 200
    assert viewer_api.get(f"/cameras/{camera['id']}/").status_code == 200
    assert_error(viewer_api.post("/camera-groups/", {"name": "x"}, format="json"), 403, "PERMISSION_DENIED", "")
    assert_error(viewer_api.delete(f"/cameras/{camera['id']}/"), 403, "PERMISSION_DENIED", "")


def test_outsider_and_anonymous(outsider_api, anon_api, default_group):
    assert_error(outsider_api.get("/camera-groups/"), 403, "PERMISSION_DENIED", "")
    assert_error(outsider_api.get("/cameras/count/"), 403, "PERMISSION_DENIED", "")
    assert_error(anon_api.get("/camera-groups/"), 401, "UNAUTHORIZED")
    assert_error(anon_api.post("/cameras/", {"camera_group": 1, "name": "x"}, format="json"), 401, "UNAUTHORIZED")
