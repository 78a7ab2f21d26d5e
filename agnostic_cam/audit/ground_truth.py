"""Ground-truth objects for the audit (``--ground-truth PATH``), in four formats, matched to the
images by file name (the stem, without folders or extension):

- **COCO JSON** (a ``.json`` file): ``images`` (``file_name``, ``width``, ``height``) and
  ``annotations`` with ``segmentation`` (polygons, or RLE: ``counts`` a list or COCO's compressed
  string) or, without one, ``bbox`` [x, y, w, h];
- **YOLO** (a folder of ``.txt``): ``class cx cy w h`` per line, normalised to [0, 1], or a
  YOLO-seg polygon ``class x1 y1 x2 y2 ...``;
- **Pascal VOC** (a folder of ``.xml``): ``object/bndbox`` ``xmin ymin xmax ymax``, 1-based and inclusive;
- **mask images** (a folder of PNG/BMP/TIFF/JPEG): binary (0 and one other value: the object),
  or one class per palette index / grey value (every value but 0 and VOC's 255 'void' border).

An image's object is the union of its annotated objects; pixel (r, c) belongs to a polygon when its
centre (c + 0.5, r + 0.5) lies inside, so a box and the same rectangle as a polygon or a mask cover
the same pixels. :meth:`GroundTruth.lookup` gives the mask at the image file's own size, or the
reason there is none ("no label", "unreadable label"), image by image: a label is never guessed.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from agnostic_cam.errors import InputError, OptionError

MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".gif")


def polygon_mask(xy, h: int, w: int) -> np.ndarray:
    """(h, w) bool: pixels whose centre lies inside the polygon ``xy`` [x1, y1, x2, y2, ...] (even-odd rule)."""
    p = np.asarray(xy, np.float64).reshape(-1, 2)
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    inside = np.zeros((h, w), bool)
    for (x0, y0), (x1, y1) in zip(p, np.roll(p, -1, axis=0)):
        if y0 == y1:
            continue
        cross = (ys >= min(y0, y1)) & (ys < max(y0, y1))
        xc = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
        inside ^= cross & (xs < xc)
    return inside


def box_mask(x0: float, y0: float, x1: float, y1: float, h: int, w: int) -> np.ndarray:
    """(h, w) bool: pixels whose centre lies in the box [x0, x1) x [y0, y1) (image pixels)."""
    return polygon_mask([x0, y0, x1, y0, x1, y1, x0, y1], h, w)


def rle_counts(counts) -> list[int]:
    """COCO RLE run lengths: a list as is, or COCO's compressed string decoded."""
    if not isinstance(counts, str):
        return [int(c) for c in counts]
    out: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def rle_mask(rle: dict, h: int, w: int) -> np.ndarray:
    """(h, w) bool from COCO RLE (runs of 0 then 1 alternating, column-major)."""
    hh, ww = rle.get("size", (h, w))
    flat = np.zeros(hh * ww, bool)
    pos, val = 0, False
    for c in rle_counts(rle["counts"]):
        flat[pos:pos + c] = val
        pos += c
        val = not val
    return flat.reshape((ww, hh)).T


def resize_nearest(mask: np.ndarray, hw: tuple) -> np.ndarray:
    """``mask`` (h, w) resized to ``hw`` by the nearest pixel centre."""
    h, w = mask.shape
    if (h, w) == tuple(hw):
        return mask
    r = np.minimum(((np.arange(hw[0]) + 0.5) * h / hw[0]).astype(int), h - 1)
    c = np.minimum(((np.arange(hw[1]) + 0.5) * w / hw[1]).astype(int), w - 1)
    return mask[r][:, c]


