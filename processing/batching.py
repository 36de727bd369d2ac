"""Frames from several pipelines of one process detected in the same batches (a GPU host's chunks). No Django.

A worker process that runs several jobs or chunks at once (Celery's ``threads`` pool, ``FFV_WORKER_POOL``) has one
ONNX session per model (processing.onnx_runtime); each pipeline's detection stage hands its batch of frames to the
process's :class:`SharedBatches` for that detector, which runs what the pipelines have submitted together: up to
``max_batch`` frames in one ``detect_batch`` call. A batcher waits for the other pipelines' frames only while a
registered pipeline has not submitted yet, and at most ``max_wait`` seconds; a lone pipeline never waits.

There is no thread of its own: the first pipeline that finds no call running runs the next one for everybody
(the "leader"), then hands on, so nothing outlives the pipelines and nothing is left behind by a fork.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(eq=False)
class _Request(Generic[Item, Result]):
    items: list[Item]
    results: list[Result] | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class BatchStats:
    calls: int = 0
    items: int = 0
    merged_calls: int = 0  # calls that carried the frames of more than one submitter
    sizes: list[int] = field(default_factory=list)


class SharedBatches(Generic[Item, Result]):
    """Runs ``run(items)`` on what concurrent :meth:`submit` calls hand in, up to ``max_batch`` items a call."""

    def __init__(self, run: Callable[[list[Item]], list[Result]], *, max_batch: int, max_wait: float,
                 label: str = "") -> None:
        self._run = run
        self.label = label
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait)
        self._cond = threading.Condition()
        self._pending: list[_Request[Item, Result]] = []
        self._running = False
        self._users = 0
        self.stats = BatchStats()

    def join(self) -> None:
        """A pipeline starts submitting here: the others may wait (``max_wait``) for its frames."""
        with self._cond:
            self._users += 1

    def describe(self) -> str:
        """The counters so far, for the log."""
        stats = self.stats
        return (f"{self.label or 'batcher'}: {stats.calls} calls, {stats.items} inputs, "
                f"{stats.merged_calls} calls with inputs of several pipelines")

    def leave(self) -> None:
        with self._cond:
            self._users = max(0, self._users - 1)
            self._cond.notify_all()

    def submit(self, items: Sequence[Item]) -> list[Result]:
        """``run``'s results for ``items``, in order; blocks until they are done; re-raises ``run``'s error."""
        request: _Request[Item, Result] = _Request(list(items))
        if not request.items:
            return []
        with self._cond:
            self._pending.append(request)
            self._cond.notify_all()
            while not request.done:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                taken = self._gather()
                self._cond.release()
                try:
                    self._execute(taken)
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        assert request.results is not None
        return request.results

    def _gather(self) -> list[_Request[Item, Result]]:
        """(Lock held) The requests of the next call: wait briefly while other pipelines may still add frames."""
        deadline = time.monotonic() + self.max_wait
        while (len(self._pending) < self._users and self._queued() < self.max_batch
               and (left := deadline - time.monotonic()) > 0):
            self._cond.wait(left)
        taken: list[_Request[Item, Result]] = []
        count = 0
        while self._pending and (not taken or count + len(self._pending[0].items) <= self.max_batch):
            request = self._pending.pop(0)
            taken.append(request)
            count += len(request.items)
        return taken

    def _queued(self) -> int:
        return sum(len(request.items) for request in self._pending)

    def _execute(self, taken: list[_Request[Item, Result]]) -> None:
        items = [item for request in taken for item in request.items]
        try:
            results = self._run(items)
            if len(results) != len(items):
                raise RuntimeError(f"batch run returned {len(results)} results for {len(items)} items")
        except BaseException as exc:  # every submitter of the call gets it
            for request in taken:
                request.error = exc
                request.done = True
            return
        self.stats.calls += 1
        self.stats.items += len(items)
        self.stats.merged_calls += len(taken) > 1
        self.stats.sizes.append(len(items))
        start = 0
        for request in taken:
            request.results = results[start : start + len(request.items)]
            start += len(request.items)
            request.done = True


_shared: dict[tuple[int, str], SharedBatches[Any, Any]] = {}
_shared_lock = threading.Lock()


def _new_lock_in_child() -> None:
    global _shared_lock
    _shared_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def shared_batches(key: str, run: Callable[[list[Item]], list[Result]], *, max_batch: int, max_wait: float,
                   label: str = "") -> SharedBatches[Item, Result]:
    """This process's batcher for ``key`` (a detector's full configuration), created by the first caller."""
    full_key = (os.getpid(), key)
    with _shared_lock:
        batcher = _shared.get(full_key)
        if batcher is None:
            batcher = SharedBatches(run, max_batch=max_batch, max_wait=max_wait, label=label)
            _shared[full_key] = batcher
        return batcher
