"""The Django admin staff work in: archives created and uploaded, jobs started and stopped, events and clusters with
their pictures, served only to staff who may see them. (tests/test_admin_browser.py runs the same in Chromium.)"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from tests.api.test_detect import face_models  # noqa: F401 (fixture)
from tests.api.test_events import make_archive, make_cluster, make_event, picture
from videos.models import JobState, VideoArchive

pytestmark = pytest.mark.django_db

ADD = "/admin/videos/videoarchive/add/"
CHANGELIST = "/admin/videos/videoarchive/"


@pytest.fixture
def staff(db) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("staff", password="pw-staff", email=""))
    return client


def staff_with(*codenames: str) -> Client:
    user = User.objects.create_user("limited", password="pw-limited", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="videos", codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def add_archive(client: Client, group, upload=None, headers=None, **fields):
    data = {"camera_group": group.pk, "name": "from the admin", "url": "", "stream_settings": "",
            "camera": "", "case": "", **fields}
    if upload is not None:
        data["upload"] = upload
    return client.post(ADD, data, headers=headers)


def errors_of(response) -> str:
    """The text of the form's error lists on the page."""
    html = response.content.decode()
    return " ".join(re.sub(r"<[^>]+>", " ", block) for block in re.findall(r'<ul class="errorlist.*?</ul>', html, re.S))


# --- creating and uploading


def test_an_archive_is_created_with_its_video_from_the_admin(staff, default_group, video_file):
    upload = SimpleUploadedFile("clip.mp4", video_file.read_bytes(), content_type="video/mp4")
    response = add_archive(staff, default_group, upload)

    assert response.status_code == 302, errors_of(response)
    archive = VideoArchive.objects.get(name="from the admin")
    assert archive.file_size == video_file.stat().st_size
    assert archive.source_len == pytest.approx(2.0, abs=0.1)  # 50 frames at 25 fps
    assert archive.source_file.name.startswith(f"videos/{archive.pk}/source-")
    assert default_storage.open(archive.source_file.name).read() == video_file.read_bytes()
    # Left empty, stream_settings are the API's defaults, complete.
    assert archive.stream_settings["detectors"]["face"] is not None
    page = staff.get(f"{CHANGELIST}{archive.pk}/change/").content.decode()
    assert 'data-status="DISABLED"' in page
    assert f"videos/{archive.pk}/source-" in page and "/media/" not in page


@pytest.mark.parametrize(
    ("fields", "content", "message"),
    [
        ({}, b"this is not a video at all" * 40, "not a supported video"),
        ({}, b"", "The submitted file is empty"),
        ({"url": "http://127.0.0.1/video.mp4"}, None, "Private, loopback and link-local hosts are not allowed"),
        ({"url": "ftp://example.com/video.mp4"}, None, "Only http and https"),
        ({"stream_settings": '{"no_such_setting": 1}'}, None, "no_such_setting"),
        ({"stream_settings": "[1, 2]"}, None, "Must be an object"),
        ({"stream_settings": "{not json"}, None, "Enter a valid JSON"),
        ({"camera_group": "999999"}, None, "Select a valid choice"),
        ({"camera_group": "abc"}, None, "Select a valid choice"),
    ],
)
def test_what_the_api_refuses_the_admin_form_refuses_and_nothing_is_created(
    staff, default_group, fields, content, message
):
    upload = SimpleUploadedFile("video.mp4", content, content_type="video/mp4") if content is not None else None
    response = add_archive(staff, default_group, upload, **fields)

    assert response.status_code == 200
    assert message in errors_of(response)
    assert not VideoArchive.objects.exists()
    assert not default_storage.exists("videos")


def test_a_file_over_the_upload_limit_is_refused(staff, default_group, video_file, settings):
    settings.FFV_MAX_UPLOAD_SIZE = 1000
    upload = SimpleUploadedFile("clip.mp4", video_file.read_bytes(), content_type="video/mp4")
    response = add_archive(staff, default_group, upload)

    assert response.status_code == 200
    assert "larger than the limit of 1000 bytes" in errors_of(response)
    assert not VideoArchive.objects.exists()


