"""`/webhooks/`: subscriptions with a write-only secret, the url policy of archive sources, strict input in the
error envelope (en/ru), and `/webhooks/{id}/deliveries/` for operators."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from tests.conftest import _user, token_client
from tests.errors import assert_bad_param, assert_error
from videos.models import JobState, VideoArchive, Webhook
from videos.webhooks import notify_archive_status

SECRET = "0123456789abcdef-secret"
WEBHOOK_PERMS = [f"{action}_webhook" for action in ("view", "add", "change", "delete")]


@pytest.fixture
def hooks_user(db):
    return _user("hooks", WEBHOOK_PERMS)


@pytest.fixture
def hooks(hooks_user):
    return token_client(hooks_user)


def body(**extra) -> dict:
    return {"url": "https://hooks.example.com/ffv", "secret": SECRET, "event_types": ["archive.status"], **extra}


def test_create_read_and_the_secret_is_never_shown(hooks, default_group):
    response = hooks.post("/webhooks/", body(name="ops", camera_groups=[default_group.pk], watch_lists=[4, 2],
                                             min_confidence=0.7,
                                             event_types=["archive.status", "event.matched"]), format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert response["Location"].endswith(f"/webhooks/{created['id']}/")
    assert "secret" not in created
    assert {key: created[key] for key in ("name", "url", "active", "event_types", "camera_groups", "watch_lists",
                                          "min_confidence")} == {
        "name": "ops", "url": "https://hooks.example.com/ffv", "active": True,
        "event_types": ["archive.status", "event.matched"], "camera_groups": [default_group.pk],
        "watch_lists": [4, 2], "min_confidence": 0.7}
    got = hooks.get(f"/webhooks/{created['id']}/").json()
    assert got == created
    assert Webhook.objects.get().secret == SECRET
    listed = hooks.get("/webhooks/").json()["results"]
    assert [item["id"] for item in listed] == [created["id"]] and "secret" not in listed[0]
    assert hooks.get("/webhooks/count/").json() == {"count": 1}


def test_put_of_what_get_returned_keeps_the_secret_and_patch_can_change_it(hooks):
    created = hooks.post("/webhooks/", body(), format="json").json()
    echoed = hooks.get(f"/webhooks/{created['id']}/").json()
    echoed["active"] = False
    response = hooks.put(f"/webhooks/{created['id']}/", echoed, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["active"] is False
    assert Webhook.objects.get().secret == SECRET
    response = hooks.patch(f"/webhooks/{created['id']}/", {"secret": "a-brand-new-secret-1"}, format="json")
    assert response.status_code == 200, response.content
    assert Webhook.objects.get().secret == "a-brand-new-secret-1"


@pytest.mark.parametrize(("url", "param"), [
    ("http://10.0.0.5/hook", "url"),  # private
    ("http://127.0.0.1:8080/hook", "url"),  # loopback
    ("http://[::1]/hook", "url"),
    ("http://169.254.169.254/latest/meta-data/", "url"),  # link-local (cloud metadata)
    ("http://localhost/hook", "url"),
    ("http://0x7f000001/hook", "url"),  # 127.0.0.1 in a legacy form
    ("ftp://hooks.example.com/x", "url"),  # scheme
    ("file:///etc/passwd", "url"),
    ("javascript:alert(1)", "url"),
    ("https://hooks.example.com/a b", "url"),  # not URI characters
    ("", "url"),
])
def test_a_url_the_policy_refuses_is_bad_param(hooks, url, param):
    assert_bad_param(hooks.post("/webhooks/", body(url=url), format="json"), param)
    assert not Webhook.objects.exists()


def test_loopback_only_through_the_operators_setting(hooks, settings):
    settings.FFV_WEBHOOK_ALLOWED_NETWORKS = [ip_network("127.0.0.0/8")]
    assert hooks.post("/webhooks/", body(url="http://127.0.0.1:8080/hook"), format="json").status_code == 201
    # Other private ranges stay closed.
    assert_bad_param(hooks.post("/webhooks/", body(url="http://10.0.0.5/hook"), format="json"), "url")


def test_the_allowed_hosts_of_sources_apply(hooks, settings):
    settings.FFV_URL_ALLOWED_HOSTS = ["hooks.example.com"]
    assert hooks.post("/webhooks/", body(), format="json").status_code == 201
    assert_bad_param(hooks.post("/webhooks/", body(url="https://elsewhere.example.org/"), format="json"), "url")


@pytest.mark.parametrize(("change", "param"), [
    ({"event_types": ["archive.deleted"]}, "event_types.0"),
    ({"event_types": ["archive.status", 5]}, "event_types.1"),
    ({"event_types": []}, "event_types"),
    ({"event_types": "archive.status"}, "event_types"),
    ({"event_types": ["archive.status", "archive.status"]}, "event_types"),
    ({"secret": "short"}, "secret"),
    ({"secret": 12345678901234567890}, "secret"),
    ({"active": "true"}, "active"),
    ({"camera_groups": [987654]}, "camera_groups.0"),
    ({"camera_groups": ["1"]}, "camera_groups.0"),
    ({"watch_lists": [0]}, "watch_lists.0"),
    ({"watch_lists": {"a": 1}}, "watch_lists"),
    ({"min_confidence": 1.5}, "min_confidence"),
    ({"min_confidence": "0.5"}, "min_confidence"),
    ({"url": None}, "url"),
    ({"colour": "red"}, "colour"),
])
def test_bad_input_is_bad_param_naming_the_field(hooks, default_group, change, param):
    assert_bad_param(hooks.post("/webhooks/", body(**change), format="json"), param)
    assert not Webhook.objects.exists()


def test_the_secret_is_required_on_create(hooks):
    payload = body()
    del payload["secret"]
    assert_bad_param(hooks.post("/webhooks/", payload, format="json"), "secret")


def test_errors_in_russian(hooks_user):
    ru = token_client(hooks_user, "ru")
    desc = assert_bad_param(ru.post("/webhooks/", body(url="http://10.1.2.3/"), format="json"), "url")["desc"]
    assert desc == "Частные, локальные и link-local адреса запрещены."
    desc = assert_bad_param(ru.post("/webhooks/", body(event_types=["nope"]), format="json"),
                            "event_types.0")["desc"]
    assert desc == "'nope' не входит в число допустимых значений."
    assert_error(ru.get("/webhooks/987654/deliveries/"), 404, "NOT_FOUND")
    assert ru.get("/webhooks/987654/deliveries/").json()["desc"] == "Вебхук 987654 не найден."


def test_deliveries_are_listed_newest_first_and_filtered(hooks, default_group):
    webhook = hooks.post("/webhooks/", body(), format="json").json()
    archive = VideoArchive.objects.create(camera_group=default_group, name="clip")
    notify_archive_status(archive.pk, JobState.QUEUED)
    notify_archive_status(archive.pk, JobState.COMPLETED)
    response = hooks.get(f"/webhooks/{webhook['id']}/deliveries/")
    assert response.status_code == 200, response.content
    page = response.json()
    assert page["next_page"] is None and page["prev_page"] is None
    states = [item["events"][0]["data"]["job_state"] for item in page["results"]]
    assert states == ["completed", "queued"]
    first = page["results"][1]
    assert (first["status"], first["attempts"], first["last_error"], first["event_count"],
            first["ordering_key"]) == ("pending", 0, "", 1, f"archive:{archive.pk}")
    assert hooks.get(f"/webhooks/{webhook['id']}/deliveries/?status=delivered").json()["results"] == []
    limited = hooks.get(f"/webhooks/{webhook['id']}/deliveries/?limit=1").json()
    assert len(limited["results"]) == 1 and limited["next_page"]
    assert_bad_param(hooks.get(f"/webhooks/{webhook['id']}/deliveries/?status=lost"), "status")
    assert_bad_param(hooks.get(f"/webhooks/{webhook['id']}/deliveries/?colour=red"), "colour")
    assert_bad_param(hooks.get(f"/webhooks/{webhook['id']}/deliveries/?limit=100000"), "limit")


def test_filters_of_the_list(hooks):
    first = hooks.post("/webhooks/", body(), format="json").json()
    second = hooks.post("/webhooks/", body(active=False), format="json").json()
    assert [item["id"] for item in hooks.get("/webhooks/?active=false").json()["results"]] == [second["id"]]
    assert [item["id"] for item in hooks.get(f"/webhooks/?id_in={first['id']}").json()["results"]] == [first["id"]]
    assert [item["id"] for item in hooks.get("/webhooks/?ordering=id").json()["results"]] == [first["id"],
                                                                                          second["id"]]
    assert_bad_param(hooks.get("/webhooks/?active=maybe"), "active")
    assert_bad_param(hooks.get("/webhooks/?url=x"), "url")


def test_deleting_a_webhook_deletes_its_deliveries(hooks, default_group):
    webhook = hooks.post("/webhooks/", body(), format="json").json()
    archive = VideoArchive.objects.create(camera_group=default_group, name="clip")
    notify_archive_status(archive.pk, JobState.QUEUED)
    assert hooks.delete(f"/webhooks/{webhook['id']}/").status_code == 204
    assert not Webhook.objects.exists()
    from videos.models import WebhookDelivery

    assert not WebhookDelivery.objects.exists()


def test_a_viewer_reads_but_cannot_write(db):
    viewer = token_client(_user("hooks-viewer", ["view_webhook"]))
    assert viewer.get("/webhooks/").status_code == 200
    assert_error(viewer.post("/webhooks/", body(), format="json"), 403, "PERMISSION_DENIED")
    assert not Webhook.objects.exists()


def test_the_admin_shows_deliveries_keeps_the_secret_and_applies_the_url_policy(client, default_group):
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_superuser("admin", password="pw", email=""))
    form = {"name": "ops", "url": "http://10.0.0.5/hook", "secret": SECRET, "active": "on",
            "event_types": '["archive.status"]', "watch_lists": "[]", "min_confidence": "",
            "deliveries-TOTAL_FORMS": "0", "deliveries-INITIAL_FORMS": "0"}
    response = client.post("/admin/videos/webhook/add/", form)
    assert response.status_code == 200 and not Webhook.objects.exists()
    assert "Private, loopback and link-local hosts are not allowed." in response.content.decode()
    response = client.post("/admin/videos/webhook/add/", {**form, "url": "https://hooks.example.com/ffv"})
    assert response.status_code == 302, response.content.decode()[:2000]
    webhook = Webhook.objects.get()
    assert webhook.secret == SECRET
    archive = VideoArchive.objects.create(camera_group=default_group, name="clip")
    notify_archive_status(archive.pk, JobState.COMPLETED)
    page = client.get(f"/admin/videos/webhook/{webhook.pk}/change/").content.decode()
    delivery = webhook.deliveries.get()
    assert str(delivery.uuid) in page and "archive.status" in page
    assert SECRET not in page
    response = client.post(f"/admin/videos/webhook/{webhook.pk}/change/",
                           {**form, "url": "https://hooks.example.com/ffv", "secret": "", "name": "renamed",
                            "deliveries-TOTAL_FORMS": "1", "deliveries-INITIAL_FORMS": "1",
                            "deliveries-0-id": str(delivery.pk), "deliveries-0-webhook": str(webhook.pk)})
    assert response.status_code == 302, response.content.decode()[:2000]
    webhook.refresh_from_db()
    assert (webhook.name, webhook.secret) == ("renamed", SECRET)


def test_the_schema_documents_webhooks_without_the_secret_in_responses(hooks):
    import json

    schema = json.loads(hooks.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)
    for path, method in (("/webhooks/", "get"), ("/webhooks/", "post"), ("/webhooks/{id}/", "put"),
                         ("/webhooks/{id}/", "patch"), ("/webhooks/{id}/", "delete"),
                         ("/webhooks/{id}/deliveries/", "get"), ("/webhooks/count/", "get")):
        assert method in schema["paths"][path], (path, method)
    response = schema["components"]["schemas"]["Webhook"]["properties"]
    assert "secret" not in response and "url" in response
    assert "secret" in schema["components"]["schemas"]["WebhookRequest"]["properties"]
    params = {param["name"] for param in schema["paths"]["/webhooks/{id}/deliveries/"]["get"]["parameters"]}
    assert {"status", "event_type", "ordering", "limit", "page"} <= params
    items = schema["components"]["schemas"]["WebhookRequest"]["properties"]["event_types"]["items"]
    enum = schema["components"]["schemas"][items["$ref"].rsplit("/", 1)[1]]["enum"]
    assert sorted(enum) == ["archive.status", "cluster.created", "event.matched"]


def test_a_webhooks_admin_page_shows_its_newest_deliveries_only(client, default_group):
    """A busy webhook has thousands of deliveries: its page shows the newest WEBHOOK_PAGE_DELIVERIES."""
    from django.contrib.auth.models import User

    from videos.admin import WEBHOOK_PAGE_DELIVERIES

    client.force_login(User.objects.create_superuser("admin", password="pw", email=""))
    webhook = Webhook.objects.create(url="https://hooks.example.com/ffv", secret=SECRET,
                                     event_types=["archive.status"])
    archive = VideoArchive.objects.create(camera_group=default_group, name="clip")
    for _ in range(WEBHOOK_PAGE_DELIVERIES + 10):
        notify_archive_status(archive.pk, JobState.COMPLETED)
    deliveries = list(webhook.deliveries.order_by("-id"))
    assert len(deliveries) == WEBHOOK_PAGE_DELIVERIES + 10
    page = client.get(f"/admin/videos/webhook/{webhook.pk}/change/").content.decode()
    assert str(deliveries[0].uuid) in page and str(deliveries[WEBHOOK_PAGE_DELIVERIES - 1].uuid) in page
    assert str(deliveries[WEBHOOK_PAGE_DELIVERIES].uuid) not in page