class GroundTruth:
    """Object masks by image stem from ``path`` (COCO JSON file, or a YOLO / VOC / mask-image folder)."""

    def __init__(self, path):
        self.path = Path(path)
        if self.path.is_file() and self.path.suffix.lower() == ".json":
            self.format, self._coco = "coco", self._read_coco()
        elif self.path.is_dir():
            files = [f for f in self.path.iterdir() if f.is_file()]
            kinds = {"voc": [f for f in files if f.suffix.lower() == ".xml"],
                     "yolo": [f for f in files if f.suffix.lower() == ".txt" and f.name != "classes.txt"],
                     "masks": [f for f in files if f.suffix.lower() in MASK_SUFFIXES]}
            self.format = next((k for k, v in kinds.items() if v), None)
            if self.format is None:
                raise OptionError(f"--ground-truth {path}: the folder has no .xml (Pascal VOC), .txt (YOLO) or mask "
                                  "images; give one of those folders or a COCO .json file")
            self._files = {f.stem: f for f in kinds[self.format]}
        else:
            raise OptionError(f"--ground-truth {path} is neither a COCO .json file nor a folder of YOLO .txt, "
                              "Pascal VOC .xml or mask images")

    def _read_coco(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
            by_id = {im["id"]: {"stem": Path(str(im["file_name"])).stem, "hw": (int(im["height"]), int(im["width"])),
                                "anns": []} for im in data["images"]}
            for a in data.get("annotations", []):
                by_id[a["image_id"]]["anns"].append(a)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise OptionError(f"cannot read the COCO file --ground-truth {self.path}: {type(e).__name__}: {e}. "
                              "It needs 'images' (id, file_name, width, height) and 'annotations'") from None
        return {v["stem"]: v for v in by_id.values()}

    def stems(self) -> set[str]:
        return set(self._coco) if self.format == "coco" else set(self._files)

    def lookup(self, name: str, size: tuple[int, int]) -> tuple[np.ndarray | None, str | None]:
        """(object mask (H, W) at the image's ``size``, None) or (None, why there is none)."""
        stem = Path(name).stem
        if stem not in self.stems():
            return None, f"no label for {stem!r} in {self.path.name} ({self.format})"
        try:
            mask = getattr(self, "_mask_" + self.format)(stem, size)
        except Exception as e:  # noqa: BLE001 - a broken label fails its image only, with the reason
            return None, f"unreadable label for {stem!r} ({self.format}): {type(e).__name__}: {e}"
        return resize_nearest(mask, size), None

    def boxes(self, name: str, size: tuple[int, int]) -> tuple[list[tuple] | None, str | None]:
        """([(class, x0, y0, x1, y1), ...] in the image's pixels at its ``size``, None) or (None, why
        there are none). The class is the label's own: YOLO's index, COCO's ``category_id``, VOC's
        ``name`` (a str). A polygon or mask object counts by its bounding box."""
        if self.format == "masks":
            return None, "mask images hold no boxes (use COCO, YOLO or Pascal VOC labels)"
        stem = Path(name).stem
        if stem not in self.stems():
            return None, f"no label for {stem!r} in {self.path.name} ({self.format})"
        try:
            return getattr(self, "_boxes_" + self.format)(stem, size), None
        except Exception as e:  # noqa: BLE001 - a broken label fails its image only, with the reason
            return None, f"unreadable label for {stem!r} ({self.format}): {type(e).__name__}: {e}"

    def _boxes_coco(self, stem: str, size) -> list[tuple]:
        im = self._coco[stem]
        sy, sx = size[0] / im["hw"][0], size[1] / im["hw"][1]
        out = []
        for a in im["anns"]:
            if "bbox" in a:
                x, y, bw, bh = (float(v) for v in a["bbox"])
            else:
                ys, xs = np.nonzero(self._mask_coco_one(a, *im["hw"]))
                x, y, bw, bh = xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()
            out.append((int(a["category_id"]), x * sx, y * sy, (x + bw) * sx, (y + bh) * sy))
        return out

    def _yolo_lines(self, stem: str, size):
        """(class, xy) per label line: xy (k, 2) in pixels, the box's two corners or the polygon's points."""
        h, w = size
        for line in self._files[stem].read_text().splitlines():
            v = [float(t) for t in line.split()]
            if not v:
                continue
            if len(v) == 5:
                cx, cy, bw, bh = v[1:]
                yield int(v[0]), "box", np.array([[cx - bw / 2, cy - bh / 2], [cx + bw / 2, cy + bh / 2]]) * [w, h]
            elif len(v) >= 7 and len(v) % 2 == 1:
                yield int(v[0]), "polygon", np.asarray(v[1:]).reshape(-1, 2) * [w, h]
            else:
                raise InputError(f"a line needs 'class cx cy w h' or 'class x1 y1 x2 y2 ...'; got {line!r}")

    def _boxes_yolo(self, stem: str, size) -> list[tuple]:
        return [(c, *map(float, xy.min(0)), *map(float, xy.max(0))) for c, _, xy in self._yolo_lines(stem, size)]

    def _boxes_voc(self, stem: str, size) -> list[tuple]:
        root = ET.parse(self._files[stem]).getroot()
        el = root.find("size")
        h, w = (int(el.findtext("height")), int(el.findtext("width"))) if el is not None else size
        sy, sx = size[0] / h, size[1] / w
        out = []
        for obj in root.iter("object"):
            b = obj.find("bndbox")
            x0, y0, x1, y1 = (float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            out.append(((obj.findtext("name") or "").strip(), (x0 - 1) * sx, (y0 - 1) * sy, x1 * sx, y1 * sy))
        return out

    def _mask_coco_one(self, a: dict, h: int, w: int) -> np.ndarray:
        seg = a.get("segmentation")
        if isinstance(seg, dict):
            return rle_mask(seg, h, w)
        m = np.zeros((h, w), bool)
        for poly in seg or []:
            m |= polygon_mask(poly, h, w)
        return m

    def _mask_coco(self, stem: str, size) -> np.ndarray:
        im = self._coco[stem]
        h, w = im["hw"]
        m = np.zeros((h, w), bool)
        for a in im["anns"]:
            seg = a.get("segmentation")
            if isinstance(seg, dict) or (isinstance(seg, list) and seg):
                m |= self._mask_coco_one(a, h, w)
            else:
                x, y, bw, bh = (float(v) for v in a["bbox"])
                m |= box_mask(x, y, x + bw, y + bh, h, w)
        return m

    def _mask_yolo(self, stem: str, size) -> np.ndarray:
        h, w = size
        m = np.zeros((h, w), bool)
        for _, kind, xy in self._yolo_lines(stem, size):
            m |= box_mask(*xy[0], *xy[1], h, w) if kind == "box" else polygon_mask(xy.ravel(), h, w)
        return m

    def _mask_voc(self, stem: str, size) -> np.ndarray:
        root = ET.parse(self._files[stem]).getroot()
        el = root.find("size")
        h, w = (int(el.findtext("height")), int(el.findtext("width"))) if el is not None else size
        m = np.zeros((h, w), bool)
        for obj in root.iter("object"):
            b = obj.find("bndbox")
            x0, y0, x1, y1 = (float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            m |= box_mask(x0 - 1, y0 - 1, x1, y1, h, w)
        return m

    def _mask_masks(self, stem: str, size) -> np.ndarray:
        from PIL import Image

        with Image.open(self._files[stem]) as im:
            a = np.asarray(im if im.mode in ("P", "L", "1", "I", "I;16") else im.convert("L"))
        values = set(np.unique(a).tolist())
        if values <= {0, 1} or values <= {0, 255} or len(values - {0}) == 1:
            return a != 0  # binary
        return (a != 0) & (a != 255)  # one class per value; 255 is VOC's void border