def test_a_new_file_replaces_the_source_and_a_busy_archive_offers_no_upload(
    staff, default_group, video_factory, django_capture_on_commit_callbacks
):
    first, second = video_factory("a.mp4", frames=25), video_factory("b.mp4", frames=75)
    assert add_archive(staff, default_group, SimpleUploadedFile("a.mp4", first.read_bytes())).status_code == 302
    archive = VideoArchive.objects.get()
    old_name = archive.source_file.name
    change = f"{CHANGELIST}{archive.pk}/change/"
    data = {"camera_group": default_group.pk, "name": "renamed", "url": "", "stream_settings": "", "camera": "",
            "case": "", "upload": SimpleUploadedFile("b.mp4", second.read_bytes())}
    with django_capture_on_commit_callbacks(execute=True):  # the old file goes once the new one is committed
        response = staff.post(change, data)
    assert response.status_code == 302, errors_of(response)
    archive.refresh_from_db()
    assert archive.name == "renamed"
    assert archive.source_len == pytest.approx(3.0, abs=0.1)
    assert archive.source_file.name != old_name and not default_storage.exists(old_name)

    VideoArchive.objects.filter(pk=archive.pk).update(job_state=JobState.IN_PROGRESS)
    page = staff.get(change).content.decode()
    assert 'name="upload"' not in page and 'name="url"' not in page and 'name="name"' in page


# --- actions


def test_the_actions_queue_and_stop_jobs_and_say_which_cannot(staff, default_group, video_file):
    assert add_archive(staff, default_group, SimpleUploadedFile("a.mp4", video_file.read_bytes())).status_code == 302
    ready = VideoArchive.objects.get()
    empty = make_archive(default_group, "no source yet")

    response = staff.post(CHANGELIST, {"action": "process_selected", "_selected_action": [ready.pk, empty.pk]},
                          follow=True)
    page = response.content.decode()
    assert "Queued for processing: 1 video archive(s)." in page
    assert "No source yet: The video archive has no source" in page
    ready.refresh_from_db()
    empty.refresh_from_db()
    assert (ready.job_state, empty.job_state) == (JobState.QUEUED, JobState.IDLE)
    assert 'data-status="AWAITING"' in page

    again = staff.post(CHANGELIST, {"action": "process_selected", "_selected_action": [ready.pk]}, follow=True)
    assert "already queued or being processed" in again.content.decode()

    stopped = staff.post(CHANGELIST, {"action": "stop_selected", "_selected_action": [ready.pk, empty.pk]},
                         follow=True).content.decode()
    assert "Stopping: 1 video archive(s)." in stopped
    assert "No source yet: it is neither queued nor being processed." in stopped
    ready.refresh_from_db()
    assert ready.job_state == JobState.INTERRUPTED


def test_progress_and_the_message_show_on_the_list_and_the_page(staff, default_group):
    archive = make_archive(default_group, "running")
    VideoArchive.objects.filter(pk=archive.pk).update(
        job_state=JobState.IN_PROGRESS, source_len=100.0, url="http://example.com/v.mp4",
        statistic={"processed_duration": 42.0, "eta_seconds": 17.4},
        job_msg_code="decode_soft_errors", job_msg_params={"count": 3},
    )
    for page in (staff.get(CHANGELIST), staff.get(f"{CHANGELIST}{archive.pk}/change/")):
        html = page.content.decode()
        assert '<progress max="1" value="0.42">' in html
        assert "42% (about 17 s left)" in html
        assert 'data-status="INPROGRESS"' in html


