"""SmoothGrad (Smilkov et al. 2017, eq. 1) over any pixel-space gradient method.

M_hat(x) = 1/n sum_k M(x + N(0, sigma^2)), sigma = noise * (max(x) - min(x)) per image (the
paper's "noise level" as a fraction of the input's range; 10-20% works well). The base method's
signed attributions are averaged (``raw`` (N, C, H, W)); the heatmap is the base method's
(e.g. saliency: max over channels of |mean|). Noisy copies are sent ``batch_size`` at a time.
``seed`` fixes the noise (the default 0 makes results reproducible; None draws fresh noise); it is
drawn channel-first, so an NCHW model and its NHWC twin see the same noisy images.

    explain(x, "smoothgrad", base="guided_backprop", noise=0.15, samples=25, seed=0)
"""
from __future__ import annotations

import inspect

import numpy as np

from agnostic_cam.methods.base import Capture, get_method, register, registry
from agnostic_cam.methods.pixel import PixelMethod, accumulate, from_chw, to_chw
from agnostic_cam.core.options import finite_number, positive_int
from agnostic_cam.errors import AgnosticCamError, OptionError


@register("smoothgrad")
class SmoothGrad(PixelMethod):
    """SmoothGrad: a pixel-space gradient method averaged over noisy copies of the image.

    Paper: D. Smilkov, N. Thorat, B. Kim, F. Viegas and M. Wattenberg, "SmoothGrad: removing noise
    by adding noise", arXiv:1706.03825, 2017 (eq. 1).

    With x the image and M the ``base`` method's signed attribution (N, C, H, W):

        raw   = 1/n sum_{k=1..n} M(x + e_k),   e_k ~ N(0, sigma^2),  n = samples
        sigma = noise * (max(x) - min(x))      per image

    The heatmap is the base method's (e.g. saliency: max over channels of |raw|, scaled per image).
    Noise is drawn channel-first from ``seed``, so an NCHW model and its NHWC twin see the same
    noisy images. Needs input gradients.

    Args:
        base (str): a pixel-space gradient method: "saliency", "guided_backprop", "deconvnet",
            "gradient_x_input" or "integrated_gradients". Default "saliency".
        noise (float): sigma as a fraction of each image's value range (10-20% works well).
            Default 0.15.
        samples (int): the number of noisy copies n. Default 25.
        seed (int | None): the noise seed; None draws fresh noise every call. Default 0.
        batch_size (int | None): noisy copies per backward pass; None uses the explainer's.
            Default None.
        **base_options (Any): options of the base method (e.g. ``sign`` for saliency).

    Examples:
        >>> from agnostic_cam import Explainer
        >>> from agnostic_cam.demo.tiny import tiny_cnn, tiny_images
        >>> ex = Explainer.from_torch(tiny_cnn(), "relu2", progress=False)
        >>> x = tiny_images()  # (2, 3, 32, 32) float32 in [0, 1]
        >>> exp = ex.explain(x, method="smoothgrad", base="guided_backprop", samples=4)
        >>> exp.heatmap.shape, exp.raw.shape
        ((2, 32, 32), (2, 3, 32, 32))
        >>> float(exp.heatmap.max())
        1.0
    """

    smoothable = False

    def __init__(self, base: str = "saliency", noise: float = 0.15, samples: int = 25, seed: int | None = 0,
                 batch_size: int | None = None, **base_options):
        cls = get_method(base)
        if not (issubclass(cls, PixelMethod) and cls.smoothable):
            ok = sorted(n for n, c in registry().items() if issubclass(c, PixelMethod) and c.smoothable)
            raise OptionError(f"smoothgrad's base must be a pixel-space gradient method, one of {ok}; got {base!r}")
        try:
            self.base = cls(**base_options)
        except AgnosticCamError:
            raise
        except TypeError:  # a ValueError: the explainer rewrites TypeErrors with smoothgrad's own options only
            own = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
            raise OptionError(f"smoothgrad got option(s) {sorted(base_options)} that neither smoothgrad (base, noise, "
                              f"samples, seed, batch_size) nor its base {cls.name!r} ({own or 'no options'}) "
                              "takes") from None
        self.noise = finite_number("noise (a fraction of each image's value range)", noise, lo=0.0)
        self.samples = positive_int("samples", samples)
        self.batch_size = positive_int("batch_size", batch_size, optional=True)
        self.seed = seed
        self.rule = self.base.rule

    def compute(self, cap: Capture) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        x = cap.x
        sigma = self.noise * (x.reshape(cap.n, -1).max(axis=1) - x.reshape(cap.n, -1).min(axis=1))
        chw = to_chw(x[:1], cap.layout).shape[1:]
        total = None
        n_rows = cap.n * self.samples
        bs = self.batch_size or cap.batch_size
        with cap.progress_bar(n_rows, f"SmoothGrad ({self.base.name})") as bar:
            for lo in range(0, n_rows, bs):
                image = np.arange(lo, min(lo + bs, n_rows)) // self.samples
                eps = from_chw(rng.standard_normal((len(image), *chw)), cap.layout)  # same noise for NCHW/NHWC twins
                noisy = x[image] + eps * sigma[image].reshape((-1,) + (1,) * (x.ndim - 1))
                attr = self.base.attribute(cap, noisy.astype(np.float32), image).astype(np.float64)
                if total is None:
                    total = np.zeros((cap.n, *attr.shape[1:]), dtype=np.float64)
                accumulate(total, image, attr)
                bar.update(len(image))
        return (total / self.samples).astype(np.float32)

    def heatmap(self, raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return self.base.heatmap(raw, size)
