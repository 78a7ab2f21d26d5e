"""Reading image files by their real value range, with failures that are the image's own.

:func:`read_image` returns (H, W, 3) RGB: uint8 for 8-bit files, float32 on the same 0-255 scale
for deeper ones (16-bit PNG/TIFF, 32-bit int, float TIFF), so downstream scaling (``x * scale``)
is the same for every file:

- 16-bit (``I;16*``, and ``I`` from PNG): 0-65535 -> 0-255; 32-bit int: 0-(2**31-1) -> 0-255.
- float (``F``): 0-1 -> 0-255; values outside [0, 1] or non-finite are refused (no silent clipping).
- palette, CMYK, YCbCr, LAB, bilevel: converted to RGB by Pillow; alpha is dropped (as
  ``Image.convert("RGB")`` and the usual training pipelines do), grey is repeated to 3 channels.
- More pixels than ``max_pixels`` (default: Pillow's ``Image.MAX_IMAGE_PIXELS``, ~89 M): refused
  before decoding (decompression bombs), as is any file Pillow cannot decode.

Every refusal is an :class:`~agnostic_cam.errors.InputError` naming the file: the audit lists the
image as failed and goes on.
"""
from __future__ import annotations

import os

import numpy as np

from agnostic_cam.errors import InputError

_DEEP_INT = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0}


class _Named:
    """Bytes of a file with its name, for messages."""

    def __init__(self, data: bytes, name: str):
        self.data, self.name = data, name


def _name(path) -> str:
    if isinstance(path, _Named):
        return path.name
    return os.fsdecode(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def read_image(path: str | os.PathLike | bytes, max_pixels: int | None = None, name: str | None = None) -> np.ndarray:
    """(H, W, 3) RGB of the file at ``path`` (or of its ``bytes``; ``name`` then names it in
    messages): uint8, or float32 in 0-255 for deeper files."""
    import io

    from PIL import Image

    if isinstance(path, (bytes, bytearray)):
        path = _Named(path, name or "<bytes>")

    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    try:
        with Image.open(io.BytesIO(path.data) if isinstance(path, _Named) else path) as im:
            w, h = im.size
            if limit and w * h > limit:
                raise InputError(f"image {_name(path)!r} is {w}x{h} = {w * h / 1e6:.0f} M pixels, over the limit of "
                                 f"{limit / 1e6:.0f} M (a decompression bomb?); raise max_pixels (--max-pixels) to "
                                 "read it")
            if w == 0 or h == 0:
                raise InputError(f"image {_name(path)!r} has no pixels ({w}x{h})")
            im.load()
            return _to_rgb(im, path)
    except InputError:
        raise
    except Image.DecompressionBombError as e:
        raise InputError(f"image {_name(path)!r} refused as a decompression bomb: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:  # Pillow's ways of saying "cannot decode"
        raise InputError(f"cannot read image {_name(path)!r}: {type(e).__name__}: {e}") from None
    except ImportError as e:  # another package's hook on Image.open (ultralytics: pi_heif) tried a missing plugin
        raise InputError(f"cannot read image {_name(path)!r}: Pillow cannot decode it, and a plugin hook that another "
                         f"package installed on PIL.Image.open failed ({type(e).__name__}: {e})") from None


def _to_rgb(im, path) -> np.ndarray:
    mode = im.mode
    if mode in _DEEP_INT or mode == "I":
        arr = np.asarray(im).astype(np.float64)
        top = _DEEP_INT.get(mode) or (65535.0 if (im.format == "PNG" or arr.max(initial=0) <= 65535) else 2.0**31 - 1)
        if arr.min(initial=0) < 0:
            raise InputError(f"image {_name(path)!r} ({mode}) has negative values; only unsigned images are read")
        return _grey3(arr * (255.0 / top))
    if mode == "F":
        arr = np.asarray(im, np.float64)
        if not np.isfinite(arr).all():
            raise InputError(f"image {_name(path)!r} is a float image with NaN or Inf values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 1:
            raise InputError(f"image {_name(path)!r} is a float image with values in [{lo:.4g}, {hi:.4g}]; float "
                             "images are read as 0-1. Rescale it to 0-1 (or save it as 8/16-bit)")
        return _grey3(arr * 255.0)
    if mode in ("RGB",):
        return np.ascontiguousarray(np.asarray(im))
    if mode in ("L", "1"):
        return np.repeat(np.asarray(im.convert("L"))[..., None], 3, axis=2)
    if mode in ("LA", "La"):
        return np.repeat(np.asarray(im.getchannel(0))[..., None], 3, axis=2)
    return np.ascontiguousarray(np.asarray(im.convert("RGB")))  # P, PA, RGBA, RGBa, CMYK, YCbCr, LAB, HSV, ...


def _grey3(arr: np.ndarray) -> np.ndarray:
    arr = arr.astype(np.float32)
    return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr[..., :3])


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (H, W, 3) uint8 or float32 to ``size`` (H, W), keeping the dtype."""
    from PIL import Image

    if rgb.shape[:2] == tuple(size):
        return rgb
    if rgb.dtype == np.uint8:
        return np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.BILINEAR))
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., c], np.float32), "F")
                        .resize((size[1], size[0]), Image.BILINEAR)) for c in range(rgb.shape[2])]
    return np.ascontiguousarray(np.stack(chans, axis=2), dtype=np.float32)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 for display (float 0-255 rounded and clipped)."""
    if rgb.dtype == np.uint8:
        return rgb
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
