"""A query's own EXIF GPS against the answer: "was this shared photo really taken where it claims?".

When a query photo (a file or raw bytes) carries GPS of its own, ``Localizer.predict`` checks it:

* ``exif_distance_m``: distance between the EXIF position and the predicted position (NaN without EXIF GPS);
* flag ``exif_disagrees``: the EXIF position lies outside the predicted circle (``radius_m``);
* flag ``exif_outside_area``: the EXIF position lies outside the mapped area, i.e. the bounding box of the
  model's reference (training) positions in its local frame, widened by ``max(MIN_MARGIN_M,
  MARGIN_FRACTION x the box's larger side)``. Models that keep no positions skip this flag.

The check never changes the answer itself: the pixels are located as if the photo had no GPS.
"""
from __future__ import annotations

import weakref

import numpy as np

MIN_MARGIN_M = 100.0
MARGIN_FRACTION = 0.1


def exif_gps(src) -> tuple[float, float] | None:
    """(lat, lon) written in the EXIF/XMP of a path or bytes input; None for arrays, no GPS or any read error."""
    if isinstance(src, np.ndarray) or src is None:
        return None
    try:
        from campusgps.exif.metadata import read_metadata

        meta = read_metadata(src if isinstance(src, (bytes, bytearray)) else str(src))
    except Exception:  # the pixels are read (and errors reported) by load_image; metadata is optional
        return None
    if not meta.has_gps or not (np.isfinite(meta.lat) and np.isfinite(meta.lon)):
        return None
    if abs(meta.lat) > 90 or abs(meta.lon) > 180 or (meta.lat == 0 and meta.lon == 0):
        return None
    return float(meta.lat), float(meta.lon)


_BOXES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def mapped_box_en(localizer) -> np.ndarray | None:
    """[[east_min, north_min], [east_max, north_max]] of the mapped area with its margin, or None (cached)."""
    key = (len(getattr(localizer, "ref_en", ())), id(localizer.frame))
    try:
        hit = _BOXES.get(localizer)
    except TypeError:
        hit = None
    if hit is not None and hit[0] == key:
        return hit[1]
    box = _box(localizer)
    try:
        _BOXES[localizer] = (key, box)
    except TypeError:
        pass
    return box


def _box(localizer) -> np.ndarray | None:
    try:
        rp = localizer.reference_positions()
    except Exception:
        rp = None
    if not rp or len(rp.get("lat", ())) == 0 or localizer.frame is None:
        return None
    e, n = localizer.frame.to_local(np.asarray(rp["lat"], float), np.asarray(rp["lon"], float))
    en = np.stack([np.asarray(e, float), np.asarray(n, float)], axis=1)
    en = en[np.isfinite(en).all(axis=1)]
    if not len(en):
        return None
    lo, hi = en.min(axis=0), en.max(axis=0)
    margin = max(MIN_MARGIN_M, MARGIN_FRACTION * float((hi - lo).max()))
    return np.stack([lo - margin, hi + margin])


def check_one(localizer, lat: float, lon: float, radius_m: float, gps) -> tuple[list[str], float]:
    """(flags, exif_distance_m) for one answer (lat, lon, radius_m) and the query's EXIF GPS (or None)."""
    from campusgps.geo import haversine_m

    if gps is None:
        return [], float("nan")
    flags, dist = [], float("nan")
    box = mapped_box_en(localizer)
    if box is not None:
        e, n = localizer.frame.to_local(gps[0], gps[1])
        if not (box[0, 0] <= float(e) <= box[1, 0] and box[0, 1] <= float(n) <= box[1, 1]):
            flags.append("exif_outside_area")
    if np.isfinite(lat) and np.isfinite(lon):
        dist = float(haversine_m(gps[0], gps[1], lat, lon))
        if not dist <= radius_m:
            flags.append("exif_disagrees")
    return flags, dist


def apply_exif_checks(localizer, pred, gps: list[tuple[float, float] | None]) -> None:
    """Fill ``pred.exif_distance_m`` and add the ``exif_*`` flags for the rows whose input had GPS."""
    for i, g in enumerate(gps):
        if g is not None:
            flags, pred.exif_distance_m[i] = check_one(localizer, pred.lat[i], pred.lon[i], pred.radius_m[i], g)
            pred.flags[i] = list(pred.flags[i]) + flags
