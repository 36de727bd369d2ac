"""videos.search: the face index follows the event table (inserts, deletes, reused ids), exact on small sets,
read back from its file, rebuilt by the command; probes parsed strictly."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from videos import search
from videos.events import events_purge
from videos.models import CameraGroup, FaceDetection, FaceEvent, VideoArchive
from videos.search import SearchError, probe_vector, search_faces

pytestmark = pytest.mark.django_db

DIM = 512
_serial = itertools.count(1)


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


@pytest.fixture(autouse=True)
def index_dir(settings, tmp_path):
    settings.FFV_SEARCH_INDEX_DIR = tmp_path / "index"
    settings.FFV_SEARCH_RECONCILE_SECONDS = 3600
    search.reset_search_index()
    yield settings.FFV_SEARCH_INDEX_DIR
    search.reset_search_index()


@pytest.fixture
def archive(default_group: CameraGroup) -> VideoArchive:
    return VideoArchive.objects.create(camera_group=default_group, name="clip")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(23)


def make_face(archive: VideoArchive, embedding: np.ndarray | None, **fields) -> FaceEvent:
    serial = next(_serial)
    return FaceEvent.objects.create(
        video_archive=archive, camera_group=archive.camera_group, frame_timestamp=serial / 25, frame_index=serial,
        frame_coords_left=0, frame_coords_top=0, frame_coords_right=10, frame_coords_bottom=10, quality=0.5,
        confidence=0.9, track_id=serial, post_policy="best", thumbnail=f"t/{serial}.jpg", fullframe=f"f/{serial}.jpg",
        embedding=None if embedding is None else embedding.astype("<f4").tobytes(), **fields,
    )


def brute_force(probe: np.ndarray, k: int, threshold: float = 0.0) -> list[tuple[int, float]]:
    rows = FaceEvent.objects.filter(embedding__isnull=False).values_list("pk", "embedding")
    scored = [(pk, max(0.0, float(np.frombuffer(bytes(raw), "<f4") @ probe))) for pk, raw in rows]
    scored.sort(key=lambda item: (-item[1], item[0]))
    return [item for item in scored if item[1] >= threshold][:k]


def ids(hits: list[tuple[int, float]]) -> list[int]:
    return [pk for pk, _ in hits]


def test_exact_on_a_small_set(archive, rng):
    for _ in range(150):
        make_face(archive, unit(rng.normal(size=DIM)))
    make_face(archive, None)  # no embedding: never a hit
    for _ in range(10):
        probe = unit(rng.normal(size=DIM))
        hits = search_faces(probe, threshold=0.0, limit=10)
        expected = brute_force(probe, 10)
        assert ids(hits) == ids(expected)
        np.testing.assert_allclose([s for _, s in hits], [s for _, s in expected], atol=1e-5)


def test_threshold_limit_and_order(archive, rng):
    person = unit(rng.normal(size=DIM))
    near = [make_face(archive, unit(person + rng.normal(scale=s, size=DIM))) for s in (0.01, 0.03, 0.05)]
    for _ in range(20):
        make_face(archive, unit(rng.normal(size=DIM)))
    hits = search_faces(person, threshold=0.5, limit=10)
    assert ids(hits) == [event.pk for event in near]
    assert all(0.5 <= s <= 1.0 for _, s in hits) and [s for _, s in hits] == sorted([s for _, s in hits], reverse=True)
    assert ids(search_faces(person, threshold=0.5, limit=2)) == [near[0].pk, near[1].pk]
    assert search_faces(person, threshold=1.0, limit=5) == []
    with pytest.raises(ValueError):
        search_faces(person, threshold=1.5, limit=5)
    with pytest.raises(ValueError):
        search_faces(person, threshold=0.5, limit=0)


def test_new_events_are_found_without_a_rebuild(archive, rng):
    first = make_face(archive, unit(rng.normal(size=DIM)))
    assert ids(search_faces(np.frombuffer(bytes(first.embedding), "<f4"), threshold=0.9, limit=5)) == [first.pk]
    probe = unit(rng.normal(size=DIM))
    later = make_face(archive, probe)
    assert ids(search_faces(probe, threshold=0.9, limit=5)) == [later.pk]


def test_an_insert_that_committed_late_is_found(archive, rng):
    low, high = make_face(archive, unit(rng.normal(size=DIM))), None
    high = make_face(archive, unit(rng.normal(size=DIM)), id=low.pk + 5)
    search_faces(unit(rng.normal(size=DIM)), threshold=0.0, limit=1)  # high-water mark: high.pk
    probe = unit(rng.normal(size=DIM))
    late = make_face(archive, probe, id=low.pk + 2)  # an id below the mark, committed after it
    assert late.pk < high.pk
    assert ids(search_faces(probe, threshold=0.9, limit=5)) == [late.pk]


def test_deleted_events_are_never_answered(archive, default_group, rng):
    other = VideoArchive.objects.create(camera_group=default_group, name="other")
    probe = unit(rng.normal(size=DIM))
    gone = make_face(archive, unit(probe + rng.normal(scale=0.01, size=DIM)))
    make_face(archive, unit(rng.normal(size=DIM)))
    kept = make_face(other, unit(probe + rng.normal(scale=0.02, size=DIM)))
    assert ids(search_faces(probe, threshold=0.8, limit=5)) == [gone.pk, kept.pk]
    events_purge(archive_id=archive.pk)
    assert ids(search_faces(probe, threshold=0.8, limit=5)) == [kept.pk]
    assert len(search._engine()) == 1  # the purge was caught up with as a whole


def test_deletions_found_by_the_periodic_count_check(archive, settings, rng):
    events = [make_face(archive, unit(rng.normal(size=DIM))) for _ in range(5)]
    search_faces(unit(rng.normal(size=DIM)), threshold=0.0, limit=1)
    FaceEvent.objects.filter(pk=events[1].pk).delete()  # neither a hit nor the newest row
    settings.FFV_SEARCH_RECONCILE_SECONDS = 0
    search_faces(unit(rng.normal(size=DIM)), threshold=0.99, limit=1)
    assert sorted(search._engine().stamps) == sorted(e.pk for e in events if e.pk != events[1].pk)


def test_a_reused_id_is_another_row(archive, rng):
    old_vector, new_vector = unit(rng.normal(size=DIM)), unit(rng.normal(size=DIM))
    event = make_face(archive, old_vector)
    assert ids(search_faces(old_vector, threshold=0.9, limit=1)) == [event.pk]
    pk = event.pk
    event.delete()
    make_face(archive, new_vector, id=pk)  # what SQLite does after a rollback
    assert search_faces(old_vector, threshold=0.9, limit=1) == []
    assert ids(search_faces(new_vector, threshold=0.9, limit=1)) == [pk]


def test_an_embedding_of_another_length_is_skipped_once(archive, settings, rng):
    good = make_face(archive, unit(rng.normal(size=DIM)))
    odd = make_face(archive, unit(rng.normal(size=128)))
    settings.FFV_SEARCH_RECONCILE_SECONDS = 0
    assert ids(search_faces(np.frombuffer(bytes(good.embedding), "<f4"), threshold=0.9, limit=5)) == [good.pk]
    assert search._engine().unusable == {odd.pk: search._stamp(odd.created_date)}
    with CaptureQueriesContext(connection) as queries:
        search_faces(unit(rng.normal(size=DIM)), threshold=0.0, limit=5)
    assert not [q["sql"] for q in queries if "embedding" in q["sql"].split("FROM")[0]]  # no reconcile, no re-read


def test_a_query_reads_no_embeddings_once_caught_up(archive, rng):
    for _ in range(30):
        make_face(archive, unit(rng.normal(size=DIM)))
    search_faces(unit(rng.normal(size=DIM)), threshold=0.0, limit=5)
    with CaptureQueriesContext(connection) as queries:
        search_faces(unit(rng.normal(size=DIM)), threshold=0.0, limit=5)
    assert len(queries) <= 3
    assert not [q["sql"] for q in queries if "embedding" in q["sql"].split("FROM")[0]]


def test_large_sets_go_approximate_and_still_find_the_probe(archive, settings, rng):
    settings.FFV_SEARCH_EXACT_LIMIT = 100
    events = [make_face(archive, unit(rng.normal(size=DIM))) for _ in range(250)]
    engine_hits = [search_faces(np.frombuffer(bytes(e.embedding), "<f4"), threshold=0.0, limit=3)[0][0]
                   for e in events[::10]]
    assert search._engine().index.approximate
    # HNSW: approximate, but a probe's own event is nearly always first (random vectors are its hardest case).
    assert sum(hit == e.pk for hit, e in zip(engine_hits, events[::10], strict=True)) >= 23


def test_the_file_is_read_back_and_caught_up(archive, index_dir, monkeypatch, rng):
    first = [make_face(archive, unit(rng.normal(size=DIM))) for _ in range(10)]
    search_faces(unit(rng.normal(size=DIM)), threshold=0.0, limit=1)  # built and written
    assert (index_dir / search.INDEX_FILE).exists() and (index_dir / search.META_FILE).exists()
    search.reset_search_index()

    def no_rebuild(self):
        raise AssertionError("rebuilt instead of read")

    monkeypatch.setattr(search.FaceSearchIndex, "rebuild", no_rebuild)
    probe = unit(rng.normal(size=DIM))
    newer = make_face(archive, probe)
    assert ids(search_faces(probe, threshold=0.9, limit=1)) == [newer.pk]
    assert sorted(search._engine().stamps) == sorted([e.pk for e in first] + [newer.pk])


def test_a_file_of_another_database_is_not_used(archive, monkeypatch, rng):
    event = make_face(archive, unit(rng.normal(size=DIM)))
    search_faces(unit(rng.normal(size=DIM)), threshold=0.0, limit=1)
    search.reset_search_index()
    monkeypatch.setattr(search, "_database_identity", lambda: "postgresql:elsewhere:5432:prod")
    rebuilt = []
    original = search.FaceSearchIndex.rebuild
    monkeypatch.setattr(search.FaceSearchIndex, "rebuild", lambda self: (rebuilt.append(1), original(self)))
    assert ids(search_faces(np.frombuffer(bytes(event.embedding), "<f4"), threshold=0.9, limit=1)) == [event.pk]
    assert rebuilt == [1]


def test_a_damaged_file_is_rebuilt(archive, index_dir, rng):
    event = make_face(archive, unit(rng.normal(size=DIM)))
    search_faces(unit(rng.normal(size=DIM)), threshold=0.0, limit=1)
    search.reset_search_index()
    (index_dir / search.INDEX_FILE).write_bytes(b"not an index")
    assert ids(search_faces(np.frombuffer(bytes(event.embedding), "<f4"), threshold=0.9, limit=1)) == [event.pk]


def test_rebuild_command(archive, index_dir, rng):
    events = [make_face(archive, unit(rng.normal(size=DIM))) for _ in range(7)]
    out = io.StringIO()
    call_command("rebuild_search_index", stdout=out)
    assert "7 faces" in out.getvalue()
    assert (index_dir / search.META_FILE).exists()
    search.reset_search_index()
    assert ids(search_faces(np.frombuffer(bytes(events[3].embedding), "<f4"), threshold=0.9, limit=1)) == [
        events[3].pk]


def test_an_empty_table_answers_nothing(db):
    assert search_faces(unit(np.ones(DIM)), threshold=0.0, limit=5) == []


def test_a_probe_of_another_dimension_is_refused(archive, rng):
    make_face(archive, unit(rng.normal(size=DIM)))
    with pytest.raises(SearchError, match="dimensions"):
        search_faces(unit(rng.normal(size=128)), threshold=0.0, limit=5)


# --- probes


@pytest.fixture
def user(db) -> User:
    return User.objects.create_user(username="searcher", password="pw")


def make_detection(owner: User | None, vector: np.ndarray, pk: str = "Ab3_-xYz0123456789Qw") -> FaceDetection:
    return FaceDetection.objects.create(
        id=pk, created_by=owner, frame_coords_left=1, frame_coords_top=2, frame_coords_right=30,
        frame_coords_bottom=40, confidence=0.99, quality=0.9, embedding=vector.astype("<f4").tobytes(),
    )


def test_probe_of_a_detection_and_of_a_face_event(archive, user, rng):
    vector = unit(rng.normal(size=DIM))
    detection = make_detection(user, vector)
    got = probe_vector(f"detection:{detection.pk}", user)
    assert got.dtype == np.float32 and got.shape == (DIM,)
    np.testing.assert_allclose(got, vector, atol=1e-6)
    event = make_face(archive, 2 * vector)  # not quite unit as stored: the probe is normalised
    np.testing.assert_allclose(probe_vector(f"faceevent:{event.pk}", user), vector, atol=1e-6)
    np.testing.assert_allclose(probe_vector(f" faceevent:{event.pk} ", user), vector, atol=1e-6)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "detection:<id> or faceevent:<id>"),
        ("1", "detection:<id> or faceevent:<id>"),
        ("detection:", "detection:<id> or faceevent:<id>"),
        ("body:1", "detection:<id> or faceevent:<id>"),
        ("faceevent:1:2", "detection:<id> or faceevent:<id>"),
        ("detection:a b", "detection:<id> or faceevent:<id>"),
        ("faceevent:abc", "is a number"),
        ("faceevent:-1", "is a number"),
        ("faceevent:99999999999999999999", "is a number"),
        ("faceevent:987654", "not found"),
        ("detection:unknown", "not found"),
    ],
)
def test_bad_probes(user, value, message):
    with pytest.raises(SearchError, match=message):
        probe_vector(value, user)


def test_probe_errors_of_known_rows(archive, user, rng):
    event = make_face(archive, None)
    with pytest.raises(SearchError, match="no embedding"):
        probe_vector(f"faceevent:{event.pk}", user)
    with pytest.raises(SearchError, match="detection:<id>"):
        probe_vector(None, user)  # type: ignore[arg-type]


def test_a_detection_of_another_user_is_unknown(user, rng):
    stranger = User.objects.create_user(username="stranger", password="pw")
    admin = User.objects.create_superuser(username="root", password="pw")
    detection = make_detection(stranger, unit(rng.normal(size=DIM)))
    with pytest.raises(SearchError, match="not found"):
        probe_vector(f"detection:{detection.pk}", user)
    assert probe_vector(f"detection:{detection.pk}", stranger).shape == (DIM,)
    assert probe_vector(f"detection:{detection.pk}", admin).shape == (DIM,)
