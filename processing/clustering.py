"""Incremental clustering of unit embeddings: each new item joins the nearest cluster or opens a new one.

A cluster is kept as the SUM of its members' unit vectors and their count; its direction (the sum, normalised)
is the members' mean appearance, and adding or removing a member changes the sum without reading the others.

Rules, in the order they apply to each new item:

1. Items are taken best first (quality descending, then key), so a cluster's direction is set by its best
   pictures and the outcome does not depend on the order the caller read the rows in.
2. An item may join a cluster only if cosine(item, cluster direction) >= `threshold`. An empty cluster that the
   caller kept (see ClusterState) is a candidate by its last direction.
3. Two items of the same *frame group* (the same frame of the same video) never share a cluster: two faces seen
   at once are two people. A cluster that already holds a member of that frame group (from an earlier batch, as
   given in `ClusterState.frames`, or taken in this batch) is not a candidate.
4. Of the candidates left, the most similar one wins; with none, the item opens a new cluster.

The nearest-cluster search uses processing.ann.VectorIndex over the cluster directions: exact (brute force) while
the clusters are few, HNSW beyond its limit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from processing.ann import VectorIndex


@dataclass
class ClusterState:
    """A cluster as the caller knows it: `centroid` is the sum of its members' unit vectors (shape (dim,)).

    An empty cluster (`count` 0) with a non-zero `centroid` is one a person kept (a named or split cluster whose
    members were all taken out): `centroid` is its last direction, matched like any other, and the first item to
    join replaces it.
    """

    key: int
    centroid: np.ndarray
    count: int
    frames: set[Hashable] = field(default_factory=set)  # frame groups of its members that matter to this batch


@dataclass(frozen=True)
class Item:
    """A new embedding to place: `frame` is its frame group, e.g. (archive id, frame index)."""

    key: int
    embedding: np.ndarray
    frame: Hashable
    quality: float = 0.0


@dataclass(frozen=True)
class Assignment:
    item: int
    cluster: int
    opened: bool  # True when this item opened the cluster
    similarity: float  # cosine to the cluster's direction when it joined (1.0 for the item that opened it)


@dataclass
class ClusteringResult:
    assignments: list[Assignment]
    clusters: dict[int, ClusterState]  # every cluster that changed or was opened, with its new sum and count
    opened: list[int]  # keys of the new clusters, in the order they were opened

    def members(self) -> dict[int, list[int]]:
        """Cluster key -> keys of the items that joined it in this batch."""
        grouped: dict[int, list[int]] = defaultdict(list)
        for assignment in self.assignments:
            grouped[assignment.cluster].append(assignment.item)
        return dict(grouped)


def assign_clusters(
    clusters: Iterable[ClusterState], items: Sequence[Item], *, threshold: float, first_new_key: int = -1
) -> ClusteringResult:
    """Place `items` into `clusters` (not modified) or new clusters keyed `first_new_key`, -2, -3, ...

    New clusters get negative keys so that they cannot clash with stored ones; the caller maps them to the ids it
    creates. `threshold` is a cosine in (0, 1].
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if first_new_key >= 0:
        raise ValueError("new cluster keys must be negative")
    if not items:
        return ClusteringResult([], {}, [])
    dim = int(np.asarray(items[0].embedding).shape[-1])
    states: dict[int, ClusterState] = {}
    index = VectorIndex(dim)
    index_key_of: dict[int, int] = {}  # cluster key -> its (non-negative) key in the index, and back
    cluster_of: dict[int, int] = {}
    by_frame: dict[Hashable, set[int]] = defaultdict(set)

    def track(state: ClusterState) -> None:
        index_key = index_key_of.get(state.key)
        if index_key is None:
            index_key = index_key_of[state.key] = len(index_key_of)
            cluster_of[index_key] = state.key
        index.add([index_key], state.centroid)

    for cluster in clusters:
        centroid = np.asarray(cluster.centroid, dtype=np.float64).reshape(-1)
        if centroid.shape != (dim,):
            raise ValueError(f"cluster {cluster.key}: centroid of length {centroid.size}, items have {dim}")
        state = ClusterState(cluster.key, centroid.copy(), cluster.count, set(cluster.frames))
        if state.key in states:
            raise ValueError(f"cluster {state.key} given twice")
        states[state.key] = state
        for frame in state.frames:
            by_frame[frame].add(state.key)
        if np.linalg.norm(centroid) > 1e-9:
            track(state)

    assignments: list[Assignment] = []
    touched: set[int] = set()
    opened: list[int] = []
    next_key = first_new_key
    for item in sorted(items, key=lambda it: (-it.quality, it.key)):
        vector = np.asarray(item.embedding, dtype=np.float64).reshape(-1)
        if vector.shape != (dim,):
            raise ValueError(f"item {item.key}: embedding of length {vector.size}, expected {dim}")
        norm = np.linalg.norm(vector)
        if not np.isfinite(norm) or norm <= 1e-9:
            raise ValueError(f"item {item.key}: embedding has no direction")
        vector = vector / norm
        blocked = by_frame[item.frame]
        chosen: tuple[int, float] | None = None
        if len(index):
            # At most len(blocked) candidates can be refused, so one more than that always holds the best allowed.
            for index_key, similarity in index.search(vector, len(blocked) + 1, threshold=threshold):
                cluster_key = cluster_of[index_key]
                if cluster_key not in blocked:
                    chosen = (cluster_key, similarity)
                    break
        if chosen is None:
            state = ClusterState(next_key, vector.copy(), 1, {item.frame})
            states[state.key] = state
            opened.append(state.key)
            next_key -= 1
            assignments.append(Assignment(item.key, state.key, True, 1.0))
        else:
            state = states[chosen[0]]
            state.centroid = vector.copy() if state.count == 0 else state.centroid + vector
            state.count += 1
            state.frames.add(item.frame)
            assignments.append(Assignment(item.key, state.key, False, chosen[1]))
        by_frame[item.frame].add(state.key)
        touched.add(state.key)
        track(state)
    return ClusteringResult(assignments, {key: states[key] for key in touched}, opened)
