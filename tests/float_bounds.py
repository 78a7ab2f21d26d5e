"""Float32 error bounds for Integrated Gradients on small piecewise-linear CNNs, computed in float64.

A test-only reference, independent of the library: the network is re-evaluated here from its
weights, stage by stage, in float64. For a ReLU / max-pool network the input gradient is a product
of matrices selected by the ReLU gates and the max-pool winners, so a float32 implementation can
differ from the exact value in two ways only:

1. Rounding of the backward products. With the gates fixed, every gradient element is a sum of
   path products; the standard bound for a chain of matrix products is
   ``|fl(g) - g| <= gamma_n * g_abs`` where ``g_abs`` is the same backward pass with every weight
   replaced by its absolute value and ``n`` is the number of terms accumulated along a path
   (``u = 2**-24``; ``gamma`` below). ``n`` is summed over the stages.
2. A gate that flips. The float32 forward value of a pre-activation differs from the exact one by at
   most ``e`` (propagated here: ``gamma_{K+1} (|W| |a| + |b|) + |W| e_prev`` per convolution); a
   ReLU whose exact pre-activation is within ``e`` of 0, or a max-pool window whose two largest
   values are within ``e_1 + e_2``, is a *near-tie*: rounding may pick either branch, on one CPU
   one way and on another the other way. Its effect is measured, not guessed: the gradient is
   recomputed with that one gate flipped (or the pool routed to the runner-up), and
   ``|g_flipped - g|`` is the most that tie can change each pixel.

``ig_bounds`` returns the float64 Integrated Gradients, the rounding bound and the summed tie
effects per pixel; a test allows ``rounding + ties`` and nothing more, so a tie widens the bound
only at the pixels it can reach.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

U = 2.0 ** -24


LAMBDA = 7.0


def gamma(n: int) -> float:
    """Probabilistic bound on the relative rounding error of an n-term float32 sum of products:
    ``lambda sqrt(n) u`` (Higham and Mary, SIAM J. Sci. Comput. 41(5), 2019, Thm 2.4: it holds with
    probability >= 1 - 2n exp(-lambda^2 (1-u)^2 / 2), about 1 - 2e-8 for n = 500, lambda = 7).
    The deterministic ``n u / (1 - n u)`` is reached only if every rounding errs the same way,
    which blocked float32 sums never do. The smaller of the two is used."""
    return min(LAMBDA * np.sqrt(n) * U, n * U / (1 - n * U))


def _bn(m):
    sc = m.weight.double() / torch.sqrt(m.running_var.double() + m.eps)
    return sc[None, :, None, None], (m.bias.double() - m.running_mean.double() * sc)[None, :, None, None]


def backward_terms(stages) -> int:
    """Terms accumulated into one input-gradient element along a path (rounding count ``n``)."""
    n = 0
    for kind, m in stages:
        if kind == "conv":
            n += m.out_channels * m.kernel_size[0] * m.kernel_size[1] + 1
        else:  # bn: scale multiply; relu, pool: one selection; gap: one scaling; fc: one-hot cotangent
            n += 3 if kind == "bn" else 1
    return n


def _forward(stages, x):
    """float64 forward with error bounds. Returns gates, pool indices and the near-ties found."""
    a, e = x, 3 * U * x.abs()  # the path point base + alpha (x - base), rounded in float32
    masks, idxs, ties = [], [], []
    for j, (kind, m) in enumerate(stages):
        if kind == "conv":
            w, b = m.weight.double(), m.bias.double() if m.bias is not None else None
            k = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            kw = dict(stride=m.stride, padding=m.padding, groups=m.groups)
            s = F.conv2d(a.abs(), w.abs(), None if b is None else b.abs(), **kw)
            a, e = F.conv2d(a, w, b, **kw), gamma(k + 1) * s + F.conv2d(e, w.abs(), None, **kw)
        elif kind == "bn":
            sc, sh = _bn(m)
            a, e = a * sc + sh, sc.abs() * e + gamma(3) * (sc.abs() * a.abs() + sh.abs())
        elif kind == "relu":
            mask = (a > 0).double()
            for p in torch.nonzero(a.abs() <= e):
                ties.append((j, tuple(p.tolist())))
            masks.append(mask)
            a = a * mask
        elif kind == "maxpool":
            n, c, h, w = a.shape
            win = a.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
            ewin = e.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
            top = torch.topk(win, 2, dim=-1)
            near = (top.values[..., 0] > 0) & (top.values[..., 0] - top.values[..., 1] <= 2 * ewin.max(-1).values)
            idxs.append((top.indices[..., 0], top.indices[..., 1]))
            for p in torch.nonzero(near):
                ties.append((j, tuple(p.tolist())))
            a, e = top.values[..., 0], ewin.max(-1).values
        elif kind == "gap":
            e = e.mean((2, 3)) + gamma(a.shape[2] * a.shape[3]) * a.abs().mean((2, 3))
            a = a.mean((2, 3))
        elif kind == "fc":
            a = F.linear(a, m.weight.double(), m.bias.double())
    return masks, idxs, ties


def _pool(a, index):
    n, c, h, w = a.shape
    win = a.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    return win.gather(-1, index[..., None])[..., 0]


def _gradient(stages, x, classes, masks, pools, absolute=False):
    """d logit[class] / dx of the network with its gates and pool winners held fixed (linear)."""
    x = x.clone().requires_grad_(True)
    a, mi, pi = x, 0, 0
    f = (lambda t: t.abs()) if absolute else (lambda t: t)
    for kind, m in stages:
        if kind == "conv":
            a = F.conv2d(a, f(m.weight.double()), None, stride=m.stride, padding=m.padding, groups=m.groups)
        elif kind == "bn":
            a = a * f(_bn(m)[0])
        elif kind == "relu":
            a, mi = a * masks[mi], mi + 1
        elif kind == "maxpool":
            a, pi = _pool(a, pools[pi]), pi + 1
        elif kind == "gap":
            a = a.mean((2, 3))
        elif kind == "fc":
            a = F.linear(a, f(m.weight.double()))
    (g,) = torch.autograd.grad(a[torch.arange(len(a)), classes].sum(), x)
    return g


@torch.no_grad()
def _no_grad_forward(stages, x):
    return _forward(stages, x)


def ig_bounds(stages, x: np.ndarray, classes, alphas, weights, baseline=0.0, max_ties: int = 400):
    """(IG in float64, rounding bound, tie effect, number of near-ties) per pixel, shape of ``x``."""
    ref, rnd, tie = (np.zeros(x.shape) for _ in range(3))
    n_back, n_ties = backward_terms(stages), 0
    for i in range(len(x)):
        xi = torch.from_numpy(np.asarray(x[i], np.float64))
        base = torch.full_like(xi, float(baseline)) if np.isscalar(baseline) else torch.from_numpy(
            np.asarray(baseline, np.float64))
        pts = base[None] + torch.tensor(alphas, dtype=torch.float64)[:, None, None, None] * (xi - base)[None]
        cls = torch.full((len(alphas),), int(classes[i]))
        masks, idxs, ties = _no_grad_forward(stages, pts)
        pools = [p[0] for p in idxs]
        g = _gradient(stages, pts, cls, masks, pools)
        g_abs = _gradient(stages, pts, cls, masks, pools, absolute=True)
        w = torch.tensor(weights, dtype=torch.float64)[:, None, None, None]
        diff = (xi - base).abs().numpy()
        ref[i] = ((xi - base) * (w * g).sum(0)).numpy()
        rnd[i] = diff * ((w * (gamma(n_back) * g_abs + (len(alphas) + 3) * U * g.abs())).sum(0)).numpy()
        n_ties += len(ties)
        assert n_ties <= max_ties, f"{n_ties} near-ties: inputs too close to the kinks for this bound"
        relu_stages = [j for j, (k, _) in enumerate(stages) if k == "relu"]
        pool_stages = [j for j, (k, _) in enumerate(stages) if k == "maxpool"]
        for j, p in ties:
            m2, p2 = [mk.clone() for mk in masks], list(pools)
            if j in relu_stages:
                m2[relu_stages.index(j)][p] = 1 - m2[relu_stages.index(j)][p]
            else:
                q = pool_stages.index(j)
                p2[q] = p2[q].clone()
                p2[q][p] = idxs[q][1][p]
            s = p[0]
            gf = _gradient(stages, pts[s:s + 1], cls[s:s + 1], [mk[s:s + 1] for mk in m2], [pk[s:s + 1] for pk in p2])
            tie[i] += (diff * float(weights[s]) * (gf[0] - g[s]).abs().numpy())
    return ref, rnd, tie, n_ties
