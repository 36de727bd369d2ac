"""Real footage through the whole API flow with a real worker: upload, process, poll, events in the database.

Needs the prepared models (`manage.py prepare_models`, run by ./dev) and Debian opencv-doc's sample videos
(fetched by ./dev test); skips without them locally and fails under CI=true.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.conftest import ALL_VIDEO_PERMS, WorkerProcess, _user, requires, token_client, upload, wait_for
from tests.footage import trim
from videos.models import BodyEvent, FaceEvent, JobState, VideoArchive

pytestmark = pytest.mark.worker

DATA_DIR = Path(os.environ.get("OPENCV_DOC_DATA_DIR", "/usr/share/doc/opencv-doc/examples/data"))


def footage(name: str) -> Path:
    path = DATA_DIR / name
    requires(path.is_file(), f"{path} is missing (./dev test fetches Debian's opencv-doc)")
    return path


@pytest.fixture
def model_worker(transactional_db, processing_queue, media_root, tmp_path, models_dir):
    process = WorkerProcess(processing_queue, media_root, tmp_path / "worker.log",
                            extra_env={"FFV_MODELS_DIR": str(models_dir), "FFV_JOB_LEASE_SECONDS": "5"}).start()
    yield process
    process.stop()


@pytest.fixture
def analyst(db):
    """The operator's permissions plus reading events and clusters (what a search client has)."""
    views = [f"view_{kind}{what}" for kind in ("face", "body", "car") for what in ("event", "cluster")]
    return token_client(_user("analyst", ALL_VIDEO_PERMS + views))


def create_archive(api, group, path: Path, detectors: dict) -> int:
    body = {"camera_group": group.pk, "name": path.name, "stream_settings": {"detectors": detectors}}
    archive_id = api.post("/videos/", body, format="json").json()["id"]
    assert upload(api, archive_id, path, content_type="application/octet-stream").status_code == 201
    return archive_id


def finished(api, archive_id: int) -> bool:
    status = api.get(f"/videos/{archive_id}/").json()["health_status"]["status"]
    return status in ("COMPLETED", "MISCONFIGURED")


