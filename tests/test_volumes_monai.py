"""A MONAI 3-D network (test-only dependency, random seeded weights) explained from ``from_torch`` with the
target layer picked automatically.

Reduced input (stated): two 1 x 48 x 48 x 48 volumes (MONAI's ResNet-10 is used on 1 x 96..224 per side in
medical work); its ``layer4`` is then (512, 3, 3, 3), the last map with more than one position.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pgc = pytest.importorskip("pytorch_grad_cam")

from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from agnostic_cam import Explainer  # noqa: E402


def test_monai_resnet3d_auto_layer_equals_pytorch_grad_cam():
    # imported here, not at collection: MONAI takes ~4 s to import, paid only by the process running this test
    monai_nets = pytest.importorskip("monai.networks.nets")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = monai_nets.resnet10(spatial_dims=3, n_input_channels=1, num_classes=3).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 1, 48, 48, 48, generator=torch.Generator().manual_seed(1)).numpy()
    ex = Explainer.from_torch(model, progress=False)  # no layer, no input size: picked at the volumes' own size
    exp = ex.explain(x, "gradcam", target=1)
    assert ex.layer == "layer4"
    assert exp.raw.shape == (2, 3, 3, 3) and exp.heatmap.shape == (2, 48, 48, 48) and not exp.degenerate.any()
    with pgc.GradCAM(model, [model.layer4]) as cam:
        targets = [ClassifierOutputTarget(1)] * 2
        xt = torch.from_numpy(x)
        cam(xt, targets)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        raw = cam.get_cam_image(xt, model.layer4, targets, acts, grads, False)
    scale = np.abs(raw).max()
    np.testing.assert_allclose(exp.raw / scale, raw / scale, atol=1e-4)
    assert not model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
