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


#: Frames per ORT call when a detector's batch size is left to choose ("auto") and the session runs on CUDA.
#: On CPU it is 1: on 2 cores a batch of 4 ran no faster per frame than single frames (bench/RESULTS.md).
DEFAULT_GPU_BATCH = 8


def on_cuda(session: onnxruntime.InferenceSession) -> bool:
    """Whether ``session`` runs on the CUDA provider (not only has it as a fallback choice)."""
    return CUDA_PROVIDER in session.get_providers()


def auto_batch_size(providers: Sequence[str] | None = None) -> int:
    """The batch size "auto" means: :data:`DEFAULT_GPU_BATCH` where sessions get CUDA, else 1."""
    chosen = list(providers) if providers is not None else choose_providers()
    return DEFAULT_GPU_BATCH if CUDA_PROVIDER in chosen else 1


def fixed_batch(session: onnxruntime.InferenceSession, input_name: str) -> int | None:
    """The batch size a static-shape model was exported with (its input's first dimension), None when dynamic."""
    for node in session.get_inputs():
        if node.name == input_name:
            first = node.shape[0] if node.shape else None
            return first if isinstance(first, int) and first > 0 else None
    raise RuntimeError(f"model has no input {input_name!r}")


def run_batch(
    session: onnxruntime.InferenceSession,
    input_name: str,
    output_names: Sequence[str],
    batch: object,
    *,
    io_binding: bool,
) -> list[object]:
    """One ORT call on ``batch`` (a float32 NCHW array); the outputs as NumPy arrays.

    With ``io_binding`` the input goes to the session's device once, as an ``OrtValue`` (on CUDA: one host to
    device copy for the whole batch, no staging by ``run``), and the outputs are bound on the host, where the
    NMS runs. Without it this is plain ``session.run``.
    """
    if not io_binding:
        return list(session.run(list(output_names), {input_name: batch}))
    import onnxruntime

    device = "cuda" if on_cuda(session) else "cpu"
    binding = session.io_binding()
    binding.bind_ortvalue_input(input_name, onnxruntime.OrtValue.ortvalue_from_numpy(batch, device, 0))
    for name in output_names:
        binding.bind_output(name, "cpu")
    session.run_with_iobinding(binding)
    return list(binding.copy_outputs_to_cpu())
