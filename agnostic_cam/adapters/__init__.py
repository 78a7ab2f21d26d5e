"""Framework adapters. Each framework module is imported only when its constructor is used."""
from agnostic_cam.adapters.base import Adapter, Gradients, check_images

__all__ = ["Adapter", "Gradients", "check_images"]
