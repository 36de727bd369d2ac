"""processing.ann.VectorIndex: exact below the limit, HNSW above it, same answers through save/load."""

from __future__ import annotations

import numpy as np
import pytest

from processing.ann import VectorIndex


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def brute_force(keys: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    sims = unit(vectors) @ (query / np.linalg.norm(query))
    order = np.lexsort((keys, -sims))[:k]
    return [int(keys[i]) for i in order]


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return np.arange(10, 10 + 500, dtype=np.int64), rng.normal(size=(500, 32)).astype(np.float32)


def test_exact_search_equals_brute_force(data):
    keys, vectors = data
    index = VectorIndex(32)
    index.add(keys, vectors)
    assert len(index) == 500 and not index.approximate
    rng = np.random.default_rng(1)
    for query in rng.normal(size=(20, 32)):
        got = index.search(query, 10)
        assert [key for key, _ in got] == brute_force(keys, vectors, query, 10)
        sims = [sim for _, sim in got]
        assert sims == sorted(sims, reverse=True) and all(0.0 <= sim <= 1.0 for sim in sims)


def test_similarity_is_cosine_clipped_at_zero():
    index = VectorIndex(2)
    index.add([1, 2, 3, 4], np.array([[1, 0], [1, 1], [0, 1], [-1, 0]], np.float32))
    got = dict(index.search(np.array([3.0, 0.0]), 4))
    assert got[1] == pytest.approx(1.0)
    assert got[2] == pytest.approx(np.sqrt(0.5), abs=1e-6)
    assert got[3] == pytest.approx(0.0, abs=1e-6)
    assert got[4] == 0.0  # opposite direction: clipped, never negative


def test_threshold_and_k(data):
    keys, vectors = data
    index = VectorIndex(32)
    index.add(keys, vectors)
    assert index.search(vectors[0], 3, threshold=0.999) == [(10, pytest.approx(1.0))]
    assert len(index.search(vectors[0], 7)) == 7
    assert index.search(vectors[0], 0) == []
    assert VectorIndex(32).search(vectors[0], 5) == []


def test_add_replaces_and_remove_forgets(data):
    keys, vectors = data
    index = VectorIndex(32)
    index.add(keys[:3], vectors[:3])
    index.add([keys[0]], vectors[4:5])  # same key, new vector
    assert len(index) == 3
    assert index.search(vectors[4], 1)[0] == (int(keys[0]), pytest.approx(1.0))
    assert index.remove([keys[1], 99999]) == 1
    assert len(index) == 2 and int(keys[1]) not in index and int(keys[0]) in index
    assert int(keys[1]) not in [key for key, _ in index.search(vectors[1], 5)]
    np.testing.assert_allclose(index.vectors([keys[2]])[0], unit(vectors[2:3])[0], rtol=1e-6)


@pytest.mark.parametrize(
    ("keys", "vectors", "message"),
    [
        ([1, 1], np.ones((2, 4)), "duplicate"),
        ([1], np.ones((2, 4)), "1 keys for 2"),
        ([1], np.ones((1, 3)), "shape"),
        ([1], np.zeros((1, 4)), "zero vector"),
        ([1], np.full((1, 4), np.nan), "finite"),
        ([-1], np.ones((1, 4)), "negative"),
    ],
)
def test_bad_input_is_refused(keys, vectors, message):
    with pytest.raises(ValueError, match=message):
        VectorIndex(4).add(keys, vectors)


def test_switches_to_hnsw_above_the_limit_and_back(data):
    keys, vectors = data
    index = VectorIndex(32, exact_limit=200)
    index.add(keys[:200], vectors[:200])
    assert not index.approximate
    index.add(keys[200:], vectors[200:])
    assert index.approximate and len(index) == 500
    # The probe's own vector is found first, at similarity 1; recall on 500 random vectors is near perfect.
    hits = sum(index.search(vectors[i], 1)[0][0] == keys[i] for i in range(0, 500, 5))
    assert hits >= 98
    index.add([keys[0]], vectors[1:2])
    assert len(index) == 500 and index.search(vectors[1], 2)[0][1] == pytest.approx(1.0, abs=1e-5)
    assert index.remove(keys[:420]) == 420
    assert not index.approximate and len(index) == 80  # below half the limit: exact again
    assert [key for key, _ in index.search(vectors[450], 5)] == brute_force(keys[420:], vectors[420:], vectors[450], 5)


def test_recent_vectors_wait_in_an_exact_buffer_beside_the_graph(data):
    keys, vectors = data
    index = VectorIndex(32, exact_limit=200, delta_limit=60)
    index.add(keys[:300], vectors[:300])
    assert index.approximate and index._size == 0  # all in the graph
    index.add(keys[300:350], vectors[300:350])
    assert index._size == 50 and len(index) == 350  # buffered
    assert index.search(vectors[320], 1)[0] == (int(keys[320]), pytest.approx(1.0))
    assert sorted(index.keys().tolist()) == keys[:350].tolist()
    np.testing.assert_allclose(index.vectors([keys[5], keys[320]]), unit(vectors[[5, 320]]), atol=2e-3)
    index.add(keys[350:], vectors[350:])
    assert index._size == 0 and len(index) == 500  # the buffer outgrew its limit: merged into the graph
    assert index.remove([keys[320], keys[5]]) == 2 and len(index) == 498
    assert int(keys[320]) not in index and int(keys[6]) in index


def test_hnsw_recall_on_clustered_data():
    rng = np.random.default_rng(3)
    centres = unit(rng.normal(size=(300, 64)))
    members = unit(np.repeat(centres, 10, axis=0) + rng.normal(scale=0.08, size=(3000, 64)))
    keys = np.arange(3000)
    index = VectorIndex(64, exact_limit=1000)
    index.add(keys, members)
    assert index.approximate
    recall = []
    for query in unit(centres[:50] + rng.normal(scale=0.08, size=(50, 64))):
        truth = set(brute_force(keys, members, query, 10))
        recall.append(len(truth & {key for key, _ in index.search(query, 10)}) / 10)
    assert np.mean(recall) >= 0.95


@pytest.mark.parametrize("exact_limit", [1000, 100])
def test_save_and_load_give_the_same_answers(tmp_path, data, exact_limit):
    keys, vectors = data
    index = VectorIndex(32, exact_limit=exact_limit)
    index.add(keys, vectors)
    path = tmp_path / "faces.npz"
    index.save(path)
    loaded = VectorIndex.load(path)
    assert loaded.approximate == index.approximate and len(loaded) == 500
    assert sorted(loaded.keys().tolist()) == keys.tolist()
    for query in vectors[:10]:
        assert loaded.search(query, 5) == index.search(query, 5)
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed into place


def test_load_refuses_a_file_that_is_not_an_index(tmp_path):
    path = tmp_path / "junk.npz"
    np.savez(path, something=np.arange(3))
    with pytest.raises(ValueError, match="not a vector index"):
        VectorIndex.load(path)
    with pytest.raises(ValueError, match="not a vector index"):
        VectorIndex.load(tmp_path / "missing.npz")
