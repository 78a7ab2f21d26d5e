"""A random-weight YOLOv8n (ultralytics 8.4.190, built from its yaml: nothing is downloaded) and its
ONNX export, for the detector tests. Nothing is written to ~/.config: the settings go to a temporary
folder (YOLO_CONFIG_DIR) and ultralytics stays offline (YOLO_OFFLINE)."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile


def _offline() -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if "YOLO_CONFIG_DIR" not in os.environ:  # one folder per process, removed when the process ends
        folder = tempfile.mkdtemp(prefix="agnostic-cam-yolo-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ["YOLO_CONFIG_DIR"] = folder


def yolov8n_random(seed: int = 0):
    """YOLOv8n's ``DetectionModel`` (an ``nn.Module``, eval mode, 80 classes) with weights drawn from
    ``torch.manual_seed(seed)`` (the global generator is left as it was). In eval mode it returns
    ``(predictions (N, 4 + 80, anchors), raw dict)``; its ``Detect`` head (``model.model[22]``) reads
    the neck outputs ``model[15]``, ``[18]`` and ``[21]``. Shared by every test that needs a YOLO model."""
    _offline()
    import torch
    from PIL import Image

    pil_open = Image.open
    from ultralytics import YOLO

    # importing ultralytics replaces PIL.Image.open process-wide (a HEIF hook that needs pi_heif); the
    # other tests of this process read images with Pillow's own: put it back
    Image.open = pil_open

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return YOLO("yolov8n.yaml", verbose=False).model.eval()


def yolov8n_onnx(path, size: int = 96, seed: int = 0):
    """``path`` with the random YOLOv8n exported to ONNX: input ``images`` (N, 3, size, size), output
    ``output0`` (N, 84, A): (cx, cy, w, h) in input pixels and 80 sigmoid class scores per anchor,
    A = (size/8)^2 + (size/16)^2 + (size/32)^2 (189 at 96 px), no NMS (ultralytics' export layout)."""
    import torch

    model = yolov8n_random(seed)
    model.model[-1].export = True  # the Detect head returns the decoded (N, 84, A) tensor only

    x = torch.zeros(1, 3, size, size)
    torch.onnx.export(model, x, str(path), dynamo=False, opset_version=17, input_names=["images"],
                      output_names=["output0"], dynamic_axes={"images": {0: "n"}, "output0": {0: "n"}})
    return path
