"""A url source through the API and a real worker: SSRF by redirect, what job messages may say, the fetch's limits.

The "public" side is an address of the test's own that the url policy counts as global (192.88.99.x on a veth
interface, tests/remote_sources.py); loopback stands for an internal service. The workers run with the default
policy (FFV_URL_ALLOW_PRIVATE=false) unless a test says otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import WorkerProcess, requires, wait_for
from tests.footage import trim
from tests.remote_sources import Answer, closed_port
from videos.models import BodyEvent, CarEvent, FaceEvent, VideoArchive

pytestmark = pytest.mark.worker

NO_DETECTORS = {"detectors": {"face": None, "body": None, "car": None}}
DATA_DIR = Path(os.environ.get("OPENCV_DOC_DATA_DIR", "/usr/share/doc/opencv-doc/examples/data"))


@pytest.fixture
def start_worker(transactional_db, processing_queue, media_root, tmp_path):
    """start_worker(**env) -> a real worker with the default url policy (and `env` on top), stopped at the end."""
    workers: list[WorkerProcess] = []

    def start(**env: str) -> WorkerProcess:
        log = tmp_path / f"worker-{len(workers)}.log"
        workers.append(WorkerProcess(processing_queue, media_root, log,
                                     extra_env={"FFV_URL_ALLOW_PRIVATE": "false", "FFV_URL_ALLOWED_HOSTS": "",
                                                **env}).start())
        return workers[-1]

    yield start
    for worker in workers:
        worker.stop()


def create(api, group, url: str, stream_settings: dict | None = None) -> int:
    body = {"camera_group": group.pk, "name": "remote", "url": url,
            "stream_settings": NO_DETECTORS if stream_settings is None else stream_settings}
    response = api.post("/videos/", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def run(api, archive_id: int, worker: WorkerProcess, timeout: float = 60) -> dict:
    """process/ and wait for the job to end; the archive's health_status."""
    assert api.post(f"/videos/{archive_id}/process/").status_code == 200

    def ended() -> bool:
        return api.get(f"/videos/{archive_id}/").json()["health_status"]["status"] in (
            "COMPLETED", "MISCONFIGURED", "INTERRUPTED")

    assert wait_for(ended, timeout=timeout), worker.log()
    return api.get(f"/videos/{archive_id}/").json()["health_status"]


def msg_code(archive_id: int) -> str:
    return VideoArchive.objects.get(pk=archive_id).job_msg_code


def events_of(archive_id: int) -> int:
    return sum(model.objects.filter(video_archive_id=archive_id).count() for model in (FaceEvent, BodyEvent, CarEvent))


def test_a_public_url_that_redirects_to_loopback_fails_and_loopback_receives_nothing(
    api, default_group, start_worker, public_address, serve, video_factory
):
    clip = video_factory("internal.mp4", frames=40)
    internal = serve("127.0.0.1")
    internal.video("/internal.mp4", clip)
    public = serve(public_address)
    public.redirect("/clip.mp4", internal.url("/internal.mp4"))
    worker = start_worker()

    archive_id = create(api, default_group, public.url("/clip.mp4"))
    health = run(api, archive_id, worker)

    assert (health["status"], health["code"]) == ("MISCONFIGURED", "red")
    assert msg_code(archive_id) == "source_not_allowed"
    assert health["msg"] == "The url cannot be opened: it redirected to an address that is not allowed."
    assert health["statistic"]["frames_processed"] == 0
    assert events_of(archive_id) == 0
    assert public.requests == ["/clip.mp4"]
    assert internal.requests == []  # not a single connection reached the internal service


def test_a_public_url_and_an_allowed_redirect_chain_are_processed(
    api, default_group, start_worker, public_address, serve, video_factory
):
    public = serve(public_address)
    public.video("/clip.mp4", video_factory("clip.mp4", frames=40))
    public.redirect("/short-link", "/moved")
    public.redirect("/moved", public.url("/clip.mp4"), status=301)
    worker = start_worker(FFV_FETCH_MAX_REDIRECTS="2")

    for path in ("/clip.mp4", "/short-link"):
        archive_id = create(api, default_group, public.url(path))
        health = run(api, archive_id, worker)
        assert (health["status"], health["code"]) == ("COMPLETED", "green"), health
        assert health["statistic"]["frames_processed"] == 40
    assert public.requests == ["/clip.mp4", "/short-link", "/moved", "/clip.mp4"]


def test_refused_missing_and_closed_read_the_same_in_job_messages(
    api, default_group, start_worker, public_address, serve
):
    # A port scanner's three answers, on an address the policy allows (here the public one), and then behind a
    # redirect into loopback: a user learns nothing from them.
    internal = serve("127.0.0.1", {"/closes": Answer(close_at_once=True)})
    public = serve(public_address, {"/closes": Answer(close_at_once=True)})
    refused_port = closed_port(public_address)
    public.redirect("/to-refused", f"http://127.0.0.1:{closed_port('127.0.0.1')}/x.mp4")
    public.redirect("/to-missing", internal.url("/missing.mp4"))
    public.redirect("/to-closes", internal.url("/closes"))
    worker = start_worker()

    direct = [f"http://{public_address}:{refused_port}/x.mp4", public.url("/missing.mp4"), public.url("/closes")]
    redirected = [public.url("/to-refused"), public.url("/to-missing"), public.url("/to-closes")]
    outcomes: dict[str, set[tuple[str, str, str]]] = {"direct": set(), "redirected": set()}
    for kind, urls in (("direct", direct), ("redirected", redirected)):
        for url in urls:
            archive_id = create(api, default_group, url)
            health = run(api, archive_id, worker)
            outcomes[kind].add((health["status"], msg_code(archive_id), health["msg"]))
            assert str(refused_port) not in health["msg"] and "404" not in health["msg"]
            assert "refused" not in health["msg"].lower() and "end of file" not in health["msg"].lower()
    assert outcomes["direct"] == {("MISCONFIGURED", "source_unreachable",
                                   "The video could not be fetched from its url.")}
    assert outcomes["redirected"] == {("MISCONFIGURED", "source_not_allowed",
                                       "The url cannot be opened: it redirected to an address that is not allowed.")}
    assert internal.requests == []


