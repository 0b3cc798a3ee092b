"""Backbone input preprocessing: resize the WHOLE photo to ``input_size`` x ``input_size`` (no crop --
geolocation needs the whole scene), then per-channel normalisation inside the network input (channels-last),
so the exported ONNX graph takes the same uint8 batch.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

PREPROC_VERSION = "resize-full-v2"  # bump when preprocessing changes (part of every backbone key)


def signature(spec) -> str:
    """What the backbone key hashes about preprocessing (a ``BackboneSpec``)."""
    return f"{PREPROC_VERSION}|{spec.input_size}|{spec.mean}|{spec.std}"


def resize_batch(images: Sequence[np.ndarray], size: int | tuple[int, int]) -> np.ndarray:
    """RGB arrays of any size/dtype -> (N, S, S, 3) uint8: the WHOLE image resized to S x S (no crop).

    ``size`` may also be (H, W)."""
    import cv2

    from campusgps.exif.image import as_rgb_array

    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    out = np.empty((len(images), h, w, 3), np.uint8)
    for i, im in enumerate(images):
        a = as_rgb_array(im)
        # area averaging when shrinking >= 3x (anti-aliasing), bilinear otherwise (5x cheaper)
        interp = cv2.INTER_AREA if min(a.shape[:2]) >= 3 * min(h, w) else cv2.INTER_LINEAR
        out[i] = cv2.resize(a, (w, h), interpolation=interp)
    return out


def normalise(spec, x):
    """uint8 NHWC tensor -> normalised float NCHW tensor in channels-last layout."""
    import torch

    mean = torch.tensor(spec.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    inv = torch.tensor([1.0 / v for v in spec.std], dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    x = x.permute(0, 3, 1, 2).float()  # NHWC storage == channels-last NCHW
    return ((x - mean) * inv).contiguous(memory_format=torch.channels_last)
