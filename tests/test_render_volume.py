"""Pictures of volume and video explanations (heatmaps (N, D, H, W)), checked pixel by pixel.

Explanations are built by hand; the input is a constant grey volume, so every overlay pixel is
``(1 - alpha) * 0.5 + alpha * jet(heat)``, computed here with matplotlib's colormap. The volume is
not cubic (D=8, H=12, W=10), so a swapped axis shows.
"""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from agnostic_cam import Explanation
from agnostic_cam.errors import InputError, OptionError

D, H, W, GAP = 8, 12, 10, 2


def colour(v: float, alpha: float = 0.5) -> np.ndarray:
    """The overlay pixel of heat ``v`` over grey 0.5."""
    rgb = np.asarray(colormaps["jet"](v)[:3])
    return np.round(((1 - alpha) * 0.5 + alpha * rgb) * 255).astype(np.uint8)


HOT, COLD, WHITE = colour(1.0), colour(0.0), np.array([255, 255, 255], np.uint8)


def explanation(heat: np.ndarray, kind: str | None = None) -> Explanation:
    n = heat.shape[0]
    return Explanation(heatmap=heat.astype(np.float32), raw=heat.astype(np.float32), targets=np.arange(n),
                       scores=np.ones(n, np.float32), method="gradcam", layer="layer4", layer_used=True,
                       meta={} if kind is None else {"kind": kind})


def grey(shape) -> np.ndarray:
    return np.full(shape, 0.5, np.float32)


def tile(pic: np.ndarray, r: int, j: int, th: int, tw: int) -> np.ndarray:
    """Tile (r, j) of a slice grid: cells of (max(H, D), max(W, H)) pixels, ``GAP`` apart."""
    ch, cw = max(H, D), max(W, H)
    return pic[r * (ch + GAP):r * (ch + GAP) + th, j * (cw + GAP):j * (cw + GAP) + tw]


def test_volume_hot_in_one_slice_shows_in_that_tile_and_that_row_of_the_others():
    k = 5
    heat = np.zeros((1, D, H, W))
    heat[0, k] = 1.0
    exp = explanation(heat, "volume")
    pic = exp.picture(grey((1, 1, D, H, W)), count=4)[0]
    idx = np.floor((np.arange(4) + 0.5) * D / 4).astype(int)  # slices 1, 3, 5, 7 (bin centres)
    assert idx.tolist() == [1, 3, 5, 7]
    ch, cw = max(H, D), max(W, H)
    assert pic.shape == (3 * ch + 2 * GAP, 4 * cw + 3 * GAP, 3)
    for j, d in enumerate(idx):  # axial: only the tile of slice k is hot
        np.testing.assert_array_equal(tile(pic, 0, j, H, W), np.broadcast_to(HOT if d == k else COLD, (H, W, 3)))
    for r, tw in ((1, W), (2, H)):  # coronal (D x W) and sagittal (D x H) tiles: depth row k is hot
        for j in range(4):
            t = tile(pic, r, j, D, tw)
            np.testing.assert_array_equal(t[k], np.broadcast_to(HOT, (tw, 3)))
            np.testing.assert_array_equal(np.delete(t, k, axis=0), np.broadcast_to(COLD, (D - 1, tw, 3)))
    mask = np.ones(pic.shape[:2], bool)  # everything outside the tiles is white
    for r, (th, tw) in enumerate(((H, W), (D, W), (D, H))):
        for j in range(4):
            mask[r * (ch + GAP):r * (ch + GAP) + th, j * (cw + GAP):j * (cw + GAP) + tw] = False
    assert (pic[mask] == WHITE).all()


def test_volume_coronal_and_sagittal_tiles_follow_their_axes():
    heat = np.zeros((1, D, H, W))
    heat[0, :, 4, :] = 1.0  # row h=4 of every slice: the coronal slice h=4 is all hot
    pic = explanation(heat).picture(grey((1, D, H, W)), kind="volume", count=H)[0]  # every index of each axis
    np.testing.assert_array_equal(tile(pic, 0, 0, H, W)[4], np.broadcast_to(HOT, (W, 3)))  # axial d=0: row 4 hot
    assert (tile(pic, 0, 0, H, W)[5] == COLD).all()
    for j in range(H):  # coronal tiles h = 0..H-1: only h=4 hot
        np.testing.assert_array_equal(tile(pic, 1, j, D, W), np.broadcast_to(HOT if j == 4 else COLD, (D, W, 3)))
    for j in range(W):  # sagittal tiles (D x H): column 4 (height) hot
        t = tile(pic, 2, j, D, H)
        assert (t[:, 4] == HOT).all() and (np.delete(t, 4, axis=1) == COLD).all()


