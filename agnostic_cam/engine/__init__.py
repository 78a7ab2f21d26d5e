"""ONNX Runtime engine: sessions, batching and graph surgery."""
from agnostic_cam.engine.graph import LayerInfo, Tail, cut_tail, spatial_tensors, with_outputs
from agnostic_cam.engine.session import OnnxEngine, default_providers, load_model

__all__ = ["OnnxEngine", "default_providers", "load_model", "LayerInfo", "Tail", "cut_tail",
           "spatial_tensors", "with_outputs"]
