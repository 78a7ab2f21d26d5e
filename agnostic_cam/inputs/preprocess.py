"""Preprocessing spec: from image files to the float batch an ONNX model expects.

``Preprocess(size=(224, 224), channel_order="RGB", scale=1/255, mean=..., std=..., layout="NCHW")``
turns images (paths, PIL images, uint8 (H, W, 3) arrays) into float32 (N, C, H, W) or (N, H, W, C):
resize (bilinear) -> channel order -> ``x * scale`` -> ``(x - mean) / std`` -> layout. Build it from
CLI flags, a dict, or a small JSON/YAML file; missing fields default from the model's input shape.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from agnostic_cam.core import layout as L
from agnostic_cam.errors import InputError, OptionError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
_SCALES = {"0-1": 1 / 255, "0-255": 1.0}


@dataclass
class Preprocess:
    """size: (H, W) to resize to, or None to keep the images' size (they must then match the model);
    channel_order: 'RGB' or 'BGR'; scale: multiplier of the 0-255 pixel values (1/255 gives 0-1;
    the strings '0-1', '0-255' are accepted); mean/std: per-channel, in the channel order given,
    applied after scaling; layout: 'NCHW' or 'NHWC' of the produced batch; channels: 3 or 1."""

    size: tuple[int, int] | None = None
    channel_order: str = "RGB"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: str = "NCHW"
    channels: int = 3

    def __post_init__(self):
        if isinstance(self.scale, str):
            if self.scale not in _SCALES:
                raise OptionError(f"scale must be a number or one of {list(_SCALES)}; got {self.scale!r}")
            self.scale = _SCALES[self.scale]
        self.scale = float(self.scale)
        if self.size is not None:
            size = (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)
            if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size):
                raise OptionError(f"size must be (H, W) positive ints, an int, or None; got {self.size!r}")
            self.size = (int(size[0]), int(size[1]))
        self.channel_order = str(self.channel_order).upper()
        if self.channel_order not in ("RGB", "BGR"):
            raise OptionError(f"channel_order must be 'RGB' or 'BGR'; got {self.channel_order!r}")
        self.layout = str(self.layout).upper()
        if self.layout not in ("NCHW", "NHWC"):
            raise OptionError(f"layout must be 'NCHW' or 'NHWC'; got {self.layout!r}")
        if self.channels not in (1, 3):
            raise OptionError(f"channels must be 1 (grayscale) or 3 (colour); got {self.channels!r}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            v = (float(v),) * self.channels if np.isscalar(v) else tuple(float(a) for a in v)
            if len(v) not in (1, self.channels):
                raise OptionError(f"{name} needs 1 or {self.channels} values (one per channel); got {len(v)}")
            setattr(self, name, v)
        if any(s == 0 for s in self.std):
            raise OptionError("std must not contain 0")

    # -- constructors ----------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike, **defaults) -> Preprocess:
        """Read a JSON or YAML file of fields (``size: [224, 224]`` or a block list, ``mean:`` ...)."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise InputError(f"cannot read the preprocessing file {p}: {e.strerror}") from None
        data = _parse_json_or_yaml(text, p)
        return cls.from_dict({**defaults, **data})

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise OptionError(f"unknown preprocessing field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def for_adapter(cls, adapter, **given) -> Preprocess:
        """Defaults read from the model's input: its fixed (H, W), layout and channel count."""
        base: dict[str, Any] = {"layout": adapter.layout}
        if adapter.spatial is not None and None not in adapter.spatial:
            base["size"] = tuple(adapter.spatial)
        if adapter.channels == 1:
            base.update(channels=1, mean=(0.0,), std=(1.0,))
        base.update({k: v for k, v in given.items() if v is not None})
        return cls.from_dict(base)

    @classmethod
    def coerce(cls, spec, adapter=None) -> Preprocess:
        """A Preprocess from a Preprocess, a dict, or a file path (defaults from ``adapter``)."""
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, dict):
            return cls.for_adapter(adapter, **spec) if adapter is not None else cls.from_dict(spec)
        if isinstance(spec, (str, os.PathLike)):
            data = _parse_json_or_yaml(Path(spec).read_text(), Path(spec))
            return cls.for_adapter(adapter, **data) if adapter is not None else cls.from_dict(data)
        raise InputError(f"preprocess must be a Preprocess, a dict or a JSON/YAML path; got {type(spec).__name__}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    # -- applying --------------------------------------------------------------------------------
    def load(self, image, max_pixels: int | None = None) -> np.ndarray:
        """One image (path, PIL image or uint8 array) as (H, W, 3) RGB, resized when ``size`` is set.

        uint8, or float32 on the 0-255 scale for files deeper than 8 bits (16-bit, float TIFF):
        see :func:`agnostic_cam.inputs.image_files.read_image`, which also refuses decompression bombs
        (more than ``max_pixels``) with an :class:`~agnostic_cam.errors.InputError`.
        """
        from PIL import Image

        from agnostic_cam.inputs.image_files import read_image, resize_rgb

        if isinstance(image, (str, os.PathLike)):
            arr = read_image(image, max_pixels)
        else:
            if isinstance(image, Image.Image):
                image = image.convert("RGB")
            arr = np.asarray(image)
            if arr.ndim == 2:
                arr = np.repeat(arr[..., None], 3, axis=2)
            if arr.ndim != 3 or arr.shape[2] not in (3, 4):
                raise InputError(f"an image must be (H, W), (H, W, 3) or (H, W, 4); got shape {arr.shape}")
            if arr.dtype != np.uint8:
                raise InputError(f"raw images must be uint8 0-255; got {arr.dtype}. Pass float batches to explain() "
                                 "directly")
            arr = arr[..., :3]
        if self.size is not None:
            arr = resize_rgb(arr, self.size)
        return np.ascontiguousarray(arr)

    def to_batch(self, rgb: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """RGB images (list of (H, W, 3), uint8 or float 0-255) -> float32 batch in ``layout``."""
        shapes = {a.shape for a in rgb}
        if len(shapes) != 1:
            raise InputError(f"images have different sizes {sorted(s[:2] for s in shapes)}; set a resize rule (size=)")
        x = np.stack(rgb).astype(np.float32)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        if self.channels == 1:
            x = x @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
        x = (x * self.scale - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(L.to_chw(x, L.NHWC) if self.layout == L.NCHW else x, dtype=np.float32)

    def __call__(self, images) -> np.ndarray:
        """Paths / PIL images / uint8 arrays (one or a list) -> float32 batch."""
        if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim == 3):
            images = [images]
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        return self.to_batch([self.load(im) for im in images])


def _parse_json_or_yaml(text: str, path: Path) -> dict:
    """A JSON or YAML (PyYAML ``safe_load``: block lists, flow lists, comments) mapping of fields."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise InputError(f"{where}: not valid YAML/JSON ({getattr(e, 'problem', None) or e}); expected 'key: value' "
                         "lines, e.g. 'size: [224, 224]'") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: the preprocessing file must hold 'key: value' fields (a mapping), got "
                         f"{type(data).__name__} {str(data)[:40]!r}")
    return data
