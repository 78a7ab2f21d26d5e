"""Integrated gradients (Sundararajan et al. 2017, eq. 1 and its Riemann approximation eq. 3).

IG_i(x) = (x_i - x'_i) * integral_0^1 dS(x' + a (x - x'))/dx_i da, with baseline x', approximated
by a quadrature sum_k w_k * grad(x' + a_k (x - x')):

- ``gausslegendre`` (default, as Captum): Gauss-Legendre nodes and weights mapped to [0, 1];
- ``riemann_trapezoid``: a_k = k / (steps - 1), w = h/2, h, ..., h, h/2 with h = 1 / (steps - 1)
  (the textbook rule; weights sum to 1, so completeness sum(IG) ~ S(x) - S(x') holds);
- ``riemann_left`` / ``riemann_right`` / ``riemann_middle``: w_k = 1 / steps.

baseline: None (zeros), a float, or an array of one image's shape or the batch's shape, in the
model's layout. Path points are sent ``batch_size`` at a time (all images mixed).
``raw``: (N, C, H, W) signed attributions.
"""
from __future__ import annotations

import numpy as np

from agnostic_cam.methods.base import Capture, register
from agnostic_cam.methods.pixel import PixelMethod, accumulate, to_chw
from agnostic_cam.core.options import finite_array, positive_int
from agnostic_cam.errors import InputError, OptionError

QUADRATURES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, weights), both (steps,), of a rule integrating over [0, 1]."""
    if method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1), 0.5 * w
    if method == "riemann_trapezoid":
        a = np.linspace(0.0, 1.0, steps)
        w = np.full(steps, 1.0 / (steps - 1))
        w[[0, -1]] /= 2
        return a, w
    k = np.arange(steps, dtype=np.float64)
    shift = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    return (k + shift) / steps, np.full(steps, 1.0 / steps)


@register("integrated_gradients")
class IntegratedGradients(PixelMethod):
    """Integrated gradients: the gradient integrated along the straight path from a baseline to the image.

    Paper: M. Sundararajan, A. Taly and Q. Yan, "Axiomatic Attribution for Deep Networks",
    ICML 2017, arXiv:1703.01365 (eq. 1, and its Riemann approximation eq. 3).

    With x the image, x' the baseline and S the target's score:

        IG_i(x) = (x_i - x'_i) * integral_0^1 dS(x' + a (x - x'))/dx_i da
                ~ (x_i - x'_i) * sum_k w_k * dS(x' + a_k (x - x'))/dx_i

    with nodes a_k and weights w_k of ``quadrature``: "gausslegendre" (as Captum) mapped to
    [0, 1]; "riemann_trapezoid" a_k = k / (steps - 1), w = h/2, h, ..., h, h/2 with
    h = 1 / (steps - 1); "riemann_left" / "riemann_right" / "riemann_middle" w_k = 1 / steps.
    Completeness: sum_i IG_i ~ S(x) - S(x') (the example checks it). ``raw`` (N, C, H, W) signed;
    heatmap = max_c |raw| / max. Needs input gradients.

    Args:
        baseline (float | numpy.ndarray | None): None (zeros), a float, or an array of one image's
            or the batch's shape, in the model's layout. Default None.
        steps (int): the number of path points. Default 50.
        quadrature (str): one of the rules above. Default "gausslegendre".
        batch_size (int | None): path points per backward pass (all images mixed); None uses the
            explainer's. Default None.

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> import numpy as np
        >>> exp = ex.explain(x, method="integrated_gradients", steps=32)
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 3, 32, 32))
        >>> s0 = ex.predict(np.zeros_like(x))[[0, 1], exp.targets]  # the baseline's scores
        >>> np.allclose(exp.raw.sum(axis=(1, 2, 3)), exp.scores - s0, rtol=1e-2)  # completeness
        True
    """

    volumes = True  # input gradients of a volume are a volume: raw (N, C, D, H, W)

    rule = "vanilla"

    def __init__(self, baseline: float | np.ndarray | None = None, steps: int = 50,
                 quadrature: str = "gausslegendre", batch_size: int | None = None):
        if quadrature not in QUADRATURES:
            raise OptionError(f"quadrature must be one of {QUADRATURES}; got {quadrature!r}")
        self.steps = positive_int("steps", steps, 2 if quadrature == "riemann_trapezoid" else 1)
        self.batch_size = positive_int("batch_size", batch_size, optional=True)
        self.quadrature = quadrature
        if baseline is not None and not isinstance(baseline, (int, float, np.ndarray)):
            baseline = np.asarray(baseline, dtype=np.float32)
        self.baseline = finite_array("baseline", baseline)

    def _baselines(self, cap: Capture, inputs: np.ndarray, image: np.ndarray) -> np.ndarray:
        b = self.baseline
        if b is None:
            return np.zeros_like(inputs)
        if isinstance(b, (int, float)):
            return np.full_like(inputs, float(b))
        b = np.asarray(b, dtype=np.float32)
        if b.shape == cap.x.shape[1:]:
            return np.broadcast_to(b, inputs.shape)
        if b.shape == cap.x.shape:
            return b[image]
        raise InputError(f"baseline must be None, a float, one image of shape {cap.x.shape[1:]} or a batch of shape "
                         f"{cap.x.shape} in the model's layout ({cap.layout}); got shape {b.shape}")

    def attribute(self, cap: Capture, inputs: np.ndarray, image: np.ndarray,
                  grads: np.ndarray | None = None) -> np.ndarray:
        base = self._baselines(cap, inputs, image)
        diff = inputs - base
        alphas, w = quadrature(self.quadrature, self.steps)
        total = np.zeros(inputs.shape, dtype=np.float64)
        rows = lambda idx: base[idx // self.steps] + (  # noqa: E731 - path point k of input row m
            alphas[idx % self.steps].reshape((-1,) + (1,) * (inputs.ndim - 1)) * diff[idx // self.steps]
        ).astype(np.float32)
        n_rows = inputs.shape[0] * self.steps
        for idx, g in self.gradients_in_batches(cap, rows, n_rows, lambda idx: image[idx // self.steps],
                                                "integrated gradients"):
            wk = w[idx % self.steps].reshape((-1,) + (1,) * (inputs.ndim - 1))
            accumulate(total, idx // self.steps, wk * g)
        return to_chw(diff * total, cap.layout)
