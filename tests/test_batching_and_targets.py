"""A batch with different targets equals one call per image; target forms resolve as documented."""
import numpy as np
import pytest

from agnostic_cam import Explainer

ALL = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam", "ablationcam", "eigencam", "cam"]


@pytest.mark.parametrize("name", ALL)
def test_batch_equals_single_calls(small_cnn, rng, name):
    ex = Explainer.from_torch(small_cnn, "act3", progress=False)
    x = rng.normal(size=(4, 3, 16, 16)).astype(np.float32)
    targets = [4, 0, 2, 1]
    batch = ex.explain(x, name, target=targets)
    for i, t in enumerate(targets):
        single = ex.explain(x[i:i + 1], name, target=t)
        # float32 kernels differ slightly with the batch size (oneDNN picks per shape): ~1e-5 after min-max
        np.testing.assert_allclose(batch.heatmap[i], single.heatmap[0], atol=1e-4)
        np.testing.assert_allclose(batch.raw[i], single.raw[0], rtol=1e-4, atol=1e-5)
        assert batch.targets[i] == single.targets[0] == t
        np.testing.assert_allclose(batch.scores[i], single.scores[0], rtol=1e-5)


def test_target_forms(torch, small_cnn, rng):
    ex = Explainer.from_torch(small_cnn, "act3", progress=False)
    x = rng.normal(size=(3, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        out = small_cnn(torch.from_numpy(x)).numpy()
    top = ex.explain(x, "gradcam", target=None)
    np.testing.assert_array_equal(top.targets, out.argmax(1))
    np.testing.assert_allclose(top.scores, out.max(1), rtol=1e-5)
    same = ex.explain(x, "gradcam", target=2)
    np.testing.assert_array_equal(same.targets, [2, 2, 2])
    np.testing.assert_allclose(same.scores, out[:, 2], rtol=1e-5)
    # a callable target: the difference of two logits, for gradient and forward methods alike
    diff = ex.explain(x, "gradcam", target=lambda o: o[:, 1] - o[:, 3])
    assert diff.targets is None
    np.testing.assert_allclose(diff.scores, out[:, 1] - out[:, 3], rtol=1e-4, atol=1e-5)
    # Grad-CAM is linear in the score: d(o1 - o3) = d(o1) - d(o3)
    r1, r3 = ex.explain(x, "gradcam", target=1).raw, ex.explain(x, "gradcam", target=3).raw
    np.testing.assert_allclose(diff.raw, r1 - r3, rtol=1e-4, atol=1e-5)
    sc = ex.explain(x, "scorecam", target=lambda o: o[:, 1] - o[:, 3])
    np.testing.assert_allclose(sc.scores, out[:, 1] - out[:, 3], rtol=1e-4, atol=1e-4)


def test_torch_tensor_input_equals_numpy(torch, small_cnn, rng):
    ex = Explainer.from_torch(small_cnn, "act3", progress=False)
    x = rng.normal(size=(2, 3, 16, 16)).astype(np.float32)
    a = ex.explain(x, "gradcam")
    b = ex.explain(torch.from_numpy(x), "gradcam")
    np.testing.assert_array_equal(a.heatmap, b.heatmap)
    c = ex.explain(x.astype(np.float64), "gradcam")
    np.testing.assert_allclose(a.heatmap, c.heatmap, atol=1e-6)
