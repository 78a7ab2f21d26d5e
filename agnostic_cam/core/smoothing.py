"""``aug_smooth``: test-time augmentation of any method, pytorch-grad-cam's definition.

Every image is explained under the six augmentations of pytorch-grad-cam's default
``ttach.Compose([HorizontalFlip(), Multiply([0.9, 1, 1.1])])`` (no flip / flip, times the
factors 0.9, 1 and 1.1), all in one batched call; each heatmap is mapped back (flipped maps are
flipped again) and the six are averaged without renormalising, exactly as pytorch-grad-cam does.
Targets: a class index stays the same under every augmentation; ``None`` (top-1) is resolved
per augmented image, as in pytorch-grad-cam.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.core import layout as L
from agnostic_cam.targets import TargetSpec, for_rows

FLIPS = (False, True)
FACTORS = (0.9, 1.0, 1.1)
TRANSFORMS = tuple((flip, f) for flip in FLIPS for f in FACTORS)
IDENTITY = TRANSFORMS.index((False, 1.0))


def augment(x: np.ndarray, layout: str) -> np.ndarray:
    """(N, *input) in ``layout`` -> (T * N, *input): row t * N + i is image i under transform t."""
    w_axis = L.spatial_axes(layout)[1]
    out = [np.flip(x, axis=w_axis) * np.float32(f) if flip else x * np.float32(f) for flip, f in TRANSFORMS]
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


def augment_targets(spec: TargetSpec) -> TargetSpec:
    """The target of image i for every augmented row t * N + i."""
    t = len(TRANSFORMS)
    if spec.fixed is not None:
        return TargetSpec(np.tile(spec.fixed, t), spec.n * t)
    return TargetSpec(for_rows(spec.fn, np.tile(np.arange(spec.n), t)), spec.n * t)


def deaugment(maps: np.ndarray, n: int) -> np.ndarray:
    """(T * N, ..., w) maps (channel-first, width last) -> (N, ..., w): flipped maps flipped back,
    then the mean over the T augmentations."""
    maps = np.asarray(maps, dtype=np.float32).reshape(len(TRANSFORMS), n, *maps.shape[1:])
    back = [np.flip(m, axis=-1) if flip else m for m, (flip, _) in zip(maps, TRANSFORMS)]
    return np.mean(np.stack(back), axis=0, dtype=np.float32)


def identity_rows(a: np.ndarray | None, n: int) -> np.ndarray | None:
    """The rows of the un-augmented images (targets, scores, outputs of the originals)."""
    return None if a is None else np.asarray(a)[IDENTITY * n:(IDENTITY + 1) * n]
