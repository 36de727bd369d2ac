"""Texts in the request's language: Russian on `Accept-Language: ru`, English otherwise."""

from __future__ import annotations

import re

import pytest
from django.utils import translation

from tests.conftest import token_client, upload
from tests.errors import assert_error

WAITING_RU = "Отсутствует задача в видео менеджере. Дождитесь синхронизации."
WAITING_EN = "No job in the video manager. Wait for synchronization."
DISABLED_RU = "Обработка видео не запущена"
DISABLED_EN = "Video processing is not started"
CYRILLIC = re.compile("[а-яА-ЯёЁ]")


def error(response, status: int, code: str, param: str) -> str:
    """The desc of an error response (the envelope checked on the way)."""
    return assert_error(response, status, code, param)["desc"]


@pytest.fixture
def ru(operator):
    return token_client(operator, "ru")


@pytest.fixture
def en(operator):
    return token_client(operator, "en")


def create(client, group, **extra):
    response = client.post("/videos/", {"camera_group": group.pk, "name": "x", **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()



# --- code_desc


@pytest.mark.parametrize(
    ("language", "expected"),
    [("ru", WAITING_RU), ("ru-RU", WAITING_RU), ("ru-RU,ru;q=0.9,en;q=0.8", WAITING_RU), ("en", WAITING_EN),
     ("en-US", WAITING_EN), (None, WAITING_EN), ("de", WAITING_EN), ("fr,de;q=0.5", WAITING_EN)],
)
def test_code_desc_of_a_new_archive(operator, default_group, language, expected):
    client = token_client(operator, language)

    body = create(client, default_group)

    assert body["health_status"]["code_desc"] == expected
    assert client.get(f"/videos/{body['id']}/").json()["health_status"]["code_desc"] == expected
    assert client.get("/videos/").json()["results"][0]["health_status"]["code_desc"] == expected


def test_code_desc_of_an_archive_with_an_uploaded_file(operator, default_group, video_file):
    ru, en, plain = token_client(operator, "ru"), token_client(operator, "en"), token_client(operator)
    archive_id = create(ru, default_group)["id"]
    assert upload(ru, archive_id, video_file).status_code == 201

    assert ru.get(f"/videos/{archive_id}/").json()["health_status"]["code_desc"] == DISABLED_RU
    assert en.get(f"/videos/{archive_id}/").json()["health_status"]["code_desc"] == DISABLED_EN
    assert plain.get(f"/videos/{archive_id}/").json()["health_status"]["code_desc"] == DISABLED_EN


def test_language_is_per_request(operator, default_group):
    ru, en = token_client(operator, "ru"), token_client(operator, "en")
    archive_id = create(ru, default_group)["id"]

    for _ in range(2):
        assert ru.get(f"/videos/{archive_id}/").json()["health_status"]["code_desc"] == WAITING_RU
        assert en.get(f"/videos/{archive_id}/").json()["health_status"]["code_desc"] == WAITING_EN


def test_status_and_code_are_not_translated(ru, default_group):
    health = create(ru, default_group)["health_status"]

    assert (health["status"], health["code"]) == ("WAITING_FOR_SYNC", "red")


# --- BAD_PARAM texts


@pytest.mark.parametrize(
    ("data", "param", "ru_desc", "en_desc"),
    [
        ({"name": "x", "bogus": 1}, "bogus", "Неизвестное поле.", "Unknown field."),
        ({"name": True}, "name", "Должно быть строкой.", "Must be a string."),
        ({"name": "x", "url": "ftp://example.com/a.mp4"}, "url",
         "Допустимы только URL http и https с указанием хоста.", "Only http and https URLs with a host are allowed."),
        ({"name": "x", "url": "http://127.0.0.1/a.mp4"}, "url", "Частные, локальные и link-local адреса запрещены.",
         "Private, loopback and link-local hosts are not allowed."),
        ({"name": "x", "stream_settings": {"play_speed": 0}}, "stream_settings.play_speed",
         "Должно быть -1 (как можно быстрее) или больше 0.", "Must be -1 (as fast as possible) or greater than 0."),
        ({"name": "x", "stream_settings": {"detectors": {"face": {"roi": "a"}}}}, "stream_settings.detectors.face.roi",
         "Должно быть пустым или иметь вид WxH+X+Y, например 640x480+10+20.",
         "Must be empty or of the form WxH+X+Y, e.g. 640x480+10+20."),
        ({"name": "x", "stream_settings": {"disable_drops": 1}}, "stream_settings.disable_drops",
         "Должно быть логическим значением (true или false).", "Must be a boolean (true or false)."),
        ({"name": "x", "stream_settings": {"router_timeout_ms": "1"}}, "stream_settings.router_timeout_ms",
         "Должно быть целым числом.", "Must be an integer."),
        ({"name": "x", "stream_settings": {"imotion_threshold": "1"}}, "stream_settings.imotion_threshold",
         "Должно быть числом.", "Must be a number."),
        ({"name": "x", "stream_settings": []}, "stream_settings", "Должно быть объектом.", "Must be an object."),
        ({"name": "x", "stream_settings": {"detectors": {"body": {"filter_min_size": 9000}}}},
         "stream_settings.detectors.body.filter_min_size",
         "Не должно превышать filter_max_size.", "Must not exceed filter_max_size."),
    ],
)
def test_our_validation_messages(operator, default_group, data, param, ru_desc, en_desc):
    data = {"camera_group": default_group.pk, **data}

    ru_response = token_client(operator, "ru").post("/videos/", data, format="json")
    en_response = token_client(operator).post("/videos/", data, format="json")

    assert error(ru_response, 400, "BAD_PARAM", param) == ru_desc
    assert error(en_response, 400, "BAD_PARAM", param) == en_desc


def test_formatted_messages_in_russian(ru, default_group):
    response = ru.post(
        "/videos/",
        {"camera_group": default_group.pk, "name": "x", "stream_settings": {"ffmpeg_format": "concat"}},
        format="json",
    )
    assert error(response, 400, "BAD_PARAM", "stream_settings.ffmpeg_format").startswith("Формат 'concat' запрещён")

    response = ru.post(
        "/videos/",
        {"camera_group": default_group.pk, "name": "x", "stream_settings": {"video_transform": "x"}},
        format="json",
    )
    assert error(response, 400, "BAD_PARAM", "stream_settings.video_transform").startswith("Должно быть одним из:")


def test_camera_of_another_group_in_russian(ru, default_group):
    group = ru.post("/camera-groups/", {"name": "other"}, format="json").json()
    camera = ru.post("/cameras/", {"camera_group": group["id"], "name": "cam"}, format="json").json()

    response = ru.post("/videos/", {"camera_group": default_group.pk, "name": "x", "camera": camera["id"]},
                       format="json")

    assert error(response, 400, "BAD_PARAM", "camera") == "Камера принадлежит другой группе камер."


def in_russian(message: str, **params) -> str:
    """DRF's own translation of one of its messages (its wording differs between DRF releases)."""
    with translation.override("ru"):
        text = str(translation.gettext(message))
    return text.format(**params)


@pytest.mark.parametrize(
    ("data", "param", "en_desc", "params"),
    [
        ({"name": "x"}, "camera_group", "This field is required.", {}),
        ({"camera_group": 1}, "name", "This field is required.", {}),
        ({"camera_group": 1, "name": ""}, "name", "This field may not be blank.", {}),
        ({"camera_group": 1, "name": "x" * 257}, "name", "Ensure this field has no more than {max_length} characters.",
         {"max_length": 256}),
        ({"camera_group": 999999, "name": "x"}, "camera_group", 'Invalid pk "{pk_value}" - object does not exist.',
         {"pk_value": 999999}),
        ({"camera_group": 1, "name": "x", "stream_settings": None}, "stream_settings", "This field may not be null.",
         {}),
    ],
)
def test_drf_builtin_messages(operator, default_group, data, param, en_desc, params):
    ru_response = token_client(operator, "ru").post("/videos/", data, format="json")
    en_response = token_client(operator).post("/videos/", data, format="json")

    ru_desc = error(ru_response, 400, "BAD_PARAM", param)
    assert ru_desc == in_russian(en_desc, **params)
    assert CYRILLIC.search(ru_desc), ru_desc
    assert error(en_response, 400, "BAD_PARAM", param) == en_desc.format(**params)


def test_drf_required_message_in_russian(ru, default_group):
    desc = error(ru.post("/videos/", {"name": "x"}, format="json"), 400, "BAD_PARAM", "camera_group")

    assert desc in ("Обязательное поле.", "Это поле обязательно.")


def test_query_parameter_messages(ru, en, default_group):
    assert error(ru.get("/videos/?bogus=1"), 400, "BAD_PARAM", "bogus") == "Неизвестный параметр запроса."
    assert error(en.get("/videos/?bogus=1"), 400, "BAD_PARAM", "bogus") == "Unknown query parameter."
    assert error(ru.get("/videos/?page=%%%"), 400, "BAD_PARAM", "page") == "Неверный курсор страницы."


# --- 404 and other errors


@pytest.mark.parametrize("path", ["/nope/", "/videos/abc/", "/videos/1/bogus/", "/camera-groups/x/"])
def test_unknown_route_is_not_found_in_russian(ru, en, path):
    assert error(ru.get(path), 404, "NOT_FOUND", "") == "Не найдено."
    assert error(en.get(path), 404, "NOT_FOUND", "") == "Not found."


def test_unknown_route_without_a_token_is_not_found_in_russian(anon_api):
    response = anon_api.get("/nope/", HTTP_ACCEPT_LANGUAGE="ru")

    assert error(response, 404, "NOT_FOUND", "") == "Не найдено."
    assert response["Content-Type"].startswith("application/json")


def test_unknown_archive_is_not_found_in_russian(ru, en, default_group):
    assert error(ru.get("/videos/999999/"), 404, "NOT_FOUND", "") == "Не найдено."
    assert error(en.get("/videos/999999/"), 404, "NOT_FOUND", "") == "Not found."


def test_service_errors_in_russian(ru, default_group):
    archive_id = create(ru, default_group)["id"]

    desc = error(ru.post(f"/videos/{archive_id}/process/"), 409, "CONFLICT", "")

    assert desc == "У видеоархива нет источника: сначала загрузите файл или укажите url."


def test_auth_errors_in_russian(anon_api, viewer, default_group):
    response = anon_api.get("/videos/", HTTP_ACCEPT_LANGUAGE="ru")
    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHORIZED"
    assert response.json()["desc"] == "Учетные данные не были предоставлены."

    response = anon_api.get("/videos/", HTTP_ACCEPT_LANGUAGE="ru", HTTP_AUTHORIZATION="Token nope")
    assert error(response, 401, "UNAUTHORIZED", "") == "Недействительный токен."

    response = token_client(viewer, "ru").post("/videos/", {"camera_group": 1, "name": "x"}, format="json")
    assert error(response, 403, "PERMISSION_DENIED", "") == "У вас нет прав для выполнения этого действия."


def test_search_messages_in_russian(db):
    from tests.conftest import _user

    reader = _user("reader", ["view_faceevent"])
    ru_client, en_client = token_client(reader, "ru"), token_client(reader, "en")
    threshold_only = {"threshold": "0.5"}
    assert error(ru_client.get("/events/faces/", threshold_only), 400, "BAD_PARAM", "threshold") == (
        "Параметр threshold действует только вместе с looks_like."
    )
    assert error(en_client.get("/events/faces/", threshold_only), 400, "BAD_PARAM", "threshold") == (
        "threshold needs looks_like."
    )
    desc = error(ru_client.post("/detect/", data=b"GIF89a", content_type="image/png"), 400, "BAD_PARAM", "photo")
    assert CYRILLIC.search(desc), desc
