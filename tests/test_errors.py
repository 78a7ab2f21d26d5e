"""Bad input gets a clear error that names the problem and the fix."""
import numpy as np
import pytest

from agnostic_cam import Explainer


# one explainer for the module: every test below only makes calls that are refused, so nothing is shared but the export
@pytest.fixture(scope="module")
def ex(resnet18):
    return Explainer.from_torch(resnet18, "layer4", input_shape=(3, 64, 64), progress=False)


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)


def test_unknown_layer_lists_closest_names(resnet18):
    with pytest.raises(ValueError, match=r"no layer named 'layer5'.*'layer4'"):
        Explainer.from_torch(resnet18, "layer5")
    with pytest.raises(ValueError, match=r"'layer4\.1\.conv2'"):
        Explainer.from_torch(resnet18, "layer4.1.cnv2")


def test_module_not_in_model(torch, resnet18):
    with pytest.raises(ValueError, match="not part of the model"):
        Explainer.from_torch(resnet18, torch.nn.Conv2d(3, 3, 1))


def test_module_object_accepted(resnet18):
    assert Explainer.from_torch(resnet18, resnet18.layer3).layer == "layer3"


def test_layer_that_is_not_spatial(resnet18):
    with pytest.raises(ValueError, match=r"'fc' outputs shape \(1, 1000\).*a layer to explain is \(N, C, h, w\).*'layer4'"):
        Explainer.from_torch(resnet18, "fc", input_shape=(3, 64, 64))
    ex = Explainer.from_torch(resnet18, "avgpool")  # checked at the first call without input_shape
    for method in ("scorecam", "gradcam"):
        with pytest.raises(ValueError, match=r"'avgpool' outputs shape \(1, 512, 1, 1\): a 1x1 map has no spatial"):
            ex.explain(np.zeros((1, 3, 64, 64), np.float32), method)
    with pytest.raises(ValueError, match="1x1 map.*larger input images"):
        Explainer.from_torch(resnet18, "layer4", input_shape=(3, 32, 32))


def test_wrong_rank(ex, x):
    with pytest.raises(ValueError, match=r"rank-4 batch \(N, C, H, W\).*images\[None\]"):
        ex.explain(x[0])
    with pytest.raises(ValueError, match="rank-4"):
        ex.explain(x[None])


def test_wrong_channels_and_layout(ex, x):
    with pytest.raises(ValueError, match=r"look channels-last \(NHWC\).*transpose\(0, 3, 1, 2\)"):
        ex.explain(x.transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match="expects 3 channels"):
        ex.explain(np.zeros((1, 4, 64, 64), np.float32))


def test_non_float_input(ex):
    with pytest.raises(TypeError, match=r"floating point \(got uint8\).*astype\(np.float32\) / 255"):
        ex.explain(np.zeros((1, 3, 64, 64), np.uint8))


def test_nan_and_inf(ex, x):
    x[0, 0, 0, 0] = np.nan
    x[1, 1, 1, 1] = np.inf
    with pytest.raises(ValueError, match="2 NaN or Inf"):
        ex.explain(x)


def test_class_index_out_of_range(ex, x):
    with pytest.raises(ValueError, match=r"index 1000 is out of range.*1000 outputs.*0\.\.999"):
        ex.explain(x, target=1000)
    with pytest.raises(ValueError, match="out of range"):
        ex.explain(x, "scorecam", target=[0, -1])


def test_target_length_mismatch(ex, x):
    with pytest.raises(ValueError, match="3 class indices but the batch has 2 images"):
        ex.explain(x, target=[1, 2, 3])


def test_bad_target_types(ex, x):
    with pytest.raises(TypeError, match="target must be"):
        ex.explain(x, target="cat")
    with pytest.raises(TypeError, match="target must be"):
        ex.explain(x, target=[0.5, 1.5])


def test_unknown_method_lists_known(ex, x):
    with pytest.raises(ValueError, match=r"unknown method 'gradcam\+'.*Did you mean .*'gradcam'.*Known methods:.*scorecam"):
        ex.explain(x, "gradcam+")


def test_unknown_method_option(ex, x):
    with pytest.raises(TypeError, match=r"'scorecam' got unknown option\(s\) \['batchsize'\].*batch_size"):
        ex.explain(x, "scorecam", batchsize=4)


def test_wrong_model_and_shape_types(torch):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        Explainer.from_torch(lambda x: x, "layer4")
    from torch import nn

    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"input_shape is the shape of one image \(C, H, W\)"):
        Explainer.from_torch(m, "0", input_shape=(1, 3, 8, 8))
    with pytest.raises(ValueError, match="model failed on the input batch of shape"):
        Explainer.from_torch(m, "0", input_shape=(5, 8, 8))


def test_output_logits_needs_a_softmax(resnet18):
    with pytest.raises(ValueError, match="output='pre_softmax' needs a model whose last module is nn.Softmax"):
        Explainer.from_torch(resnet18, "layer4", output="pre_softmax")
    # 'logits' is also a key of hub outputs: on a model with neither, refused when the explainer is built
    with pytest.raises(ValueError, match="output='logits' selects the 'logits' key .* needs no output= "):
        Explainer.from_torch(resnet18, "layer4", output="logits")