def test_overlay_is_each_slice_over_the_inputs_slice():
    rng = np.random.default_rng(0)
    heat = rng.random((2, D, H, W)).astype(np.float32)
    x = rng.random((2, 1, D, H, W)).astype(np.float32)  # in [0, 1]: shown as it is
    exp = explanation(heat, "volume")
    over = exp.overlay(x)
    assert over.shape == (2, D, H, W, 3)
    for d in (0, 3, D - 1):
        flat = explanation(heat[:, d]).overlay(x[:, :, d])  # the 2-D overlay of slice d
        np.testing.assert_array_equal(over[:, d], flat)
    channels_last = np.repeat(x.transpose(0, 2, 3, 4, 1), 3, axis=-1)
    np.testing.assert_array_equal(exp.overlay(channels_last), over)
    np.testing.assert_array_equal(exp.overlay(x[:, 0]), over)  # (N, D, H, W) grey
    with pytest.raises(InputError, match="do not fit"):
        exp.overlay(x[:, :, :4])
    with pytest.raises(InputError, match="one input per row"):
        exp.overlay(x[:1])


def moving_square(t_frames: int = 5) -> np.ndarray:
    heat = np.zeros((1, t_frames, H, W))
    for t in range(t_frames):
        heat[0, t, 2:5, t:t + 3] = 1.0
    return heat


def test_video_frame_strip_and_gif_follow_the_frames(tmp_path):
    heat = moving_square()
    exp = explanation(heat, "video")
    x = grey((1, 3, 5, H, W))
    strip = exp.picture(x)[0]
    assert strip.shape == (H, 5 * W + 4 * GAP, 3)
    for t in range(5):
        f = strip[:, t * (W + GAP):t * (W + GAP) + W]
        expect = np.where(heat[0, t][..., None] == 1, HOT, COLD)
        np.testing.assert_array_equal(f, expect)
        if t < 4:
            assert (strip[:, t * (W + GAP) + W:(t + 1) * (W + GAP)] == WHITE).all()
    assert exp.picture(x, count=2)[0].shape == (H, 2 * W + GAP, 3)  # frames 1 and 3
    long = explanation(np.zeros((1, 40, H, W)), "video").picture(grey((1, 40, H, W)))  # at most 16 frames by default
    assert long.shape[2] == 16 * W + 15 * GAP
    path = exp.save(tmp_path / "clip.gif", x)
    with Image.open(path) as gif:
        assert gif.n_frames == 5
        for t in range(5):
            gif.seek(t)
            f = np.asarray(gif.convert("RGB")).astype(int)
            assert f.shape == (H, W, 3)
            hot = heat[0, t] == 1  # GIF keeps 256 colours: red beats blue where the map is hot, blue elsewhere
            assert (f[hot, 0] > f[hot, 2] + 60).all() and (f[~hot, 2] > f[~hot, 0] + 60).all()


def test_kind_is_asked_for_never_guessed(tmp_path):
    heat = moving_square()
    x = grey((1, 3, 5, H, W))
    with pytest.raises(OptionError, match="kind='volume'.*kind='video'"):
        explanation(heat).picture(x)
    with pytest.raises(OptionError, match="kind='volume'"):
        explanation(heat).save(tmp_path / "x.png", x)
    with pytest.raises(OptionError, match="got 'movie'"):
        explanation(heat).picture(x, kind="movie")
    assert explanation(heat, "video").picture(x, kind="volume").shape[1] > H  # the argument wins over meta
    with pytest.raises(InputError, match="2-D maps as .png"):
        explanation(np.zeros((1, H, W))).save(tmp_path / "x.gif", grey((1, 3, H, W)))


def test_saved_png_figures_open(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.random((2, 3, D, H, W)).astype(np.float32)
    heat = rng.random((2, D, H, W))
    assert explanation(heat, "volume").figure(x).axes  # figure() draws the slice grids too
    for kind in ("volume", "video"):
        path = explanation(heat, kind).save(tmp_path / f"{kind}.png", x)
        with Image.open(path) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    flat = explanation(rng.random((2, H, W)))  # 2-D: the picture is the overlay, unchanged
    np.testing.assert_array_equal(flat.picture(x[:, :, 0]), flat.overlay(x[:, :, 0]))


def test_multilabel_rows_of_a_volume_use_their_images():
    rng = np.random.default_rng(2)
    x = rng.random((2, 1, D, H, W)).astype(np.float32)
    heat = rng.random((3, D, H, W)).astype(np.float32)
    exp = explanation(heat, "volume")
    exp.image_index = np.array([0, 0, 1])
    over = exp.overlay(x)
    np.testing.assert_array_equal(over[2], explanation(heat[2:], "volume").overlay(x[1:])[0])
    np.testing.assert_array_equal(over[1], explanation(heat[1:2], "volume").overlay(x[:1])[0])
