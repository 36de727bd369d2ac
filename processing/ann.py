"""A nearest-neighbour index of unit vectors under integer keys: exact on small sets, HNSW on large ones.

Below `exact_limit` vectors the index is a numpy matrix searched by brute force, so small sets (a test, a young
installation) get exact answers; above it the vectors move into a usearch HNSW graph (cosine metric), whose
search time grows about logarithmically with the set; vectors added later wait in a small exact buffer beside the
graph and join it in batches. The switch back to exact happens at half the limit, so an index that hovers around
the limit does not rebuild on every add and remove.

Similarity is the plain cosine of the two unit vectors, clipped at 0: 1 is the same direction, 0 is orthogonal or
opposite. (Mapping the whole cosine range onto 0..1, (cos + 1) / 2, would give unrelated faces about 0.5, which
reads as a coin toss; for embeddings trained with a cosine margin an unrelated pair sits near 0.)

Not thread-safe: callers serialise access (videos.search holds a lock around it).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

EXACT_LIMIT = 20_000
FORMAT_VERSION = 1


def _unit_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"vectors must have shape (n, {dim}), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("vectors must be finite")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms <= 1e-12).any():
        raise ValueError("a zero vector has no direction")
    return np.ascontiguousarray(array / norms, dtype=np.float32)


def _key_array(keys: Iterable[int] | np.ndarray) -> np.ndarray:
    array = np.asarray(list(keys) if not isinstance(keys, np.ndarray) else keys)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError("keys must be a flat sequence of integers")
    if (array < 0).any():
        raise ValueError("keys must not be negative")
    return array.astype(np.int64)


class VectorIndex:
    """Unit vectors under non-negative integer keys; `search` returns `(key, similarity)` best first.

    - `dim`: vector length; every vector is re-normalised on the way in (zero vectors are refused).
    - `exact_limit`: above this many vectors search goes approximate (HNSW). Brute force costs about
      `len * dim` multiply-adds per query (20,000 x 512: a few milliseconds on one core).
    - `delta_limit`: in approximate mode new vectors first go to an exact buffer searched by brute force beside
      the graph, and join the graph in one batch when the buffer outgrows this. Inserting into HNSW costs a
      graph search per vector (a few ms each on a busy core), so small, frequent adds stay cheap and the
      graph is built in bulk, multi-threaded.
    - `connectivity`, `expansion_add`, `expansion_search`: HNSW graph degree and beam widths; larger is slower and
      more accurate (recall), `expansion_search` the one that matters at query time (see bench/bench_search.py).
    - The graph stores half-precision vectors (`f16`): half the memory, faster to build; similarities coming from
      it are off by about 1e-3, exact ones (brute force, the buffer) are float32.
    """

    def __init__(self, dim: int, *, exact_limit: int = EXACT_LIMIT, delta_limit: int | None = None,
                 connectivity: int = 16, expansion_add: int = 64, expansion_search: int = 128) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        if exact_limit < 0:
            raise ValueError("exact_limit must be >= 0")
        self.dim = dim
        self.exact_limit = exact_limit
        self.delta_limit = max(1000, exact_limit // 4) if delta_limit is None else delta_limit
        self.connectivity = connectivity
        self.expansion_add = expansion_add
        self.expansion_search = expansion_search
        # Rows 0..size-1 of `_vectors` hold the vectors of `_keys` (`_rows`: key -> row): every vector in exact
        # mode, the buffer of recent ones beside the graph in approximate mode.
        self._keys = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._size = 0
        self._rows: dict[int, int] = {}
        self._hnsw: Any = None  # usearch.index.Index once above exact_limit

    # --- inspection

    @property
    def approximate(self) -> bool:
        return self._hnsw is not None

    def __len__(self) -> int:
        return self._size + (len(self._hnsw) if self._hnsw is not None else 0)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, (int, np.integer)) or key < 0:
            return False
        return int(key) in self._rows or (self._hnsw is not None and bool(self._hnsw.contains(int(key))))

    def keys(self) -> np.ndarray:
        """Every key, as int64, in no particular order."""
        buffered = self._keys[: self._size].copy()
        if self._hnsw is None:
            return buffered
        return np.concatenate([np.asarray(self._hnsw.keys, dtype=np.uint64).astype(np.int64), buffered])

    def vectors(self, keys: Iterable[int]) -> np.ndarray:
        """The stored (unit) vectors of `keys`, shape (n, dim); KeyError for a key not in the index."""
        array = _key_array(keys)
        out = np.zeros((array.size, self.dim), dtype=np.float32)
        in_graph: list[int] = []
        for position, key in enumerate(array.tolist()):
            row = self._rows.get(key)
            if row is not None:
                out[position] = self._vectors[row]
            elif self._hnsw is not None and self._hnsw.contains(key):
                in_graph.append(position)
            else:
                raise KeyError(key)
        if in_graph:
            got = self._hnsw.get(array[in_graph].astype(np.uint64))
            out[in_graph] = np.vstack(got if isinstance(got, tuple) else [got]).reshape(-1, self.dim)
        return out

    # --- writes

    def add(self, keys: Iterable[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under keys; a key already present gets the new vector."""
        key_array = _key_array(keys)
        rows = _unit_rows(vectors, self.dim) if key_array.size else np.zeros((0, self.dim), np.float32)
        if rows.shape[0] != key_array.size:
            raise ValueError(f"{key_array.size} keys for {rows.shape[0]} vectors")
        if key_array.size == 0:
            return
        if np.unique(key_array).size != key_array.size:
            raise ValueError("duplicate keys in one add")
        if self._hnsw is not None:
            in_graph = [key for key in key_array.tolist() if self._hnsw.contains(key)]
            if in_graph:  # the new vector goes to the buffer
                self._hnsw.remove(np.asarray(in_graph, dtype=np.uint64))
        fresh = []
        for position, key in enumerate(key_array.tolist()):
            row = self._rows.get(key)
            if row is None:
                fresh.append(position)
            else:
                self._vectors[row] = rows[position]
        if fresh:
            self._append(key_array[fresh], rows[fresh])
        if self._hnsw is None and self._size > self.exact_limit:
            self._to_hnsw()
        elif self._hnsw is not None and self._size > self.delta_limit:
            self._merge()

    def remove(self, keys: Iterable[int] | np.ndarray) -> int:
        """Remove keys; unknown keys are ignored. Returns how many were removed."""
        removed = 0
        for key in set(_key_array(keys).tolist()):
            row = self._rows.pop(key, None)
            if row is not None:
                last = self._size - 1
                if row != last:  # move the last row into the hole
                    moved = int(self._keys[last])
                    self._keys[row] = moved
                    self._vectors[row] = self._vectors[last]
                    self._rows[moved] = row
                self._size -= 1
                removed += 1
            elif self._hnsw is not None and self._hnsw.contains(key):
                self._hnsw.remove(key)
                removed += 1
        if self._hnsw is not None and len(self) <= self.exact_limit // 2:
            self._to_exact()
        return removed

    def clear(self) -> None:
        type(self).__init__(self, self.dim, exact_limit=self.exact_limit, delta_limit=self.delta_limit,
                            connectivity=self.connectivity, expansion_add=self.expansion_add,
                            expansion_search=self.expansion_search)

    # --- search

    def search(self, vector: np.ndarray, k: int, threshold: float = 0.0) -> list[tuple[int, float]]:
        """The `k` nearest keys with similarity >= `threshold`, as `(key, similarity)` best first.

        Ties are broken by the smaller key, so equal inputs give equal answers.
        """
        if k <= 0 or len(self) == 0:
            return []
        query = _unit_rows(vector, self.dim)[0]
        keys, sims = self._exact_top(query, k)
        if self._hnsw is not None and len(self._hnsw):
            matches = self._hnsw.search(query, min(k, len(self._hnsw)))
            keys = np.concatenate([keys, np.asarray(matches.keys, dtype=np.uint64).astype(np.int64)])
            sims = np.concatenate([sims, 1.0 - np.asarray(matches.distances, dtype=np.float64)])
        sims = np.clip(sims, 0.0, 1.0)
        order = np.lexsort((keys, -sims))[:k]
        return [(int(keys[i]), float(sims[i])) for i in order if sims[i] >= threshold]

    def _exact_top(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        sims = self._vectors[: self._size] @ query
        top = np.argpartition(-sims, k - 1)[:k] if k < self._size else np.arange(self._size)
        return self._keys[top], sims[top].astype(np.float64)

    # --- persistence

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to one file, atomically (a reader never sees half a file)."""
        target = Path(path)
        meta = {"version": FORMAT_VERSION, "dim": self.dim, "exact_limit": self.exact_limit,
                "delta_limit": self.delta_limit, "connectivity": self.connectivity,
                "expansion_add": self.expansion_add, "expansion_search": self.expansion_search,
                "approximate": self.approximate}
        arrays: dict[str, Any] = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                                         "keys": self._keys[: self._size], "vectors": self._vectors[: self._size]}
        if self._hnsw is not None:
            arrays["hnsw"] = np.frombuffer(bytes(self._hnsw.save()), dtype=np.uint8)
        temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with temp.open("wb") as handle:
                np.savez(handle, **arrays)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> VectorIndex:
        """Read an index written by `save`; ValueError if the file is not one."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                if meta.get("version") != FORMAT_VERSION:
                    raise ValueError(f"index format {meta.get('version')!r}, expected {FORMAT_VERSION}")
                index = cls(int(meta["dim"]), exact_limit=int(meta["exact_limit"]),
                            delta_limit=int(meta["delta_limit"]), connectivity=int(meta["connectivity"]),
                            expansion_add=int(meta["expansion_add"]), expansion_search=int(meta["expansion_search"]))
                if meta["approximate"]:
                    from usearch.index import Index

                    index._hnsw = Index.restore(data["hnsw"].tobytes())
                    if index._hnsw is None or index._hnsw.ndim != index.dim:
                        raise ValueError("the HNSW part cannot be read")
                    index._hnsw.expansion_search = index.expansion_search
                keys, vectors = data["keys"], data["vectors"]
                if vectors.shape != (keys.size, index.dim):
                    raise ValueError("keys and vectors do not match")
                index._append(keys.astype(np.int64), vectors.astype(np.float32))
        except (KeyError, OSError, ValueError, TypeError, RuntimeError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path} is not a vector index: {exc}") from exc
        return index

    # --- internals

    def _append(self, keys: np.ndarray, rows: np.ndarray) -> None:
        needed = self._size + keys.size
        if needed > self._keys.size:
            capacity = max(needed, 2 * self._keys.size, 1024)
            grown_keys = np.zeros(capacity, dtype=np.int64)
            grown_vectors = np.zeros((capacity, self.dim), dtype=np.float32)
            grown_keys[: self._size] = self._keys[: self._size]
            grown_vectors[: self._size] = self._vectors[: self._size]
            self._keys, self._vectors = grown_keys, grown_vectors
        self._keys[self._size : needed] = keys
        self._vectors[self._size : needed] = rows
        for offset, key in enumerate(keys.tolist()):
            self._rows[key] = self._size + offset
        self._size = needed

    def _take_buffer(self) -> tuple[np.ndarray, np.ndarray]:
        keys, vectors = self._keys[: self._size].copy(), self._vectors[: self._size].copy()
        self._keys = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        self._size = 0
        self._rows = {}
        return keys, vectors

    def _merge(self) -> None:
        keys, vectors = self._take_buffer()
        if keys.size:
            self._hnsw.add(keys.astype(np.uint64), vectors)

    def _to_hnsw(self) -> None:
        from usearch.index import Index

        self._hnsw = Index(ndim=self.dim, metric="cos", dtype="f16", connectivity=self.connectivity,
                           expansion_add=self.expansion_add, expansion_search=self.expansion_search)
        self._merge()

    def _to_exact(self) -> None:
        assert self._hnsw is not None
        graph_keys = np.asarray(self._hnsw.keys, dtype=np.uint64).astype(np.int64)
        graph_vectors = self.vectors(graph_keys) if graph_keys.size else np.zeros((0, self.dim), np.float32)
        self._hnsw = None
        self._append(graph_keys, _unit_rows(graph_vectors, self.dim) if graph_keys.size else graph_vectors)
