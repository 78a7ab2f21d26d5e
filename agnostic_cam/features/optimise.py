"""The gradient-ascent loop shared by class models, filter maximisation, deep dream and inversion.

Maximises ``J(x) = f(x) - l2/2 ||x||^2 - tv * TV_beta(x)`` over images ``x`` (N, ...) in the
model's layout, where ``f`` is one number per image whose input gradient comes from the adapter
(``grad_fn``). Each step: shift ``x`` by a random jitter, evaluate ``f`` and ``df/dx`` there and
shift the gradient back, add the regularisers' gradients, take an Adam (default) or plain
gradient step with a cosine-decayed learning rate, blur every ``blur_every`` steps, clip to
``clip``. Everything random comes from ``np.random.default_rng(seed)``: a seed fixes the result.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agnostic_cam.features.regularise import gaussian_blur, jitter, spatial_axes, total_variation_grad
from agnostic_cam.errors import BackendError, NonFiniteError, OptionError

GradFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Callback = Callable[[int, np.ndarray, np.ndarray], object]


@dataclass
class Ascent:
    """Settings of :func:`ascend` (all optional in the public functions, passed as keywords).

    steps: number of updates. lr: step size in input units (Adam: the per-pixel step at the start).
    l2: weight of ``l2/2 ||x||^2``. tv, tv_beta: weight and exponent of the TV regulariser.
    jitter: maximum random shift in pixels per step. blur_sigma, blur_every: Gaussian blur of the
    image (sigma in pixels) every ``blur_every`` steps. clip: (low, high) bounds of the image or
    None. optimizer: 'adam' or 'sgd' (``x += lr * g``). schedule: 'cosine' (lr decays to
    ``lr / 10``) or 'constant'. normalise: scale ``df/dx`` to unit RMS per image before adding
    the regularisers' gradients, so their weights mean the same whatever the objective's scale.
    """

    steps: int = 100
    lr: float = 0.05
    l2: float = 0.0
    tv: float = 0.0
    tv_beta: float = 2.0
    jitter: int = 0
    blur_sigma: float = 0.0
    blur_every: int = 4
    clip: tuple[float, float] | None = None
    optimizer: str = "adam"
    schedule: str = "cosine"
    normalise: bool = False

    def check(self) -> None:
        if not isinstance(self.steps, int | np.integer) or self.steps < 1:
            raise OptionError(f"steps must be a positive integer; got {self.steps!r}")
        for name in ("lr", "l2", "tv", "blur_sigma"):
            v = getattr(self, name)
            if not isinstance(v, int | float | np.floating) or not math.isfinite(v) or v < 0 or (name == "lr" and v == 0):
                raise OptionError(f"{name} must be a finite {'positive' if name == 'lr' else 'non-negative'} number; got {v!r}")
        if self.jitter < 0 or self.blur_every < 1:
            raise OptionError(f"jitter must be >= 0 and blur_every >= 1; got {self.jitter}, {self.blur_every}")
        if self.optimizer not in ("adam", "sgd"):
            raise OptionError(f"optimizer must be 'adam' or 'sgd'; got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise OptionError(f"schedule must be 'cosine' or 'constant'; got {self.schedule!r}")
        if self.clip is not None and (len(self.clip) != 2 or not self.clip[0] < self.clip[1]):
            raise OptionError(f"clip must be (low, high) with low < high, or None; got {self.clip!r}")

    def lr_at(self, t: int) -> float:
        if self.schedule == "constant" or self.steps == 1:
            return self.lr
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / (self.steps - 1))))


def split_options(options: dict) -> tuple[Ascent, dict]:
    """An :class:`Ascent` from the keywords that name its fields, and the remaining keywords."""
    fields = set(Ascent.__dataclass_fields__)
    asc = Ascent(**{k: v for k, v in options.items() if k in fields})
    asc.check()
    return asc, {k: v for k, v in options.items() if k not in fields}


def ascent_settings(defaults: dict, options: dict, what: str) -> Ascent:
    """The :class:`Ascent` of ``defaults`` updated by ``options``; a TypeError for unknown keywords."""
    settings, rest = split_options({**defaults, **options})
    if rest:
        raise OptionError(f"{what} got unknown option(s) {sorted(rest)}; its optimiser options are "
                          f"{sorted(Ascent.__dataclass_fields__)}")
    return settings


def progress_bar(total: int, desc: str, progress: bool | None):
    """tqdm bar; ``progress=None`` shows it only on a terminal, False never."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=(None if progress is None else not progress))


def ascend(x0: np.ndarray, grad_fn: GradFn, settings: Ascent, layout: str, seed: int = 0,
           progress: bool | None = None, callback: Callback | None = None,
           desc: str = "optimising") -> tuple[np.ndarray, np.ndarray]:
    """Gradient ascent on ``f(x) - regularisers`` from ``x0`` (N, ...) in ``layout``.

    grad_fn(x) -> (value (N,), df/dx of x's shape): ``value`` is what the history records (f(x),
    or a more telling number, e.g. inversion reports the distance it minimises). callback(step,
    x, value) is called after each step with the value before that step; True stops early.
    Returns the final image (float32, x0's shape) and the history, (steps_run, N) float64.
    """
    settings.check()
    axes = spatial_axes(layout)
    rng = np.random.default_rng(seed)
    x = np.array(x0, dtype=np.float32, copy=True)
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    b1, b2, eps = 0.9, 0.999, 1e-8
    history = []
    with progress_bar(settings.steps, desc, progress) as bar:
        for t in range(settings.steps):
            j = settings.jitter
            dy, dx = (int(d) for d in rng.integers(-j, j + 1, size=2)) if j else (0, 0)
            value, g = grad_fn(jitter(x, dy, dx, axes) if j else x)
            g = np.asarray(g, dtype=np.float32)
            if g.shape != x.shape:
                raise BackendError(f"the gradient has shape {g.shape}, not the image's {x.shape}")
            if j:
                g = jitter(g, -dy, -dx, axes)
            if settings.normalise:
                rms = np.sqrt((g.astype(np.float64) ** 2).reshape(g.shape[0], -1).mean(axis=1))
                g = g / np.maximum(rms, 1e-12).reshape((-1,) + (1,) * (g.ndim - 1)).astype(np.float32)
            if settings.l2:
                g = g - settings.l2 * x
            if settings.tv:
                g = g - settings.tv * total_variation_grad(x, axes, settings.tv_beta)
            lr = settings.lr_at(t)
            if settings.optimizer == "adam":
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                step = (m / (1 - b1 ** (t + 1))) / (np.sqrt(v / (1 - b2 ** (t + 1))) + eps)
            else:
                step = g
            x = (x + lr * step).astype(np.float32)
            if settings.blur_sigma and (t + 1) % settings.blur_every == 0:
                x = gaussian_blur(x, settings.blur_sigma, axes)
            if settings.clip is not None:
                np.clip(x, settings.clip[0], settings.clip[1], out=x)
            value = np.asarray(value, dtype=np.float64).reshape(-1)
            if not np.all(np.isfinite(value)):
                raise NonFiniteError(f"the objective became {value} at step {t}; lower lr or add l2/clip")
            history.append(value)
            bar.update(1)
            if callback is not None and callback(t, x, value) is True:
                break
    return x, np.stack(history)
