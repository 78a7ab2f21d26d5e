"""What to explain: the ``target`` argument, task targets and other libraries' target objects.

- :mod:`agnostic_cam.targets.spec`: :class:`TargetSpec`, one validated ``target`` for a batch
  (None, an int, one int per image, a callable on the output).
- :mod:`agnostic_cam.targets.tasks`: :class:`SegmentationMask`, :class:`DetectionBoxes`,
  :class:`Similarity` for segmentation, detection and embedding models.
- :mod:`agnostic_cam.targets.multilabel`: :class:`MultiLabel`, one map per (image, present class)
  of a multi-label (sigmoid-head) model.
- :mod:`agnostic_cam.targets.translators`: pytorch-grad-cam target objects and Captum-style tensors,
  turned into ours in one place.
- :mod:`agnostic_cam.targets.dispatch`: the few array operations targets need, on NumPy arrays,
  torch tensors and TensorFlow tensors alike.
"""
from agnostic_cam.targets.multilabel import MultiLabel
from agnostic_cam.targets.spec import TargetLike, TargetSpec, select_scores
from agnostic_cam.targets.tasks import DetectionBoxes, SegmentationMask, Similarity, Target, for_rows

__all__ = ["DetectionBoxes", "MultiLabel", "SegmentationMask", "Similarity", "Target", "TargetLike", "TargetSpec",
           "for_rows", "select_scores"]
