"""PyTorch side of the adapters' shared backward primitive (see ``Adapter.vjp``), as a mixin of
:class:`~agnostic_cam.adapters.pytorch.adapter.TorchAdapter`, plus the contexts that leave the model as it was.

``vjp`` runs one forward pass with every ReLU under a backward rule
(:mod:`agnostic_cam.adapters.pytorch.rules`) and one backward pass of a NumPy cotangent; the
methods' input gradients are one ``vjp`` of the explained output.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from agnostic_cam.adapters.base import Gradients
from agnostic_cam.adapters.pytorch.rules import check_rule, module_census, relu_rule, traced_census
from agnostic_cam.targets import TargetSpec
from agnostic_cam.core.concurrency import model_lock, serialised
from agnostic_cam.core import layout as L
from agnostic_cam.errors import InputError, LayoutError, ModelError


@contextlib.contextmanager
def preserved(model: nn.Module):
    """Run with ``model`` in eval mode; restore every module's training flag and every
    parameter's ``requires_grad`` afterwards, also when an exception is raised.

    Holds the model's lock (:func:`~agnostic_cam.core.concurrency.model_lock`) for the whole block, so
    two threads never interleave their save and restore: the model always ends as it started."""
    with model_lock(model):
        modes = [(m, m.training) for m in model.modules()]
        grads = [(p, p.requires_grad) for p in model.parameters()]
        try:
            model.eval()
            yield model
        finally:
            for m, t in modes:
                m.training = t
            for p, r in grads:
                p.requires_grad_(r)


@contextlib.contextmanager
def hooked(module: nn.Module, hook, kind: str = "forward"):
    """Register a hook for the duration of the block only."""
    handle = module.register_forward_hook(hook) if kind == "forward" else module.register_full_backward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def target_scores(out: torch.Tensor, classes, target: TargetSpec) -> torch.Tensor:
    """Scores (M,) of ``classes`` in ``out`` (M, K), or ``target.fn(out)`` for a callable target."""
    if classes is None:
        s = target.fn(out)
        if not isinstance(s, torch.Tensor) or s.shape != (out.shape[0],):
            raise InputError(f"the target callable must return a tensor of {out.shape[0]} scores (one per image)")
        return s
    return out[torch.arange(out.shape[0]), torch.as_tensor(classes, device=out.device)]


def layout_view(t: torch.Tensor, lay: L.LayerLayout | None) -> torch.Tensor:
    """A layer tensor in layout ``lay`` as (N, C, h, w) (volumes: (N, C, d, h, w)), differentiable
    (None, NCHW or NCDHW: unchanged)."""
    if lay is None or lay.kind in L.CHANNELS_FIRST:
        return t
    if lay.kind == L.TOKENS:
        t = t[:, lay.prefix:, :].reshape(-1, *lay.grid, t.shape[-1])
    return t.permute(0, t.ndim - 1, *range(1, t.ndim - 1))  # positive axes: the ONNX export's Transpose perm


class TorchPrimitives:
    """vjp / activations / layer_names / conv_weights / input_gradients for a TorchAdapter (which
    provides ``model``, ``_resolve``, ``_forward``, ``_tensor``, ``_guard`` and ``_scores``)."""

    def layer_names(self) -> list[str]:
        """Every named submodule (dotted names, as ``target_layer`` takes them)."""
        return [n for n, _ in self.model.named_modules() if n]

    def conv_weights(self, layer) -> np.ndarray:
        """The kernel of a convolution as (O, I/groups, kh, kw) float32 (transposed convs reordered)."""
        name, m = self._resolve(layer)
        w = getattr(m, "weight", None)
        if not isinstance(m, nn.modules.conv._ConvNd) or not isinstance(w, torch.Tensor) or w.ndim != 4:
            raise InputError(f"layer {name!r} is a {type(m).__name__}, not a 2-D convolution with a (O, I, kh, kw) "
                             "kernel; pass an nn.Conv2d")
        w = w.detach()
        if isinstance(m, nn.ConvTranspose2d):
            w = w.transpose(0, 1)
        return w.cpu().float().numpy().copy()

    def _tap(self, layers: list, store: dict):
        """Forward hooks keeping each layer's output (its last call), cloned so later in-place ops
        cannot alter it. Returns the handles."""
        handles = []
        for i, (name, m) in enumerate(layers):
            def keep(module, inputs, out, i=i, name=name):
                if not isinstance(out, torch.Tensor):
                    raise ModelError(f"layer {name!r} returns {type(out).__name__}, not a tensor")
                store[i] = out
                return out.clone()
            handles.append(m.register_forward_hook(keep))
        return handles

    @serialised
    def activations(self, x: np.ndarray, layers: list) -> list[np.ndarray]:
        """Forward only: each layer's output for ``x`` as (N, C, h, w) when it is a spatial map (see
        :meth:`_chw_view`), float32."""
        resolved = [self._resolve(ly) for ly in layers]
        self._target_layer_layout_at(x.shape[1:], [r[0] for r in resolved])
        store: dict[int, object] = {}
        handles = self._tap(resolved, store)
        try:
            with preserved(self.model), torch.no_grad():
                self._forward(self._tensor(x))
        finally:
            for h in handles:
                h.remove()
        missing = [resolved[i][0] for i in range(len(resolved)) if i not in store]
        if missing:
            raise ModelError(f"layer(s) {missing} were not called by the model's forward pass")
        return [self._chw_view(resolved[i][0], store[i], x.shape[1:]).detach().cpu().float().numpy()
                for i in range(len(resolved))]

    def _target_layer_layout_at(self, sample_shape: tuple, names: list) -> None:
        """Resolve the target layer's layout at this input size when ``names`` include it (without
        ``input_shape=`` nothing has yet: a channels-last layer would be read as (N, C, h, w))."""
        if self.layer_name is not None and self.layer_name in names:
            self._ensure_layout(tuple(sample_shape))

    def _chw_view(self, name: str, t: torch.Tensor, sample_shape: tuple) -> torch.Tensor:
        """Layer ``name``'s tensor as (N, C, h, w), differentiable: the target layer through its layout
        (or reshape=), another layer through the layout detected for it (channels-last maps permuted,
        tokens on their patch grid), so the feature tools read channels where they are. Tensors of
        other ranks, and rank-3 ones with no patch grid, stay as they are; a rank-4 tensor whose
        layout cannot be told raises LayoutError instead of being read as (N, C, h, w)."""
        if name == self.layer_name:
            return self.to_chw(t)
        if t.ndim not in (3, 4):
            return t
        cache = self.__dict__.setdefault("_view_layouts", {})
        key = (name, tuple(sample_shape))
        if key not in cache:
            probes = self.__dict__.setdefault("_view_probes", {})  # one probe forward per input shape, not per layer
            if tuple(sample_shape) not in probes:
                probes[tuple(sample_shape)] = self.probe(tuple(sample_shape))
            try:
                cache[key] = probes[tuple(sample_shape)].layout(name)
            except LayoutError:
                if t.ndim == 4:
                    raise
                cache[key] = None
        return layout_view(t, cache[key])

    @serialised
    def vjp(self, x: np.ndarray, layer, cotangent, rule: str = "vanilla") -> tuple[np.ndarray, np.ndarray]:
        """Forward ``x`` (N, C, H, W), then d<A, cotangent(A)>/dx with every ReLU under ``rule``.

        A is the explained output (N, K) when ``layer`` is None, else the layer's (last) output as
        (N, C, h, w) when it is a spatial map (:meth:`_chw_view`; the gradient flows through the view).
        Parameters are not differentiated (their ``.grad`` stays untouched).
        Returns (A float32, dx float32 (N, C, H, W)).
        """
        self._guard()
        if check_rule(rule) != "vanilla" and any(isinstance(m, torch.jit.ScriptModule) for m in self.model.modules()):
            raise ModelError(f"rule {rule!r} needs an eager PyTorch model: TorchScript modules run their ReLUs where "
                             "they cannot be intercepted. Explain the original (non-scripted) module")
        resolved = None if layer is None else self._resolve(layer)
        if resolved is not None:
            self._target_layer_layout_at(x.shape[1:], [resolved[0]])
        store: dict[int, object] = {}
        handles = [] if resolved is None else self._tap([resolved], store)
        try:
            with preserved(self.model), torch.enable_grad():
                for p in self.model.parameters():
                    p.requires_grad_(False)
                xt = self._tensor(x, requires_grad=True)
                with relu_rule(rule) as mode:
                    out = self._forward(xt)
                if mode is not None and mode.calls == 0:
                    raise ModelError(f"rule {rule!r} changes how gradients pass through ReLUs, but no ReLU was called "
                                     "in the forward pass (activations other than ReLU, or ReLUs inside TorchScript "
                                     "code, which cannot be intercepted); use rule 'vanilla' (e.g. method 'saliency')")
                if resolved is None:
                    a = out
                elif 0 not in store:
                    raise ModelError(f"layer {resolved[0]!r} was not called by the model's forward pass")
                else:
                    a = self._chw_view(resolved[0], store[0], x.shape[1:])
                a_np = a.detach().cpu().float().numpy()
                cot = np.asarray(cotangent(a_np), dtype=np.float32)
                if cot.shape != a_np.shape:
                    raise InputError(f"the cotangent must have the layer value's shape {a_np.shape}; got {cot.shape}")
                if not a.requires_grad:
                    return a_np, np.zeros(x.shape, np.float32)
                (gx,) = torch.autograd.grad(a, xt, torch.from_numpy(cot).to(a.device, a.dtype), allow_unused=True)
        finally:
            for h in handles:
                h.remove()
        gx_np = np.zeros(x.shape, np.float32) if gx is None else gx.detach().cpu().float().numpy()
        return a_np, gx_np

    def input_gradients(self, x: np.ndarray, target: TargetSpec, rule: str = "vanilla") -> Gradients:
        """d(score)/d(input) (N, C, H, W) under ``rule``, as one :meth:`vjp` of the output."""
        found: dict = {}

        def cotangent(out: np.ndarray) -> np.ndarray:
            classes = target.indices(out)
            found["classes"] = classes
            if classes is None:  # callable target: its own gradient, with autograd
                o = torch.from_numpy(out).requires_grad_(True)
                s = self._scores(o, None, target)
                (g,) = torch.autograd.grad(s.sum(), o, allow_unused=True)
                found["scores"] = s.detach().numpy().astype(np.float64)
                return np.zeros_like(out) if g is None else g.numpy()
            cot = np.zeros_like(out)
            cot[np.arange(out.shape[0]), classes] = 1.0
            found["scores"] = out[np.arange(out.shape[0]), classes].astype(np.float64)
            return cot

        out, gx = self.vjp(x, None, cotangent, rule)
        return Gradients(outputs=out.astype(np.float32), scores=found["scores"], classes=found["classes"],
                         input_grads=gx)

    def activation_census(self, sample_shape: tuple[int, ...] | None = None):
        """Activations called by one forward pass of a zero image of ``sample_shape`` (default the
        ``input_shape`` given at construction), cached; functional calls (``F.relu``, ``torch.sigmoid``)
        count too. Without any shape: the last traced census, else the activation modules only."""
        cache = self.__dict__.setdefault("_census", {})
        shape = sample_shape if sample_shape is not None else getattr(self, "input_shape", None)
        if shape is None:
            return next(iter(cache.values()), None) or module_census(self.model)
        key = tuple(shape)
        if key not in cache:
            x = self._tensor(np.zeros((1, *key), np.float32))
            with preserved(self.model), torch.no_grad():
                cache[key] = traced_census(lambda: self._forward(x))
        return cache[key]
