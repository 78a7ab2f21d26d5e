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
   one way and on another the other way. What it can change is computed for that tie alone:
   flipping a gate adds or removes the path through that unit, ``dS/d(unit) * d(unit)/dx``, so
   ``|dS/d(unit)|`` sent back through the absolute weights bounds its effect at every pixel (a
   pool window: through its winner and its runner-up). Pixels no near-tie reaches get none.

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


def _windows(a):
    n, c, h, w = a.shape
    return a.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)


def _unwindows(win):
    n, c, h, w, _ = win.shape
    return win.reshape(n, c, h, w, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, 2 * h, 2 * w)


@torch.no_grad()
def _forward(stages, x):
    """float64 forward with error bounds: the gates, the pool winners and runners-up, the near-ties."""
    a, e = x, 3 * U * x.abs()  # the path point base + alpha (x - base), rounded in float32
    masks, pools, ties = [], [], []
    for kind, m in stages:
        if kind == "conv":
            w, b = m.weight.double(), m.bias.double() if m.bias is not None else None
            k = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            kw = dict(stride=m.stride, padding=m.padding, groups=m.groups)
            s = F.conv2d(a.abs(), w.abs(), None if b is None else b.abs(), **kw)
            a, e = F.conv2d(a, w, b, **kw), gamma(k + 1) * s + F.conv2d(e, w.abs(), None, **kw)
        elif kind == "bn":
            sc, sh = _bn(m)
            a, e = a * sc + sh, sc.abs() * e + gamma(3) * (sc.abs() * a.abs() + sh.abs())
        elif kind == "relu":  # near-tie: |z| within its forward error
            masks.append((a > 0).double())
            ties.append((a.abs() <= e).double())
            a = a * masks[-1]
        elif kind == "maxpool":  # near-tie: the two largest of a window within their errors
            top, ew = torch.topk(_windows(a), 2, dim=-1), _windows(e).max(-1).values
            pools.append((top.indices[..., :1], top.indices[..., 1:]))
            ties.append(((top.values[..., 0] > 0) & (top.values[..., 0] - top.values[..., 1] <= 2 * ew)).double())
            a, e = top.values[..., 0], ew
        elif kind == "gap":
            e = e.mean((2, 3)) + gamma(a.shape[2] * a.shape[3]) * a.abs().mean((2, 3))
            a = a.mean((2, 3))
        elif kind == "fc":
            a = F.linear(a, m.weight.double(), m.bias.double())
    return masks, pools, ties


def _chain(stages, x, masks, pools, absolute=False):
    """The network with its gates and pool winners held fixed (linear in x, biases dropped).
    Returns the logits and, per ReLU / max-pool stage, (its input, its output)."""
    a, taps, mi, pi = x, [], 0, 0
    f = (lambda t: t.abs()) if absolute else (lambda t: t)
    for kind, m in stages:
        if kind == "conv":
            a = F.conv2d(a, f(m.weight.double()), None, stride=m.stride, padding=m.padding, groups=m.groups)
        elif kind == "bn":
            a = a * f(_bn(m)[0])
        elif kind == "relu":
            b, mi = a * masks[mi], mi + 1
            taps.append((a, b))
            a = b
        elif kind == "maxpool":
            b, pi = _windows(a).gather(-1, pools[pi][0])[..., 0], pi + 1
            taps.append((a, b))
            a = b
        elif kind == "gap":
            a = a.mean((2, 3))
        elif kind == "fc":
            a = F.linear(a, f(m.weight.double()))
    return a, taps


def ig_bounds(stages, x: np.ndarray, classes, alphas, weights, baseline=0.0):
    """(IG in float64, rounding bound, tie bound, number of near-ties), per pixel, shape of ``x``.

    The tie bound of one near-tie is |dS/d(its output)| times the absolute-weight backward of its
    input to the pixels (what flipping that gate, or routing that pool window to its runner-up, can
    change); all near-ties of a step go back in one absolute backward pass."""
    ref, rnd, tie = (np.zeros(x.shape) for _ in range(3))
    n_back, n_ties = backward_terms(stages), 0
    w = torch.tensor(weights, dtype=torch.float64)[:, None, None, None]
    for i in range(len(x)):
        xi = torch.from_numpy(np.asarray(x[i], np.float64))
        base = torch.broadcast_to(torch.as_tensor(np.asarray(baseline, np.float64)), xi.shape)
        pts = (base[None] + torch.tensor(alphas, dtype=torch.float64)[:, None, None, None] * (xi - base)[None])
        pts.requires_grad_(True)
        rows = torch.arange(len(alphas))
        masks, pools, ties = _forward(stages, pts.detach())
        out, taps = _chain(stages, pts, masks, pools)
        grads = torch.autograd.grad(out[rows, int(classes[i])].sum(), [pts] + [b for _, b in taps])
        g, d_out = grads[0], grads[1:]
        out_abs, taps_abs = _chain(stages, pts, masks, pools, absolute=True)
        (g_abs,) = torch.autograd.grad(out_abs[rows, int(classes[i])].sum(), pts, retain_graph=True)
        cots = _pool_cotangents(stages, pools, ties, d_out)
        (g_tie,) = torch.autograd.grad([a for a, _ in taps_abs], pts, grad_outputs=cots, allow_unused=True)
        g_tie = torch.zeros_like(g) if g_tie is None else g_tie
        diff = (xi - base).abs().numpy()
        ref[i] = ((xi - base) * (w * g).sum(0)).detach().numpy()
        rnd[i] = diff * (w * (gamma(n_back) * g_abs + (len(alphas) + 3) * U * g.abs())).sum(0).detach().numpy()
        tie[i] = diff * (w * g_tie).sum(0).detach().numpy()
        n_ties += int(sum(t.sum() for t in ties))
    return ref, rnd, tie, n_ties


def _pool_cotangents(stages, pools, ties, d_out):
    """Cotangents at each ReLU / max-pool input: |dS/d(output)| at its near-ties (a pool window's
    on both its winner and its runner-up)."""
    cots, pi = [], 0
    kinds = [k for k, _ in stages if k in ("relu", "maxpool")]
    for kind, d, t in zip(kinds, d_out, ties):
        v = d.abs() * t
        if kind == "relu":
            cots.append(v)
            continue
        win = torch.zeros(*v.shape, 4, dtype=v.dtype)
        win.scatter_add_(-1, pools[pi][0], v[..., None])
        win.scatter_add_(-1, pools[pi][1], v[..., None])
        cots.append(_unwindows(win))
        pi += 1
    return cots
