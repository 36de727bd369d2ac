"""ONNX Runtime provider choice and a lazy, fork-safe session cache.

``onnxruntime`` is imported only inside the functions: web processes that import the pipeline
modules never pay for it, and no session (threads, GPU memory) exists before the first
inference call.  Celery's prefork pool forks workers from a parent that may already have used
a session; ORT sessions are not fork-safe, so the cache is keyed by ``os.getpid()`` and every
process builds its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from processing.errors import ModelMissing, file_label

if TYPE_CHECKING:
    import onnxruntime

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

SessionKey = tuple[int, str, tuple[str, ...], int]

_sessions: dict[SessionKey, onnxruntime.InferenceSession] = {}
_lock = threading.Lock()


def _new_lock_in_child() -> None:
    # A fork taken while another thread held the lock would leave the child's copy locked forever.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def choose_providers(prefer_gpu: bool = True) -> list[str]:
    """Execution providers for a new session, best first.

    CUDA is chosen only when the installed ``onnxruntime`` build reports it (the
    ``onnxruntime-gpu`` wheel); CPU is always appended as ORT's fallback.  ``prefer_gpu=False``
    forces CPU, e.g. for tests that must produce identical numbers everywhere.
    """
    import onnxruntime

    if prefer_gpu and CUDA_PROVIDER in onnxruntime.get_available_providers():
        return [CUDA_PROVIDER, CPU_PROVIDER]
    return [CPU_PROVIDER]


def get_session(
    model_path: str | os.PathLike[str],
    *,
    providers: Sequence[str] | None = None,
    intra_op_num_threads: int = 0,
) -> onnxruntime.InferenceSession:
    """The process's ``InferenceSession`` for ``model_path``, created on first use.

    Args:
        model_path: ``.onnx`` file; resolved so different spellings share one session.
        providers: ORT providers, default :func:`choose_providers`.
        intra_op_num_threads: threads per inference; 0 lets ORT use every core.  With several
            worker processes on one machine, ``cores // workers`` avoids oversubscription at the
            price of slower single-frame latency.
    """
    import onnxruntime

    path = str(Path(model_path).resolve())
    chosen = tuple(providers) if providers is not None else tuple(choose_providers())
    # Sessions inherited from a parent process keep their (stale) key and are never touched or
    # freed here: destroying them could deadlock on thread-pool state copied by fork().
    key = (os.getpid(), path, chosen, intra_op_num_threads)
    with _lock:
        session = _sessions.get(key)
        if session is None:
            if not Path(path).is_file():
                raise ModelMissing("model_missing", file=file_label(path))
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = intra_op_num_threads
            session = onnxruntime.InferenceSession(path, sess_options=options, providers=list(chosen))
            _sessions[key] = session
        return session


def clear_session_cache() -> None:
    """Forget this process's sessions (tests, or to free GPU memory after a job)."""
    pid = os.getpid()
    with _lock:
        for key in [key for key in _sessions if key[0] == pid]:
            del _sessions[key]
