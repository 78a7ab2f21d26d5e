"""Import paths of modules that moved into the layer folders keep working.

``agnostic_cam.metrics`` was a root module before the package was arranged by layer; it now lives in
``agnostic_cam.evaluation.metrics``. A finder on ``sys.meta_path`` answers the old name with the
module at its new home (the very same module object, so state and ``isinstance`` checks are shared).
Only the paths that earlier documentation showed are kept; everything not in ``__all__`` or the
documented modules is private and may move again.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED: dict[str, str] = {
    "agnostic_cam.explanation": "agnostic_cam.core.explanation",
    "agnostic_cam.layout": "agnostic_cam.core.layout",
    "agnostic_cam.imaging": "agnostic_cam.core.imaging",
    "agnostic_cam.relu_policy": "agnostic_cam.core.relu_policy",
    "agnostic_cam.metrics": "agnostic_cam.evaluation.metrics",
    "agnostic_cam.road": "agnostic_cam.evaluation.road",
    "agnostic_cam.sanity": "agnostic_cam.evaluation.sanity",
    "agnostic_cam.sanity_metrics": "agnostic_cam.evaluation.similarity",
    "agnostic_cam.preprocess": "agnostic_cam.inputs.preprocess",
    "agnostic_cam.image_io": "agnostic_cam.inputs.image_files",
    "agnostic_cam.viz": "agnostic_cam.render.figures",
    "agnostic_cam.report": "agnostic_cam.audit.report",
    "agnostic_cam.task_targets": "agnostic_cam.targets.tasks",
    "agnostic_cam.target_objects": "agnostic_cam.targets.translators",
}


class _Loader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:  # already executed at its new home
        return None


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds ``agnostic_cam.<old>`` as the module at its new path."""

    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Loader(new))


def install() -> None:
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedFinder())
