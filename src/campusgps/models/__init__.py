"""Backbones (registry, preprocessing, fast paths), the feature cache, heads, losses and augmentation.

Heavy libraries (torch, cv2, onnxruntime) are imported inside functions; importing this package is cheap.
"""
from campusgps.models.backbones import Backbone, available_backbones, get_backbone  # noqa: F401
from campusgps.models.features import FeatureCache  # noqa: F401
