"""The admin in a real browser: headless Chromium (Debian's chromium and chromium-driver, driven by Selenium) logs
in, creates an archive with Megamind.avi, starts it with the admin action, and a real Celery worker processes it;
then the event and cluster pages must show their pictures (every <img> decoded: naturalWidth > 0).

Screenshots of each page are kept in $FFV_TEST_ARTIFACTS_DIR (var/test-artifacts by default, git-ignored),
under admin-browser/. `./dev test` installs chromium and chromium-driver where apt-get exists; a machine without
them skips this test, CI (CI=true) fails it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from tests.conftest import ROOT, WorkerProcess, requires, wait_for
from tests.test_worker_pipeline import footage
from videos.models import FaceCluster, FaceEvent, VideoArchive

pytestmark = pytest.mark.worker

CHROMIUM = os.environ.get("FFV_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FFV_CHROMEDRIVER", "/usr/bin/chromedriver")
# Root in a container has no sandbox; nothing of the browser's own reaches out (updates, sync, QUIC probes).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000"]
PASSWORD = "pw-browser-staff"


KEEP_RUNS = 5


def artifacts_dir() -> Path:
    """A folder of this run's screenshots; the runs before the last KEEP_RUNS are deleted."""
    base = Path(os.environ.get("FFV_TEST_ARTIFACTS_DIR") or ROOT / "var" / "test-artifacts") / "admin-browser"
    folder = base / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    for old in sorted(path for path in base.iterdir() if path.is_dir())[:-KEEP_RUNS]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


@pytest.fixture
def browser(tmp_path) -> Iterator:
    requires(Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file(),
             f"{CHROMIUM} and {CHROMEDRIVER} are needed: apt-get install chromium chromium-driver (./dev test does)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        requires(False, "selenium is not installed (the dev extras: pip install -e '.[dev]')")
    # A short folder of its own for the profile and the browser's temporary files: Chromium's sockets live there,
    # and a Unix socket's path may not be longer than 107 bytes (a test's tmp_path often is).
    scratch = Path(tempfile.mkdtemp(prefix="ffv-chromium-", dir="/tmp" if os.access("/tmp", os.W_OK) else None))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={scratch / 'profile'}"]:
        options.add_argument(flag)
    # The driver's path given: Selenium never looks for (or downloads) one of its own.
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"),
                      env={**os.environ, "TMPDIR": str(scratch)})
    try:
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(120)
        yield driver
        driver.quit()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def face_worker(transactional_db, processing_queue, media_root, tmp_path, models_dir) -> Iterator[WorkerProcess]:
    process = WorkerProcess(processing_queue, media_root, tmp_path / "worker.log",
                            extra_env={"FFV_MODELS_DIR": str(models_dir)}).start()
    yield process
    process.stop()


def pictures_state(driver) -> list[dict]:
    """Every picture the admin put on the page: its URL, whether it has loaded, its decoded width."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('img.ffv-picture'))"
        ".map(img => ({src: img.getAttribute('src'), complete: img.complete, width: img.naturalWidth}));"
    )


def assert_pictures_render(driver, page: str, minimum: int = 1) -> list[dict]:
    """All pictures on the page decode (naturalWidth > 0), at least `minimum` of them."""
    driver.execute_script("document.querySelectorAll('img.ffv-picture').forEach(img => img.loading = 'eager');")
    assert wait_for(lambda: all(p["complete"] for p in pictures_state(driver)), timeout=30), pictures_state(driver)
    state = pictures_state(driver)
    assert len(state) >= minimum, (page, state)
    assert all(p["width"] > 0 for p in state), (page, [p for p in state if not p["width"]])
    assert all(p["src"].startswith("/admin/videos/") for p in state), state  # the staff view, not media URLs
    return state


@pytest.fixture
def shots(browser) -> Iterator[Path]:
    """This run's artifacts folder; when the test fails it keeps the page it failed on too (screenshot, HTML)."""
    folder = artifacts_dir()
    yield folder
    if not (folder / "07-face-cluster.png").exists():  # the last step's screenshot: the test did not get there
        browser.save_screenshot(str(folder / "failed.png"))
        (folder / "failed.html").write_text(browser.page_source)


