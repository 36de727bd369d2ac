"""Job errors are codes with parameters: stable for translation, never a server path."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from processing.errors import MESSAGES, CodedError, ModelMissing, file_label
from processing.media import MediaError, probe
from processing.pipeline import PipelineError, SourceStalled


def test_every_code_is_snake_case_and_its_template_renders_with_its_parameters() -> None:
    for code, template in MESSAGES.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", code), code
        names = set(re.findall(r"%\((\w+)\)", template))
        rendered = template % {name: 1 for name in names}
        assert "%(" not in rendered and rendered


def test_errors_carry_code_params_and_an_english_message() -> None:
    error = MediaError("frame_too_large", width=8000, height=8000, max_pixels=1000)
    assert error.code == "frame_too_large" and error.params == {"width": 8000, "height": 8000, "max_pixels": 1000}
    assert str(error) == "frame size 8000x8000 exceeds the limit of 1000 pixels"
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), again.code, again.params, str(again)) == (MediaError, error.code, error.params, str(error))
    stalled = SourceStalled("source_stalled", seconds=2)
    assert isinstance(stalled, PipelineError) and "2 seconds" in str(stalled)


def test_unknown_codes_and_absolute_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown error code"):
        PipelineError("the video is broken")
    with pytest.raises(ValueError, match="absolute path"):
        ModelMissing("model_missing", file="/srv/models/yolov8n.onnx")
    missing = ModelMissing("model_missing", file=file_label("/srv/models/yolov8n.onnx"))
    assert isinstance(missing, FileNotFoundError) and isinstance(missing, CodedError)
    assert missing.params == {"file": "yolov8n.onnx"}


@pytest.mark.parametrize(
    ("content", "code"),
    [(b"just some text, not a video\n" * 50, "unsupported_container"),
     (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "still_image")],
)
def test_probe_says_why_a_file_is_refused_without_its_path(tmp_path: Path, content: bytes, code: str) -> None:
    source = tmp_path / "upload.mp4"
    source.write_bytes(content)
    with pytest.raises(MediaError) as caught:
        probe(source, max_pixels=8192 * 8192)
    assert caught.value.code == code
    assert str(tmp_path) not in str(caught.value) and str(tmp_path) not in repr(caught.value.params)


def test_a_missing_source_names_no_server_path(tmp_path: Path) -> None:
    from processing.decoding import DecodeStats, decode_frames

    with pytest.raises(MediaError) as caught:
        next(decode_frames(tmp_path / "gone.mp4", DecodeStats(), max_pixels=100))
    assert caught.value.code == "source_unreadable"
    assert str(tmp_path) not in str(caught.value)
