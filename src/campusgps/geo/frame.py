"""Local metric frame around a dataset origin, and geodesic helpers.

All internal work happens in a local east/north frame (metres) whose origin is stored with the dataset
(``frame.json``) and in every model bundle. Conversion to and from WGS84 uses pyproj's azimuthal
equidistant projection centred on the origin, which is exact in distance from the origin and accurate to
well under a millimetre across a campus.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from pyproj import Geod, Transformer

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius, used by the haversine distance
_GEOD = Geod(ellps="WGS84")


@dataclass(frozen=True)
class LocalFrame:
    """East/north metres around (lat0, lon0). Immutable; serialisable to a small JSON dict."""

    lat0: float
    lon0: float
    alt0: float = 0.0
    crs: str = field(default="aeqd", compare=False)

    def __post_init__(self):
        if not (-90.0 <= self.lat0 <= 90.0 and -180.0 <= self.lon0 <= 180.0):
            raise ValueError(f"frame origin out of range: lat0={self.lat0}, lon0={self.lon0}")

    @cached_property
    def _proj(self) -> str:
        return f"+proj=aeqd +lat_0={self.lat0!r} +lon_0={self.lon0!r} +datum=WGS84 +units=m +no_defs"

    @cached_property
    def _fwd(self) -> Transformer:
        return Transformer.from_crs("EPSG:4326", self._proj, always_xy=True)

    @cached_property
    def _inv(self) -> Transformer:
        return Transformer.from_crs(self._proj, "EPSG:4326", always_xy=True)

    def to_local(self, lat, lon) -> tuple[np.ndarray, np.ndarray]:
        """WGS84 degrees -> (east_m, north_m). Accepts scalars or arrays; returns float64 arrays."""
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        e, n = self._fwd.transform(lon, lat)
        return np.asarray(e, dtype=np.float64), np.asarray(n, dtype=np.float64)

    def to_wgs84(self, east, north) -> tuple[np.ndarray, np.ndarray]:
        """(east_m, north_m) -> WGS84 (lat, lon) degrees as float64 arrays."""
        east = np.asarray(east, dtype=np.float64)
        north = np.asarray(north, dtype=np.float64)
        lon, lat = self._inv.transform(east, north)
        return np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)

    # --- construction / persistence -------------------------------------------------------------
    @classmethod
    def from_points(cls, lat, lon) -> "LocalFrame":
        """Origin at the median of the given points (robust to a few outliers)."""
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        if lat.size == 0:
            raise ValueError("cannot build a local frame from zero points")
        return cls(lat0=float(np.median(lat)), lon0=float(np.median(lon)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["proj"] = self._proj
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LocalFrame":
        return cls(lat0=float(d["lat0"]), lon0=float(d["lon0"]), alt0=float(d.get("alt0", 0.0)))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "LocalFrame":
        return cls.from_dict(json.loads(Path(path).read_text()))


def haversine_m(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in metres (vectorised numpy, broadcasting)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def haversine_torch(lat1, lon1, lat2, lon2, eps: float | None = None):
    """Differentiable haversine distance in metres for torch tensors (degrees in).

    ``asin(sqrt(a))`` has an infinite derivative at a == 0 (prediction == target). We use the equivalent
    ``2*atan2(sqrt(a), sqrt(1-a))`` with ``sqrt(a + eps)`` so gradients stay finite everywhere. ``eps``
    defaults to the dtype's smallest normal number: a larger one biases the distance (``a`` is in units of
    the Earth's radius squared: eps=1e-12 would add 12.7 m at zero distance).
    """
    import torch

    if eps is None:
        eps = torch.finfo(lat1.dtype if torch.is_tensor(lat1) and lat1.is_floating_point()
                          else torch.get_default_dtype()).tiny

    d2r = math.pi / 180.0
    p1, p2 = lat1 * d2r, lat2 * d2r
    dphi = p2 - p1
    dlmb = (lon2 - lon1) * d2r
    a = torch.sin(dphi / 2) ** 2 + torch.cos(p1) * torch.cos(p2) * torch.sin(dlmb / 2) ** 2
    a = a.clamp(0.0, 1.0)
    return 2 * EARTH_RADIUS_M * torch.atan2(torch.sqrt(a + eps), torch.sqrt((1 - a).clamp_min(eps)))


def bearing_deg(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Initial bearing from point 1 to point 2, degrees clockwise from north in [0, 360)."""
    lat1, lon1, lat2, lon2 = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (lat1, lon1, lat2, lon2))
    )
    az, _, _ = _GEOD.inv(lon1, lat1, lon2, lat2)
    return np.mod(np.asarray(az, dtype=np.float64), 360.0)


def geodesic_m(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Ellipsoidal (WGS84) distance in metres via pyproj.Geod; the reference for tests."""
    lat1, lon1, lat2, lon2 = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (lat1, lon1, lat2, lon2))
    )
    _, _, d = _GEOD.inv(lon1, lat1, lon2, lat2)
    return np.asarray(d, dtype=np.float64)