def test_staff_upload_process_and_see_faces_in_chromium(
    browser, shots, live_server, face_worker, default_group, settings
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    video = footage("Megamind.avi")
    User.objects.create_superuser("browser-staff", password=PASSWORD, email="")

    def open_page(path: str, shot: str | None = None) -> None:
        browser.get(live_server.url + path)
        if shot:
            browser.save_screenshot(str(shots / f"{shot}.png"))

    # Logs in through the admin's own login page.
    open_page("/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("browser-staff")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    assert wait_for(lambda: "/admin/login/" not in browser.current_url, timeout=30), browser.page_source[-2000:]

    # Creates an archive and uploads the video in one form.
    name = f"Megamind {uuid.uuid4().hex[:6]}"
    open_page("/admin/videos/videoarchive/add/")
    Select(browser.find_element(By.NAME, "camera_group")).select_by_value(str(default_group.pk))
    browser.find_element(By.NAME, "name").send_keys(name)
    settings_box = browser.find_element(By.NAME, "stream_settings")
    settings_box.clear()
    settings_box.send_keys(json.dumps({"detectors": {"body": None, "car": None}}))
    browser.find_element(By.NAME, "upload").send_keys(str(video))
    browser.save_screenshot(str(shots / "01-add-archive.png"))
    browser.find_element(By.NAME, "_save").click()
    assert wait_for(lambda: VideoArchive.objects.filter(name=name).exists(), timeout=60), browser.page_source[-3000:]
    archive = VideoArchive.objects.get(name=name)
    assert archive.file_size == video.stat().st_size and archive.source_len

    # Starts processing with the admin action.
    open_page("/admin/videos/videoarchive/")
    browser.find_element(By.CSS_SELECTOR, f"input[name=_selected_action][value='{archive.pk}']").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("process_selected")
    browser.find_element(By.NAME, "index").click()
    assert wait_for(lambda: "Queued for processing: 1" in browser.page_source, timeout=30)
    browser.save_screenshot(str(shots / "02-queued.png"))

    # Waits on the archive's page until its status reads COMPLETED, reloading as an operator would.
    def completed() -> bool:
        open_page(f"/admin/videos/videoarchive/{archive.pk}/change/")
        return browser.find_element(By.CSS_SELECTOR, ".ffv-status").get_attribute("data-status") in (
            "COMPLETED", "MISCONFIGURED")

    assert wait_for(completed, timeout=300, interval=2), face_worker.log()[-5000:]
    browser.save_screenshot(str(shots / "03-archive-completed.png"))
    assert browser.find_element(By.CSS_SELECTOR, ".ffv-status").get_attribute("data-status") == "COMPLETED"
    assert browser.find_element(By.CSS_SELECTOR, ".ffv-progress").text.startswith("100%")
    # Clustering runs as a task of its own once the job has ended.
    assert wait_for(lambda: VideoArchive.objects.get(pk=archive.pk).face_cluster_count is not None, timeout=120), \
        face_worker.log()[-5000:]
    events = FaceEvent.objects.filter(video_archive=archive)
    assert events.count() >= 2

    # The event list and an event's page show decoded pictures.
    open_page(f"/admin/videos/faceevent/?video_archive__id__exact={archive.pk}")
    listed = assert_pictures_render(browser, "event list", minimum=min(events.count(), 100))
    browser.save_screenshot(str(shots / "04-face-events.png"))
    assert {p["src"] for p in listed} == {f"/admin/videos/faceevent/{e.pk}/picture/thumbnail/"
                                          for e in events.order_by("-id")[:100]}
    event = events.order_by("-quality").first()
    open_page(f"/admin/videos/faceevent/{event.pk}/change/")
    shown = assert_pictures_render(browser, "event page", minimum=2)
    browser.save_screenshot(str(shots / "05-face-event.png"))
    assert {p["src"].rsplit("/", 2)[-2] for p in shown} == {"thumbnail", "fullframe"}
    full = [p for p in shown if p["src"].endswith("/fullframe/")][0]
    assert full["width"] == 720  # Megamind's frame, decoded in the browser

    # The cluster list and the largest cluster's page, with its events' faces.
    clusters = FaceCluster.objects.filter(events__video_archive=archive).distinct()
    open_page(f"/admin/videos/facecluster/?video_archive={archive.pk}")
    assert_pictures_render(browser, "cluster list", minimum=clusters.count())
    browser.save_screenshot(str(shots / "06-face-clusters.png"))
    largest = max(clusters, key=lambda cluster: cluster.event_count)
    open_page(f"/admin/videos/facecluster/{largest.pk}/change/")
    faces = assert_pictures_render(browser, "cluster page", minimum=1 + min(largest.event_count, 60))
    browser.save_screenshot(str(shots / "07-face-cluster.png"))
    members = {f"/admin/videos/faceevent/{pk}/picture/thumbnail/" for pk in largest.events.values_list("pk", flat=True)}
    assert {p["src"] for p in faces} <= members
    shutil.copy(face_worker.log_path, shots / "worker.log")
    print(f"\nadmin screenshots: {shots}")