def test_actions_need_the_change_permission(default_group):
    client = staff_with("view_videoarchive")
    archive = make_archive(default_group)
    response = client.post(CHANGELIST, {"action": "process_selected", "_selected_action": [archive.pk]})
    archive.refresh_from_db()
    assert archive.job_state == JobState.IDLE
    assert "process_selected" not in response.content.decode()


# --- pictures


def test_event_and_cluster_pages_show_their_pictures_from_the_staff_view(staff, default_group):
    archive = make_archive(default_group)
    events = [make_event("face", archive, quality=q) for q in (0.9, 0.5, 0.7)]
    cluster = make_cluster("face", events, best=events[0])

    listing = staff.get("/admin/videos/faceevent/").content.decode()
    for event in events:
        assert f'src="/admin/videos/faceevent/{event.pk}/picture/thumbnail/"' in listing
    page = staff.get(f"/admin/videos/faceevent/{events[0].pk}/change/").content.decode()
    assert f'src="/admin/videos/faceevent/{events[0].pk}/picture/fullframe/"' in page
    assert "/media/" not in page

    clusters = staff.get("/admin/videos/facecluster/").content.decode()
    assert f'src="/admin/videos/faceevent/{events[0].pk}/picture/thumbnail/"' in clusters
    cluster_page = staff.get(f"/admin/videos/facecluster/{cluster.pk}/change/").content.decode()
    shown = re.findall(r'src="/admin/videos/faceevent/(\d+)/picture/thumbnail/"', cluster_page)
    # The best event at the top, then the gallery of all its events, the best quality first.
    assert shown == [str(events[0].pk), str(events[0].pk), str(events[2].pk), str(events[1].pk)]
    assert f"?cluster__id__exact={cluster.pk}" in cluster_page and "All 3 events" in cluster_page

    other = make_event("face", archive)
    filtered = staff.get(f"/admin/videos/faceevent/?cluster__id__exact={cluster.pk}").content.decode()
    assert f"/faceevent/{other.pk}/picture/" not in filtered and f"/faceevent/{events[1].pk}/picture/" in filtered

    thumbnail = staff.get(f"/admin/videos/faceevent/{events[0].pk}/picture/thumbnail/")
    assert thumbnail.status_code == 200
    assert thumbnail["Content-Type"] == "image/jpeg"
    assert thumbnail["Cache-Control"] == "private, max-age=3600"
    assert b"".join(thumbnail.streaming_content) == picture()


def test_pictures_are_only_for_staff_who_may_see_the_event(db, client, default_group):
    event = make_event("body", make_archive(default_group))
    url = f"/admin/videos/bodyevent/{event.pk}/picture/thumbnail/"

    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")
    not_staff = User.objects.create_user("user", password="pw-user")
    not_staff.user_permissions.set(Permission.objects.filter(codename="view_bodyevent"))
    client.force_login(not_staff)
    assert client.get(url).status_code == 302
    assert staff_with("view_faceevent").get(url).status_code == 404
    User.objects.filter(username="limited").delete()
    assert staff_with("view_bodyevent").get(url).status_code == 200


@pytest.mark.parametrize("path", [
    "abc/picture/thumbnail/", "99999999999999999999999/picture/thumbnail/", "-1/picture/thumbnail/",
    "{id}/picture/embedding/", "{id}/picture/video_archive/", "{id}/picture/normalized/", "{id}/picture/%00/",
    "{missing}/picture/thumbnail/",
])
def test_a_picture_that_is_not_there_is_a_404(staff, default_group, path):
    event = make_event("face", make_archive(default_group))
    gone = make_event("face", event.video_archive)
    default_storage.delete(gone.thumbnail.name)
    response = staff.get(f"/admin/videos/faceevent/{path.format(id=event.pk, missing=gone.pk)}")
    assert response.status_code == 404


