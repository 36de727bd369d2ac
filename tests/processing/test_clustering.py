"""processing.clustering.assign_clusters on synthetic embeddings: identities with noise, frames kept apart."""

from __future__ import annotations

import numpy as np
import pytest

from processing.clustering import ClusterState, Item, assign_clusters

DIM = 64


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector, axis=-1, keepdims=True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(11)


def identities(rng: np.random.Generator, count: int) -> np.ndarray:
    return unit(rng.normal(size=(count, DIM)))


def noisy(rng: np.random.Generator, centre: np.ndarray, scale: float = 0.05) -> np.ndarray:
    return unit(centre + rng.normal(scale=scale, size=centre.shape))


def test_items_of_one_identity_share_a_cluster_and_others_do_not(rng):
    people = identities(rng, 3)
    items = [Item(key=10 * person + shot, embedding=noisy(rng, people[person]), frame=("a", 100 * person + shot))
             for person in range(3) for shot in range(5)]
    result = assign_clusters([], items, threshold=0.6)
    members = result.members()
    assert len(result.opened) == 3 and sorted(result.opened) == [-3, -2, -1]
    assert sorted(sorted(keys) for keys in members.values()) == [
        [0, 1, 2, 3, 4], [10, 11, 12, 13, 14], [20, 21, 22, 23, 24]]
    for key, state in result.clusters.items():
        assert state.count == len(members[key])
        expected = sum(unit(items[[item.key for item in items].index(k)].embedding) for k in members[key])
        np.testing.assert_allclose(state.centroid, expected, rtol=1e-9)


def test_joins_an_existing_cluster_across_batches(rng):
    person, stranger = identities(rng, 2)
    existing = ClusterState(key=7, centroid=noisy(rng, person) + noisy(rng, person), count=2)
    items = [Item(1, noisy(rng, person), frame=("b", 1)), Item(2, noisy(rng, stranger), frame=("b", 2))]
    result = assign_clusters([existing], items, threshold=0.6)
    by_item = {a.item: a for a in result.assignments}
    assert by_item[1].cluster == 7 and not by_item[1].opened and by_item[1].similarity > 0.8
    assert by_item[2].cluster == -1 and by_item[2].opened
    assert result.clusters[7].count == 3 and result.opened == [-1]
    assert existing.count == 2  # the input is not modified


def test_two_faces_of_one_frame_never_share_a_cluster(rng):
    (person,) = identities(rng, 1)
    # Two near-identical faces in frame 5 (a mirror, a poster): the second one must open its own cluster.
    items = [Item(1, noisy(rng, person, 0.01), frame=("a", 5), quality=0.9),
             Item(2, noisy(rng, person, 0.01), frame=("a", 5), quality=0.8),
             Item(3, noisy(rng, person, 0.01), frame=("a", 6), quality=0.7)]
    result = assign_clusters([], items, threshold=0.5)
    cluster = {a.item: a.cluster for a in result.assignments}
    assert cluster[1] != cluster[2]
    assert cluster[3] in (cluster[1], cluster[2])  # another frame: free to join either
    assert len(result.opened) == 2


def test_same_frame_rule_holds_against_earlier_members(rng):
    (person,) = identities(rng, 1)
    taken = ClusterState(key=4, centroid=noisy(rng, person), count=1, frames={("a", 9)})
    other = ClusterState(key=5, centroid=noisy(rng, person, 0.15), count=1)
    result = assign_clusters([taken, other], [Item(1, noisy(rng, person), frame=("a", 9))], threshold=0.3)
    assert result.assignments[0].cluster == 5  # the closer cluster already has a face of frame ("a", 9)


def test_same_frame_in_another_archive_is_no_conflict(rng):
    (person,) = identities(rng, 1)
    taken = ClusterState(key=4, centroid=noisy(rng, person), count=1, frames={("a", 9)})
    result = assign_clusters([taken], [Item(1, noisy(rng, person), frame=("b", 9))], threshold=0.6)
    assert result.assignments[0].cluster == 4


def test_below_threshold_opens_a_new_cluster(rng):
    first, second = identities(rng, 2)
    mixed = unit(first + 0.8 * second)  # cosine about 0.78 to `first`
    existing = ClusterState(key=1, centroid=first.copy(), count=1)
    assert assign_clusters([existing], [Item(1, mixed, ("a", 1))], threshold=0.9).assignments[0].opened
    assert not assign_clusters([existing], [Item(1, mixed, ("a", 1))], threshold=0.7).assignments[0].opened


def test_best_quality_first_and_stable(rng):
    people = identities(rng, 4)
    items = [Item(key, noisy(rng, people[key % 4], 0.2), frame=("a", key), quality=float(rng.random()))
             for key in range(40)]
    result = assign_clusters([], items, threshold=0.6)
    reversed_result = assign_clusters([], list(reversed(items)), threshold=0.6)
    assert result.assignments == reversed_result.assignments
    best = max(items, key=lambda it: (it.quality, -it.key))
    assert result.assignments[0].item == best.key and result.assignments[0].opened


def test_centroid_direction_decides_not_the_first_member(rng):
    (person,) = identities(rng, 1)
    # A cluster summed from many shots points at the person even if one member was poor.
    shots = [noisy(rng, person, 0.15) for _ in range(20)]
    state = ClusterState(key=1, centroid=np.sum(shots, axis=0), count=20)
    probe = noisy(rng, person, 0.1)
    result = assign_clusters([state], [Item(1, probe, ("a", 1))], threshold=0.6)
    assert result.assignments[0].cluster == 1
    assert result.assignments[0].similarity == pytest.approx(float(unit(state.centroid) @ unit(probe)), abs=1e-5)


def test_many_identities_recovered(rng):
    people = identities(rng, 60)
    items = [Item(person * 10 + shot, noisy(rng, people[person], 0.04), frame=("a", person * 10 + shot),
                  quality=float(rng.random())) for person in range(60) for shot in range(6)]
    result = assign_clusters([], items, threshold=0.6)
    assert len(result.opened) == 60
    for keys in result.members().values():
        assert len({key // 10 for key in keys}) == 1


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_bad_threshold(threshold):
    with pytest.raises(ValueError, match="threshold"):
        assign_clusters([], [Item(1, np.ones(DIM), ("a", 1))], threshold=threshold)


def test_bad_shapes(rng):
    with pytest.raises(ValueError, match="centroid of length"):
        assign_clusters([ClusterState(1, np.ones(3), 1)], [Item(1, np.ones(DIM), ("a", 1))], threshold=0.5)
    with pytest.raises(ValueError, match="expected"):
        assign_clusters([], [Item(1, np.ones(DIM), ("a", 1)), Item(2, np.ones(3), ("a", 2))], threshold=0.5)
    with pytest.raises(ValueError, match="no direction"):
        assign_clusters([], [Item(1, np.zeros(DIM), ("a", 1))], threshold=0.5)


def test_no_items():
    assert assign_clusters([ClusterState(1, np.ones(DIM), 1)], [], threshold=0.5).assignments == []
