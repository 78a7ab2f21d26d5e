"""ActivationMap (OpenVINO XAI's white-box baseline): the layer's channel mean, no target, no gradient."""
import numpy as np

from agnostic_cam.methods.base import Capture, Method, Needs, register


@register("activation_map")
class ActivationMap(Method):
    """ActivationMap: the mean of the target layer's channels at each position (no target, no gradient).

    The naive baseline of saliency toolkits (OpenVINO XAI's ``ActivationMap``, 2024; the
    "activation-based attention map" of Zagoruyko & Komodakis, ICLR 2017, with p = 1). With A the target layer's
    activations (N, C, h, w):

        cam = mean_c A_c                        (N, h, w)

    The map does not depend on the target: forward-only, it runs on ONNX Runtime (bare ONNX files
    too) and can be embedded in the model's graph (``Explainer.embed``). ``heatmap`` is the library's CAM
    post-processing (ReLU, min-max, bilinear resize, min-max).

    Options: none of its own (``aug_smooth=False``, ``batch_size=None``).

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="activation_map")
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 16, 16))
    """

    needs = Needs.ACTIVATIONS

    def compute(self, cap: Capture) -> np.ndarray:
        a = cap.activations
        self.scale = np.abs(a).astype(np.float64).mean(axis=1).reshape(a.shape[0], -1).max(axis=1)
        return a.mean(axis=1)