def test_redirect_loops_and_too_many_hops_end_with_their_own_message(
    api, default_group, start_worker, public_address, serve
):
    public = serve(public_address)
    public.redirect("/loop", "/loop")
    for hop in range(5):
        public.redirect(f"/hop{hop}", f"/hop{hop + 1}")
    worker = start_worker(FFV_FETCH_MAX_REDIRECTS="2")

    for path in ("/loop", "/hop0"):
        archive_id = create(api, default_group, public.url(path))
        health = run(api, archive_id, worker)
        assert health["status"] == "MISCONFIGURED"
        assert msg_code(archive_id) == "source_too_many_redirects"
        assert health["msg"] == "The url redirected more than 2 times, or in a loop."
    assert "/hop3" not in public.requests


def test_a_source_over_the_fetch_limit_fails_and_leaves_no_spool(
    api, default_group, start_worker, public_address, serve, video_factory, tmp_path
):
    clip = video_factory("big.mp4", frames=60, width=640, height=480)
    assert clip.stat().st_size > 20_000
    public = serve(public_address)
    public.video("/declared.mp4", clip)
    public.video("/undeclared.mp4", clip, content_length=False)  # the cap must hold while reading
    public.video("/fits.mp4", video_factory("small.mp4", frames=5, width=64, height=48))
    spool = tmp_path / "spool"
    spool.mkdir()
    worker = start_worker(FFV_FETCH_MAX_BYTES="20000", FFV_FETCH_DIR=str(spool))

    for path in ("/declared.mp4", "/undeclared.mp4"):
        archive_id = create(api, default_group, public.url(path))
        health = run(api, archive_id, worker)
        assert health["status"] == "MISCONFIGURED"
        assert msg_code(archive_id) == "source_too_large"
        assert health["msg"] == "The video at the url is larger than the limit of 20000 bytes (FFV_FETCH_MAX_BYTES)."
        assert list(spool.iterdir()) == []
    small_id = create(api, default_group, public.url("/fits.mp4"))
    assert run(api, small_id, worker)["statistic"]["frames_processed"] == 5
    assert list(spool.iterdir()) == []  # a finished job's spool goes too


def test_a_slow_download_counts_as_progress_and_can_be_stopped(
    api, default_group, start_worker, public_address, serve, video_factory, tmp_path
):
    clip = video_factory("slow.mp4", frames=300, width=640, height=480)
    public = serve(public_address, {"/slow.mp4": Answer(body=clip.read_bytes(), content_length=False, trickle=0.2)})
    spool = tmp_path / "spool"
    spool.mkdir()
    worker = start_worker(FFV_DECODE_STALL_SECONDS="1", FFV_FETCH_DIR=str(spool))
    archive_id = create(api, default_group, public.url("/slow.mp4"))
    assert api.post(f"/videos/{archive_id}/process/").status_code == 200

    def status() -> str:
        return api.get(f"/videos/{archive_id}/").json()["health_status"]["status"]

    assert wait_for(lambda: status() == "INPROGRESS" and any(spool.iterdir()), timeout=60), worker.log()
    # Data keeps coming, if slowly: longer than the stall limit without a frame is not a stall.
    assert not wait_for(lambda: status() != "INPROGRESS", timeout=3), (status(), worker.log())
    assert api.post(f"/videos/{archive_id}/stop/").status_code == 200

    assert wait_for(lambda: status() == "INTERRUPTED", timeout=10), worker.log()
    assert wait_for(lambda: not any(spool.iterdir()), timeout=5)
    assert msg_code(archive_id) == ""


# --- with the detectors: events from a fetched source, none from a loopback redirect


def footage(name: str) -> Path:
    path = DATA_DIR / name
    requires(path.is_file(), f"{path} is missing (./dev test fetches Debian's opencv-doc)")
    return path


def test_a_fetched_source_gives_events_and_a_redirect_to_loopback_gives_none(
    api, default_group, start_worker, public_address, serve, models_dir, tmp_path
):
    video = trim(footage("Megamind.avi"), tmp_path / "megamind.avi", frames=120)
    internal = serve("127.0.0.1")
    internal.video("/megamind.avi", video)
    public = serve(public_address)
    public.video("/megamind.avi", video)
    public.redirect("/share/megamind", "/megamind.avi")
    public.redirect("/evil", internal.url("/megamind.avi"))
    worker = start_worker(FFV_MODELS_DIR=str(models_dir))
    faces_only = {"detectors": {"body": None, "car": None}}

    allowed_id = create(api, default_group, public.url("/share/megamind"), faces_only)
    health = run(api, allowed_id, worker, timeout=300)
    assert (health["status"], health["code"]) == ("COMPLETED", "green"), health
    faces = FaceEvent.objects.filter(video_archive_id=allowed_id).count()
    assert faces >= 1
    assert api.get(f"/videos/{allowed_id}/").json()["face_count"] == faces

    refused_id = create(api, default_group, public.url("/evil"), faces_only)
    health = run(api, refused_id, worker, timeout=60)
    assert health["status"] == "MISCONFIGURED"
    assert msg_code(refused_id) == "source_not_allowed"
    assert events_of(refused_id) == 0
    assert internal.requests == []
