"""A YOLO detector as users load it (ultralytics), with seeded random weights: nothing is downloaded.

``YOLO("yolov8n.yaml")`` builds the network from the yaml bundled with ultralytics (no weights file).
ultralytics writes a settings file at import; ``YOLO_CONFIG_DIR`` points it at a temporary folder
(never ~/.config) and ``YOLO_OFFLINE`` keeps it from any network check. Shared by the tests that
need a YOLO model (one builder: do not write it twice).
"""
from __future__ import annotations

import os
import tempfile


def yolov8n_random(seed: int = 0):
    """YOLOv8n's ``DetectionModel`` (an ``nn.Module``, eval mode, 80 classes) with weights drawn from
    ``torch.manual_seed(seed)``. In eval mode it returns ``(predictions (N, 4 + 80, anchors), raw dict)``;
    its ``Detect`` head (``model.model[22]``) reads the neck outputs ``model[15]``, ``[18]`` and ``[21]``."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="agnostic-cam-yolo-"))
    import torch
    from ultralytics import YOLO

    torch.manual_seed(seed)
    return YOLO("yolov8n.yaml").model.eval()
