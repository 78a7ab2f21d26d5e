"""Preprocessing spec: NumPy reference of each step, files (JSON / flat YAML), defaults from the model."""
import numpy as np
import pytest
from PIL import Image

from agnostic_cam import Explainer
from agnostic_cam.inputs.preprocess import Preprocess


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, size=(6, 5, 3), dtype=np.uint8)


def test_steps_match_numpy_reference(rgb):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    p = Preprocess(channel_order="BGR", scale="0-1", mean=mean, std=std, layout="NCHW")
    got = p(rgb)
    ref = ((rgb[..., ::-1].astype(np.float32) / 255 - np.array(mean)) / np.array(std)).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32 and got.shape == (1, 3, 6, 5)
    nhwc = Preprocess(scale="0-255", layout="NHWC")([rgb, rgb])
    np.testing.assert_array_equal(nhwc, np.stack([rgb, rgb]).astype(np.float32))


def test_resize_and_files(rgb, tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(rgb).save(path)
    p = Preprocess(size=(4, 3), layout="NHWC", scale=1.0)
    ref = np.asarray(Image.fromarray(rgb).resize((3, 4), Image.BILINEAR)).astype(np.float32)[None]
    np.testing.assert_array_equal(p(path), ref)
    np.testing.assert_array_equal(p([Image.open(path)]), ref)
    with pytest.raises(ValueError, match="different sizes.*size="):
        Preprocess()([rgb, rgb[:4]])
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read image"):
        p(bad)


def test_spec_from_json_and_yaml(tmp_path):
    (tmp_path / "p.json").write_text('{"size": [8, 8], "channel_order": "bgr", "mean": [1, 2, 3], "std": 2}')
    (tmp_path / "p.yaml").write_text("# model card\nsize: [8, 8]\nchannel_order: BGR\nmean: [1, 2, 3]\nstd: 2\n")
    a, b = Preprocess.from_file(tmp_path / "p.json"), Preprocess.from_file(tmp_path / "p.yaml")
    assert a == b and a.size == (8, 8) and a.channel_order == "BGR" and a.std == (2.0, 2.0, 2.0)
    (tmp_path / "bad.yaml").write_text("size [8, 8]\n")
    with pytest.raises(ValueError, match="bad.yaml: the preprocessing file must hold 'key: value' fields"):
        Preprocess.from_file(tmp_path / "bad.yaml")
    (tmp_path / "block.yaml").write_text("size:\n  - 8\n  - 8\nmean:\n  - 1\n  - 2\n  - 3\nstd: 2  # comment\n")
    c = Preprocess.from_file(tmp_path / "block.yaml")  # block lists (the flat parser failed on these)
    assert (c.size, c.mean, c.std) == (a.size, a.mean, a.std)
    (tmp_path / "broken.yaml").write_text("size: [8, 8\nmean: 1\n")
    with pytest.raises(ValueError, match=r"broken.yaml:\d+: not valid YAML"):
        Preprocess.from_file(tmp_path / "broken.yaml")
    (tmp_path / "unk.json").write_text('{"sise": 8}')
    with pytest.raises(ValueError, match=r"unknown preprocessing field\(s\) \['sise'\]"):
        Preprocess.from_file(tmp_path / "unk.json")
    with pytest.raises(ValueError, match="std must not contain 0"):
        Preprocess(std=(1, 0, 1))
    with pytest.raises(ValueError, match="scale must be"):
        Preprocess(scale="0-100")


def test_defaults_from_model_and_raw_images_in_explain(torch, tmp_path, rgb):
    from onnx_helpers import export_torch, torch_net

    ex = Explainer.from_onnx(export_torch(torch_net(), 16), preprocess={"mean": [0.5] * 3}, progress=False)
    assert ex.preprocess.size == (16, 16) and ex.preprocess.layout == "NCHW" and ex.preprocess.mean == (0.5,) * 3
    path = tmp_path / "img.png"
    Image.fromarray(rgb).save(path)
    a = ex.explain([path], "scorecam", target=1)                  # a path, preprocessed by the spec
    b = ex.explain(ex.preprocess(path), "scorecam", target=1)     # the float batch it stands for
    np.testing.assert_array_equal(a.heatmap, b.heatmap)
    assert a.heatmap.shape == (1, 16, 16)
