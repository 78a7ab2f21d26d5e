"""The PyTorch adapter's front door: which output is explained (``output=``, see
:mod:`~agnostic_cam.adapters.pytorch.outputs`), the automatic target layer (one rule,
:func:`~agnostic_cam.adapters.pytorch.pick.torch_pick`) and what ``ex.describe()`` says about both."""
from __future__ import annotations

import numpy as np
from torch import nn

from agnostic_cam.adapters.pytorch.pick import guess_sample_shape, torch_pick
from agnostic_cam.adapters.pytorch import outputs as O
from agnostic_cam.adapters.pytorch.checks import forward_failure
from agnostic_cam.adapters.pytorch.primitives import hooked, preserved
from agnostic_cam.errors import AgnosticCamError, ModelError, OptionError


class TorchFront:
    """Mixin of TorchAdapter (``self.model``, ``self.output``)."""

    layer_reason = ""  # why the target layer is the one it is (automatic pick), for describe()
    _seen_output = None  # the model's output on the last probe (structure only matters)

    def _check_output_option(self, output) -> None:
        if isinstance(output, bool) or not isinstance(output, (str, int)):
            raise OptionError(f"output must be 'raw' (the model's own output; its 'logits' for Hugging Face models), "
                              f"'pre_softmax', 'logits', a structured output's key or a tuple output's index; "
                              f"got {output!r}")
        last = None
        for m in self.model.modules():
            last = m
        ends_in_softmax = isinstance(last, (nn.Softmax, nn.LogSoftmax))
        if output == O.PRE_SOFTMAX and not ends_in_softmax:
            raise ModelError("output='pre_softmax' needs a model whose last module is nn.Softmax (or nn.LogSoftmax), "
                             "so its input (the logits) can be read without changing the model; this model's last "
                             f"module is {type(last).__name__}. If it already returns logits, use output='raw'")
        self._softmax_head = last if ends_in_softmax and output in (O.PRE_SOFTMAX, O.LOGITS) else None

    def _pre_softmax(self, out) -> bool:
        """Whether the explained tensor is the final softmax's input ('logits' on a model without a 'logits' key)."""
        if self._softmax_head is None:
            return False
        return self.output == O.PRE_SOFTMAX or "logits" not in (O.fields(out) or {})

    def _select(self, out):
        """The explained tensor of a model output (what the head detection of the automatic layer compares)."""
        return O.select_output(out, O.RAW if self._pre_softmax(out) else self.output, self.model)

    def _auto_layer(self, sample_shape):
        """The automatic layer's name at ``sample_shape`` (None: guessed); checks ``output=`` on the way."""
        pick = torch_pick(self.model, sample_shape, self._select)
        self.layer_reason = f"picked automatically: {pick.reason}"
        self._seen_output = pick.probe.output
        return pick.name

    def _check_output(self, out) -> None:
        """Refuse an ``output=`` the model's output does not have (an OptionError listing its keys)."""
        self._seen_output = out
        self._select(out)

    def _check_input_dependent(self, p, sample_shape, examples: str = "") -> None:
        """Refuse a target layer whose tensor does not depend on the image (built from weights only, e.g.
        a relative position bias) or has no batch axis: its maps would be one map for all images. Told by
        autograd with the weights detached (``torch.func.functional_call``): the tensor needs no
        gradient from the input."""
        import itertools

        import torch

        name, shape = self.layer_name, p.shapes[self.layer_name]
        weights = {n: t.detach() for n, t in itertools.chain(self.model.named_parameters(), self.model.named_buffers())}
        store = []
        try:
            with preserved(self.model), torch.enable_grad(), hooked(self.layer, lambda m, i, o: store.append(o)):
                x = self._tensor(np.zeros((1, *sample_shape), np.float32), requires_grad=True)
                torch.func.functional_call(self.model, weights, (x,))
        except Exception:  # noqa: BLE001 - the model does not run this way: no check (its maps are checked later)
            return
        if store and isinstance(store[-1], torch.Tensor) and store[-1].is_floating_point() and not store[-1].requires_grad:
            self._last_shape = None  # checked again at the next call (never explained unchecked)
            raise ModelError(f"layer {name!r} does not depend on the input image: it is built from weights only (e.g. a "
                             "relative position bias) and has nothing to explain about an image. Pick a feature map "
                             f"of the model{examples}")
        if shape[0] != 1:
            self._last_shape = None
            raise ModelError(f"layer {name!r} does not keep the batch as its first axis (shape {shape} for one image: "
                             "images folded with windows or heads), so its maps cannot be told apart per image. "
                             f"Pick a feature map of the model{examples}")

    def _early_output_check(self) -> None:
        """Without input_shape: one zero image of the shape the model was built for, to refuse a wrong
        ``output=`` key now; skipped when the model fails on that guessed shape (checked at explain)."""
        if self.output in (O.RAW, O.PRE_SOFTMAX):
            return
        try:
            out = self.probe(guess_sample_shape(self.model)).output
        except AgnosticCamError:
            return
        self._check_output(out)

    def _forward(self, x):
        """Model output, or its pre-softmax input (output='pre_softmax', or 'logits' without a 'logits' key)."""
        try:
            if self._softmax_head is None:
                out = self.model(x)
                return O.select_output(out, self.output, self.model)
            store = []
            with hooked(self._softmax_head, lambda m, i, o: store.append(i[0])):
                out = self.model(x)
        except AgnosticCamError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's model failed on this input: say what it expects
            raise forward_failure(e, tuple(x.shape), self.channels) from e
        return store[-1] if self._pre_softmax(out) else O.select_output(out, self.output, self.model)

    def describe_lines(self) -> list[str]:
        lines = []
        if self._seen_output is not None:
            lines.append(O.describe(self._seen_output, self.output, self._pre_softmax(self._seen_output)))
        if self.layer_name is not None:
            why = self.layer_reason or "named by the caller"
            lay = f" read as {self.layer_layout}" if getattr(self, "layer_layout", None) is not None else ""
            lines.append(f"layer {self.layer_name!r}{lay}: {why}")
        return lines
