"""Pinhole phone camera: pose, field of view, 35 mm-equivalent focal length."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)


@dataclass
class Camera:
    x: float                 # east, metres
    y: float                 # north, metres
    z: float = 1.5           # height above ground, metres
    heading_deg: float = 0.0  # clockwise from north
    pitch_deg: float = 0.0   # up positive
    roll_deg: float = 0.0    # clockwise positive
    hfov_deg: float = 66.0   # horizontal field of view
    width: int = 320
    height: int = 240

    def focal_px(self) -> float:
        return (self.width / 2) / math.tan(math.radians(self.hfov_deg) / 2)

    def focal_35mm(self) -> float:
        """35 mm-equivalent focal length (diagonal convention, as phones write it)."""
        diag_px = math.hypot(self.width, self.height)
        return FULL_FRAME_DIAGONAL_MM * self.focal_px() / diag_px

    def to_dict(self) -> dict:
        return asdict(self)
