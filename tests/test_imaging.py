"""Resizing and normalisation against independent implementations (OpenCV, torch)."""
import numpy as np
import pytest

from agnostic_cam.core.imaging import cam_to_heatmap, minmax, resize_bilinear


@pytest.mark.parametrize("src,dst", [((7, 7), (224, 224)), ((5, 9), (64, 48)), ((16, 16), (8, 8)), ((1, 1), (4, 4))])
def test_resize_matches_opencv_inter_linear(rng, src, dst):
    import cv2  # test-only reference, installed with grad-cam
    maps = rng.normal(size=(3, *src)).astype(np.float32)
    ours = resize_bilinear(maps, dst)
    ref = np.stack([cv2.resize(m, (dst[1], dst[0])) for m in maps])
    np.testing.assert_allclose(ours, ref, atol=2e-6)


@pytest.mark.parametrize("src,dst", [((7, 7), (224, 224)), ((3, 5), (32, 20))])
def test_resize_align_corners_matches_torch(torch, rng, src, dst):
    maps = rng.normal(size=(2, 4, *src)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(maps), size=dst, mode="bilinear", align_corners=True).numpy()
    np.testing.assert_allclose(resize_bilinear(maps, dst, align_corners=True), ref, atol=2e-6)


def test_minmax_and_heatmap_range(rng):
    cam = rng.normal(size=(4, 6, 6)).astype(np.float32)
    cam[1] = 0  # an all-zero map stays zero, no NaN
    heat = cam_to_heatmap(cam, (30, 30))
    assert heat.shape == (4, 30, 30) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    assert np.all(heat[1] == 0)
    m = minmax(cam)
    np.testing.assert_allclose(m.min(axis=(1, 2))[[0, 2, 3]], 0, atol=1e-7)
    np.testing.assert_allclose(m.max(axis=(1, 2))[[0, 2, 3]], 1, atol=1e-5)