def test_a_new_archive_analyses_30_fps_footage_ten_times_a_second(api, default_group, model_worker, tmp_path):
    """Issue 17: a new archive's defaults sample by time: at 30 fps every 3rd frame is analysed, so every posted
    event (a track's best frame, always an analysed one) lies on a multiple of 3, while every frame is counted."""
    import av
    import cv2

    clip = tmp_path / "street-30fps.avi"
    with av.open(str(footage("vtest.avi"))) as inp, av.open(str(clip), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = 640, 360, "yuv420p", 8_000_000
        for index, frame in enumerate(inp.decode(inp.streams.video[0])):
            if index == 90:
                break
            picture = cv2.resize(frame.to_ndarray(format="bgr24"), (640, 480), interpolation=cv2.INTER_AREA)
            video_frame = av.VideoFrame.from_ndarray(picture[60:420].copy(), format="bgr24")
            video_frame.pts = index
            for packet in stream.encode(video_frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    archive_id = create_archive(api, default_group, clip, {"face": None, "car": None})
    assert api.post(f"/videos/{archive_id}/process/").status_code == 200
    assert wait_for(lambda: finished(api, archive_id), timeout=300), model_worker.log()

    health = api.get(f"/videos/{archive_id}/").json()["health_status"]
    assert health["status"] == "COMPLETED" and health["statistic"]["frames_processed"] == 90
    frames = [event.detector_params["frame_index"] for event in BodyEvent.objects.filter(video_archive_id=archive_id)]
    assert len(frames) >= 3
    assert all(frame % 3 == 0 for frame in frames), frames


def test_megamind_gives_face_events_and_counts_agree(api, default_group, model_worker):
    archive_id = create_archive(api, default_group, footage("Megamind.avi"), {"body": None, "car": None})
    assert api.post(f"/videos/{archive_id}/process/").status_code == 200
    assert wait_for(lambda: finished(api, archive_id), timeout=300), model_worker.log()

    body = api.get(f"/videos/{archive_id}/").json()
    health = body["health_status"]
    assert (health["status"], health["code"]) == ("COMPLETED", "green"), health
    faces = FaceEvent.objects.filter(video_archive_id=archive_id)
    assert faces.count() >= 2
    assert body["face_count"] == faces.count() == health["statistic"]["faces_posted"]
    assert health["statistic"]["objects"]["face"]["posted"] == faces.count()
    assert body["body_count"] == body["car_count"] == 0
    assert health["statistic"]["frames_processed"] == 270
    assert (health["statistic"]["frame_width"], health["statistic"]["frame_height"]) == (720, 528)
    for event in faces:
        assert event.camera_group_id == default_group.pk
        assert 0 <= event.frame_timestamp <= body["source_len"] + 0.1
        assert event.thumbnail.storage.exists(event.thumbnail.name)


def test_a_worker_killed_mid_job_is_resumed_by_another_without_duplicate_events(
    api, default_group, model_worker, processing_queue, media_root, tmp_path, models_dir
):
    detectors = {"face": None, "car": None}
    # 300 of vtest's 795 frames keep the two runs short.
    clip = trim(footage("vtest.avi"), tmp_path / "vtest-300.mp4", 300)
    reference_id = create_archive(api, default_group, clip, detectors)
    assert api.post(f"/videos/{reference_id}/process/").status_code == 200
    assert wait_for(lambda: finished(api, reference_id), timeout=600), model_worker.log()
    reference = BodyEvent.objects.filter(video_archive_id=reference_id).count()
    assert reference > 0

    archive_id = create_archive(api, default_group, clip, detectors)
    assert api.post(f"/videos/{archive_id}/process/").status_code == 200
    assert wait_for(
        lambda: api.get(f"/videos/{archive_id}/").json()["health_status"]["statistic"].get("frames_processed", 0)
        > 100,
        timeout=300,
    ), model_worker.log()
    model_worker.kill(signal.SIGKILL)
    assert VideoArchive.objects.get(pk=archive_id).job_state in (JobState.STARTING, JobState.IN_PROGRESS)

    # The task is unacked with the dead worker; the sweeper (beat, and every worker at start) re-sends the job
    # once its lease has run out, and the next worker resumes it.
    second = WorkerProcess(processing_queue, media_root, tmp_path / "worker2.log",
                           extra_env={"FFV_MODELS_DIR": str(models_dir), "FFV_JOB_LEASE_SECONDS": "5",
                                      "FFV_SWEEP_INTERVAL": "1"}, beat=True).start()
    try:
        assert wait_for(lambda: finished(api, archive_id), timeout=600), second.log()
    finally:
        second.stop()
    body = api.get(f"/videos/{archive_id}/").json()
    assert body["health_status"]["status"] == "COMPLETED"
    assert body["health_status"]["statistic"]["job_starts"] == 2
    assert BodyEvent.objects.filter(video_archive_id=archive_id).count() == reference
    assert body["body_count"] == reference


def test_megamind_faces_cluster_into_its_people_and_a_probe_finds_its_person_first(
    analyst, default_group, model_worker
):
    api = analyst
    import cv2
    import numpy as np

    from videos.models import FaceCluster

    archive_id = create_archive(api, default_group, footage("Megamind.avi"), {"body": None, "car": None})
    assert api.post(f"/videos/{archive_id}/process/").status_code == 200
    assert wait_for(lambda: finished(api, archive_id), timeout=300), model_worker.log()
    # Clustering runs as its own task once the job has ended; the counts are null until it has.
    assert wait_for(lambda: api.get(f"/videos/{archive_id}/").json()["face_cluster_count"] is not None,
                    timeout=120), model_worker.log()
    archive = api.get(f"/videos/{archive_id}/").json()
    clusters = api.get("/clusters/faces/", {"video_archive": archive_id, "limit": 100}).json()["results"]
    assert archive["face_cluster_count"] == len(clusters)
    # Three people appear (checked by eye); short tracks of hair or a profile may form a small cluster of their own.
    assert 3 <= len(clusters) <= 6, clusters
    sizes = sorted((cluster["event_count"] for cluster in clusters), reverse=True)
    print(f"\nMegamind.avi: {archive['face_count']} face events in {len(clusters)} clusters of sizes {sizes}")
    assert sum(sizes[:3]) >= 0.8 * sum(sizes) and sum(sizes) == archive["face_count"]
    # No cluster holds two faces of one frame.
    events = FaceEvent.objects.filter(video_archive_id=archive_id)
    pairs = list(events.values_list("cluster_id", "frame_index"))
    assert all(cluster is not None for cluster, _ in pairs)
    assert len(set(pairs)) == len(pairs)
    assert FaceCluster.objects.filter(pk__in=[c["id"] for c in clusters]).count() == len(clusters)

    # A probe: the face of the largest cluster's best event, cut out of its full frame as a client would.
    largest = max(clusters, key=lambda cluster: cluster["event_count"])
    source = FaceEvent.objects.get(pk=largest["best_event"])
    full = api.get(f"/events/faces/{source.pk}/fullframe/")
    assert full.status_code == 200
    image = cv2.imdecode(np.frombuffer(b"".join(full.streaming_content) if full.streaming else full.content,
                                       np.uint8), cv2.IMREAD_COLOR)
    left, top = source.frame_coords_left, source.frame_coords_top
    right, bottom = source.frame_coords_right, source.frame_coords_bottom
    margin = (right - left) // 2
    crop = image[max(0, top - margin):bottom + margin, max(0, left - margin):right + margin]
    ok, jpeg = cv2.imencode(".jpg", crop)
    detected = api.post("/detect/", data=jpeg.tobytes(), content_type="image/jpeg")
    assert detected.status_code == 200, detected.content
    faces = detected.json()["objects"]["face"]
    assert faces
    probe = max(faces, key=lambda face: face["detection_score"])["id"]
    found = api.get("/events/faces/", {"looks_like": f"detection:{probe}", "threshold": 0.5, "limit": 10}).json()
    results = found["results"]
    assert results, found
    print(f"probe from event {source.pk}: {len(results)} matches, first in cluster {results[0]['cluster']} "
          f"(the source's: {largest['id']}), confidences {[event['looks_like_confidence'] for event in results]}")
    assert results[0]["cluster"] == largest["id"]
    confidences = [event["looks_like_confidence"] for event in results]
    assert confidences == sorted(confidences, reverse=True) and confidences[0] > 0.7


def test_body_events_carry_crops_of_people(analyst, default_group, model_worker, tmp_path, models_dir):
    api = analyst
    import cv2
    import numpy as np

    from processing.detectors import create_detector

    clip = trim(footage("vtest.avi"), tmp_path / "vtest-100.mp4", 100)
    archive_id = create_archive(api, default_group, clip, {"face": None, "car": None})
    assert api.post(f"/videos/{archive_id}/process/").status_code == 200
    assert wait_for(lambda: finished(api, archive_id), timeout=300), model_worker.log()
    events = api.get("/events/bodies/", {"video_archive": archive_id, "limit": 100}).json()["results"]
    assert len(events) >= 3
    detector = create_detector("yolov8", model_path=models_dir / "yolov8n.onnx", input_size=(256, 256))
    with_person = 0
    for event in events:
        response = api.get(f"/events/bodies/{event['id']}/thumbnail/")
        assert response.status_code == 200
        data = b"".join(response.streaming_content) if response.streaming else response.content
        crop = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        found = detector.detect(crop)
        with_person += bool((found.class_id == 0).any())
    assert with_person >= 0.9 * len(events), (with_person, len(events))
