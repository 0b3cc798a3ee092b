"""Geometry: WGS84 <-> local east/north metres, geodesic distances, bearings."""
from campusgps.geo.frame import LocalFrame, bearing_deg, haversine_m, haversine_torch

__all__ = ["LocalFrame", "haversine_m", "haversine_torch", "bearing_deg"]
