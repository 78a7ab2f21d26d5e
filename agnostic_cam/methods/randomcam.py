"""Random-CAM: a baseline with channel weights drawn uniformly from [-1, 1].

cam = sum_c w_c * A_c with w ~ U(-1, 1) per image and channel, as pytorch-grad-cam's RandomCAM,
but from a seeded generator (``seed``; None draws fresh weights every call) and forward-only:
it needs no gradients, so it runs on ONNX Runtime. Use it as the floor an explanation must beat.
"""
import numpy as np

from agnostic_cam.methods.base import CamMethod, Capture, Needs, register


@register("randomcam")
class RandomCAM(CamMethod):
    """Random-CAM: a baseline CAM with random channel weights, the floor an explanation must beat.

    Source: pytorch-grad-cam's ``RandomCAM``; a weight-randomisation baseline in the spirit of
    J. Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018, arXiv:1810.03292.

    With A the target layer's activations (N, C, h, w) and w drawn per image and channel:

        w_c ~ U(-1, 1)
        cam = relu(sum_c w_c * A_c)

    From a seeded generator (reproducible by default) and forward-only: it needs no gradients,
    so it runs on ONNX Runtime.

    Args:
        seed (int | None): the seed of the weights; None draws fresh weights every call. Default 0.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> import numpy as np
        >>> exp = ex.explain(x, method="randomcam", seed=0)
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 16, 16))
        >>> np.array_equal(exp.heatmap, ex.explain(x, "randomcam", seed=0).heatmap)  # seeded
        True
    """

    needs = Needs.ACTIVATIONS

    def __init__(self, seed: int | None = 0):
        self.seed = seed

    def weights(self, cap: Capture) -> np.ndarray:
        return np.random.default_rng(self.seed).uniform(-1, 1, size=cap.activations.shape[:2])
