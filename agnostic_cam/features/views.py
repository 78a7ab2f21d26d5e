"""Feature visualisation on an :class:`~agnostic_cam.explainer.Explainer`: thin delegates to
:mod:`agnostic_cam.features` (feature maps, Deep Feature Factorization, filters, deconvnet
reconstructions, class models, filter maximisation, DeepDream, inversion).

A mixin of ``Explainer``; it reads the explainer's ``adapter``, ``progress``, ``partial_rules`` and
``_inputs``.
"""
from __future__ import annotations

from typing import Any

from agnostic_cam.core import relu_policy
class FeatureViews:
    """The feature-visualisation methods of ``Explainer``."""

    def _layer(self, layer):
        return self.adapter.layer_name if layer is None else layer

    def _progress(self, options: dict) -> dict:
        options.setdefault("progress", self.progress)
        return options

    def feature_maps(self, images: Any, layer=None, top_k: int = 16, channels=None):
        """Activations of ``layer`` (default: the target layer): the ``top_k`` channels by mean
        activation, or the chosen ``channels``. Returns :class:`~agnostic_cam.features.FeatureMaps`."""
        from agnostic_cam.features import feature_maps

        return feature_maps(self.adapter, self._inputs(images), self._layer(layer), top_k, channels)

    def feature_factorization(self, images: Any, n_components: int = 5):
        """Deep Feature Factorization (Collins et al. 2018) of the target layer's activations over
        ``images``: ``n_components`` concepts, where each sits in each image, and the classes each
        concept scores highest. Returns :class:`~agnostic_cam.features.factorization.Factorization`
        (``.figure()`` shows the concepts per image). Needs scikit-learn (NMF)."""
        from agnostic_cam.features.factorization import feature_factorization

        return feature_factorization(self, self._inputs(images), n_components)

    def filters(self, layer=None):
        """The kernel of convolution ``layer`` as images. Returns :class:`~agnostic_cam.features.Filters`."""
        from agnostic_cam.features import filters

        return filters(self.adapter, self._layer(layer))

    def deconv_reconstruction(self, image: Any, layer=None, top_k: int = 5, **options):
        """Deconvnet projections (Zeiler & Fergus 2014) of the ``top_k`` strongest filters of ``layer``
        for one image (1, ...). Returns a :class:`~agnostic_cam.features.Visualisation`."""
        from agnostic_cam.features import deconv_reconstruction

        x = self._inputs(image)
        partial = options.pop("partial_rules", self.partial_rules)
        relu_policy.enforce(self.adapter, options.get("rule", "deconv"), "deconv_reconstruction", x.shape[1:], partial)
        return deconv_reconstruction(self.adapter, x, self._layer(layer), top_k, **options)

    def class_model(self, target, **options):
        """Images maximising class ``target``'s score (Simonyan et al. 2014); one per target.
        Options: shape, seed, steps, lr, l2, jitter, blur_sigma, clip, progress, callback, ..."""
        from agnostic_cam.features import class_model

        return class_model(self.adapter, target, **self._progress(options))

    def filter_maximisation(self, layer, channel, **options):
        """Images maximising the mean activation of ``channel`` (int or list) of ``layer``."""
        from agnostic_cam.features import filter_maximisation

        return filter_maximisation(self.adapter, self._layer(layer), channel, **self._progress(options))

    def deep_dream(self, image: Any, layer=None, octaves: int = 3, **options):
        """DeepDream of one image (1, ...) at ``layer`` over ``octaves`` scales."""
        from agnostic_cam.features import deep_dream

        return deep_dream(self.adapter, self._inputs(image), self._layer(layer), octaves, **self._progress(options))

    def invert(self, image: Any, layer=None, **options):
        """An image whose representation at ``layer`` matches ``image``'s (Mahendran & Vedaldi 2015)."""
        from agnostic_cam.features import invert

        return invert(self.adapter, self._inputs(image), self._layer(layer), **self._progress(options))
