"""agnostic-cam: explain image classifiers from any framework behind one API.

>>> from agnostic_cam import Explainer
>>> ex = Explainer.from_torch(model, target_layer="layer4")            # doctest: +SKIP
>>> exp = ex.explain(images, method="gradcam")                         # doctest: +SKIP

Importing this package imports neither torch, tensorflow nor matplotlib.

The public API is what ``__all__`` lists plus the documented modules: :mod:`agnostic_cam.targets`,
:mod:`agnostic_cam.evaluation` (metrics, ROAD, sanity checks), :mod:`agnostic_cam.audit` (``run``),
:mod:`agnostic_cam.core.layout` (``LayerLayout``), :mod:`agnostic_cam.inputs.preprocess`
(``Preprocess``), :mod:`agnostic_cam.render.figures`, :mod:`agnostic_cam.errors` and
:mod:`agnostic_cam.methods` (``Method``, ``CamMethod``, ``register``). Everything else is private
and may move; the import paths earlier documentation showed keep working (:mod:`agnostic_cam._moved`).
"""
from agnostic_cam._version import __version__
from agnostic_cam import _moved

_moved.install()  # old import paths (agnostic_cam.metrics, ...) answer with the moved modules

from agnostic_cam import errors
from agnostic_cam.errors import AgnosticCamError
from agnostic_cam.explainer import Explainer
from agnostic_cam.core.explanation import Explanation
from agnostic_cam.compare import compare
from agnostic_cam.methods import CamMethod, Capture, Method, Needs, get_method, register, registry

__all__ = ["__version__", "AgnosticCamError", "errors", "Explainer", "Explanation", "CamMethod", "Capture", "Method", "Needs",
           "get_method", "register", "registry", "compare"]
