"""DenseNet121 at ``features``: who is right when pytorch-grad-cam and we disagree.

torchvision's DenseNet runs ``F.relu(features, inplace=True)`` on the output of ``features``.
pytorch-grad-cam keeps that output tensor itself (``output.cpu().detach()`` shares its storage on
the CPU), so the in-place ReLU overwrites the activations it later weighs: its Grad-CAM is
``relu(sum_c w_c relu(A_c))`` instead of ``relu(sum_c w_c A_c)``. A hand computation (the
activation A computed by calling ``model.features`` directly, the rest of the forward written
out, gradients by autograd) and Captum's ``LayerGradCam`` (a third implementation) agree with
us; pytorch-grad-cam agrees with the hand computation only when A is replaced by relu(A).
Reduced: 64 px input, two images, random seeded weights.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from agnostic_cam import Explainer  # noqa: E402
from agnostic_cam.core.imaging import cam_to_heatmap  # noqa: E402


def hand_gradcam(model, x, targets, relu_acts=False):
    """Grad-CAM (N, h, w) at ``features`` by hand: A = model.features(x), then torchvision's head."""
    a = model.features(torch.from_numpy(x)).detach().requires_grad_(True)
    out = model.classifier(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(torch.relu(a), 1), 1))
    score = out[torch.arange(len(targets)), torch.as_tensor(targets)].sum()
    (g,) = torch.autograd.grad(score, a)
    acts = torch.relu(a) if relu_acts else a
    cam = (g.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1)
    return torch.relu(cam).detach().numpy()


def test_densenet121_features_gradcam_is_the_hand_computation():
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = torchvision.models.densenet121(weights=None).eval()
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    targets = [3, 7]
    size = (64, 64)
    hand = cam_to_heatmap(hand_gradcam(model, x, targets), size)

    ours = Explainer.from_torch(model, "features").explain(x, "gradcam", target=targets)  # no export: gradients only
    assert np.abs(ours.heatmap - hand).max() <= 1e-5

    captum = LayerGradCam(model, model.features).attribute(torch.from_numpy(x), target=targets,
                                                           relu_attributions=True)
    assert np.abs(cam_to_heatmap(captum[:, 0].detach().numpy(), size) - hand).max() <= 1e-5

    with GradCAM(model=model, target_layers=[model.features]) as cam:
        ref = cam(input_tensor=torch.from_numpy(x), targets=[ClassifierOutputTarget(t) for t in targets])
    overwritten = cam_to_heatmap(hand_gradcam(model, x, targets, relu_acts=True), size)
    assert np.abs(ref - overwritten).max() <= 1e-5  # pytorch-grad-cam weighs relu(A): the in-place ReLU
    assert np.abs(ref - hand).max() > 1e-2           # ... which is not Grad-CAM of `features`