def test_the_admin_speaks_russian_when_asked(staff, default_group):
    archive = make_archive(default_group, "в очереди")
    VideoArchive.objects.filter(pk=archive.pk).update(url="http://example.com/v.mp4")
    response = staff.post(CHANGELIST, {"action": "process_selected", "_selected_action": [archive.pk]},
                          follow=True, headers={"Accept-Language": "ru"})
    page = response.content.decode()
    assert "Поставлено в очередь на обработку видеоархивов: 1." in page
    assert "Запустить обработку" in page and "Прогресс" in page
    refused = add_archive(staff, default_group, SimpleUploadedFile("x.mp4", b"not a video" * 50),
                          headers={"Accept-Language": "ru"})
    assert refused.status_code == 200
    assert "Файл не является поддерживаемым видео" in errors_of(refused)


# --- watch lists and cards


def test_a_card_is_made_with_its_photo_in_the_admin_and_matching_follows(staff, face_models, default_group,  # noqa: F811
                                                                         django_capture_on_commit_callbacks):
    """A watch list and a card with a photo made from the admin: the photo is detected and embedded as the API
    does, shows on the card's page, and a change of what matching reads marks the card's events for matching."""
    from tests.api.test_detect import photo
    from tests.api.test_watchlists import _embedding, _event
    from videos import matching
    from videos.models import Card, CardPhoto, FaceEvent, WatchList

    response = staff.post("/admin/videos/watchlist/add/", {"name": "wanted", "color": "ff0000", "comment": "",
                                                           "active": "on", "threshold": "0.6"})
    assert response.status_code == 302, errors_of(response)
    watch_list = WatchList.objects.get(name="wanted")
    messi = photo("messi5.jpg")
    with django_capture_on_commit_callbacks(execute=False):
        response = staff.post("/admin/videos/card/add/", {
            "name": "messi", "comment": "", "active": "on", "watch_lists": [watch_list.pk],
            "photo": SimpleUploadedFile("messi.jpg", messi, content_type="image/jpeg")})
    assert response.status_code == 302, errors_of(response)
    card = Card.objects.get(name="messi")
    assert list(card.watch_lists.all()) == [watch_list]
    [card_photo] = CardPhoto.objects.filter(card=card)
    page = staff.get(f"/admin/videos/card/{card.pk}/change/").content.decode()
    picture = f"/admin/videos/cardphoto/{card_photo.pk}/picture/image/"
    assert picture in page
    assert staff.get(picture).status_code == 200

    archive = VideoArchive.objects.create(camera_group=default_group, name="here")
    event = _event(archive, _embedding(staff, messi), 1)
    assert matching.faces_match_pending() == [event.pk]
    assert event.pk in [e.pk for e in FaceEvent.objects.filter(matched_card=card)]
    assert f"/admin/videos/faceevent/{event.pk}/change/" in staff.get(
        f"/admin/videos/card/{card.pk}/change/").content.decode()  # its matched events, on its page
    # Deactivated from the admin: its events wait for matching again, and then match nothing.
    response = staff.post(f"/admin/videos/card/{card.pk}/change/", {
        "name": "messi", "comment": "", "watch_lists": [watch_list.pk]})
    assert response.status_code == 302, errors_of(response)
    assert FaceEvent.objects.get(pk=event.pk).match_pending is True
    matching.faces_match_pending()
    assert FaceEvent.objects.get(pk=event.pk).matched_card_id is None


def test_a_card_photo_without_a_face_is_refused_in_the_admin_and_the_card_kept(staff, face_models):  # noqa: F811
    import cv2
    import numpy as np

    from videos.models import Card, CardPhoto

    ok, blank = cv2.imencode(".jpg", np.full((120, 160, 3), 128, np.uint8))
    response = staff.post("/admin/videos/card/add/", {
        "name": "nobody", "comment": "", "active": "on",
        "photo": SimpleUploadedFile("blank.jpg", blank.tobytes(), content_type="image/jpeg")}, follow=True)
    assert response.status_code == 200
    assert "No face was found" in response.content.decode()
    assert Card.objects.filter(name="nobody").exists() and not CardPhoto.objects.exists()
