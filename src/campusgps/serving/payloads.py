"""The JSON the server answers: locate results, model metadata and the basemap's reference positions.

Only the :class:`~campusgps.localizers.base.Localizer` interface is used, so every method works: neighbours
come from ``Prediction.neighbors``, thumbnails from ``reference_thumbnail(id)``, basemap points from the
optional ``reference_positions()``.
"""
from __future__ import annotations

import re

import numpy as np

from campusgps import __version__
from campusgps.answers import alternatives_json
from campusgps.jsonio import finite_or_none, jsonable

IMAGE_FIELD = "image"                 # multipart field of the photo
MAX_NEIGHBORS = 20                    # supporting photos listed per answer
MAX_REFERENCE_POINTS = 20_000         # basemap points sent to the page (evenly subsampled above)
REF_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain. (N, 2) -> (M, 2) hull vertices, counter-clockwise (M <= N)."""
    pts = np.unique(np.asarray(points, dtype=np.float64), axis=0)
    if len(pts) <= 2:
        return pts
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in pts[::-1]:
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def reference_payload(localizer) -> dict:
    """The model's reference positions for the page's offline basemap (points + outline).

    Uses the optional ``localizer.reference_positions()``; accepts a dict of arrays, a DataFrame, a list
    of dicts or an (N, 2) lat/lon array. Falls back to an empty set (the page then centres on the frame
    origin) if the method keeps no positions or returns something unusable.
    """
    empty = {"available": False, "n": 0, "lat": [], "lon": [], "id": None, "hull": [], "subsampled": False}
    fn = getattr(localizer, "reference_positions", None)
    if not callable(fn):
        return empty
    try:
        raw = fn()
    except Exception:  # noqa: BLE001 - a basemap must never stop the server
        return empty
    if raw is None:
        return empty
    try:
        ids = None
        if hasattr(raw, "to_dict") and hasattr(raw, "columns"):  # pandas DataFrame
            raw = {c: raw[c].to_numpy() for c in raw.columns}
        if isinstance(raw, (list, tuple)) and raw and isinstance(raw[0], dict):
            raw = {k: [r.get(k) for r in raw] for k in ("lat", "lon", "id")}
        if isinstance(raw, dict):
            lat = np.asarray(raw["lat"], dtype=np.float64).ravel()
            lon = np.asarray(raw["lon"], dtype=np.float64).ravel()
            if raw.get("id") is not None and len(raw["id"]) == len(lat) and all(x is not None for x in raw["id"]):
                ids = [str(x) for x in raw["id"]]
        else:
            arr = np.asarray(raw, dtype=np.float64)
            lat, lon = arr[:, 0], arr[:, 1]
        ok = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            return empty
        hull = convex_hull(np.stack([lat[idx], lon[idx]], axis=1))
        subsampled = len(idx) > MAX_REFERENCE_POINTS
        if subsampled:
            idx = idx[np.linspace(0, len(idx) - 1, MAX_REFERENCE_POINTS).round().astype(int)]
        return {"available": True, "n": int(ok.sum()),
                "lat": np.round(lat[idx], 7).tolist(), "lon": np.round(lon[idx], 7).tolist(),
                "id": [ids[i] for i in idx] if ids else None,
                "hull": np.round(hull, 7).tolist(), "subsampled": bool(subsampled)}
    except Exception:  # noqa: BLE001
        return empty


def thumbnails_supported(localizer, refs: dict) -> bool:
    from campusgps.localizers.base import Localizer

    fn = getattr(type(localizer), "reference_thumbnail", None)
    if fn is None or fn is Localizer.reference_thumbnail:
        return False
    if refs.get("id"):  # probe one: methods that can keep thumbnails may have been trained without
        try:
            return localizer.reference_thumbnail(refs["id"][0]) is not None
        except Exception:  # noqa: BLE001
            return False
    return True



def neighbor_json(d: dict, thumbs: bool) -> dict:
    """One supporting reference photo: position, score, the model's other fields, and its thumbnail URL."""
    out = jsonable({k: v for k, v in d.items() if k not in ("image", "thumbnail", "descriptor")},
                   max_depth=4, max_items=64)
    out["lat"], out["lon"] = finite_or_none(d.get("lat")), finite_or_none(d.get("lon"))
    out["score"] = finite_or_none(d.get("score"))
    rid = d.get("id")
    if thumbs and rid is not None and REF_ID_RE.match(str(rid)):
        out["thumbnail"] = f"v1/reference/{rid}/thumb.jpg"
    return out


def locate_payload(server, res: dict, lat: float, lon: float, timing: dict) -> dict:
    """The answer of ``POST /v1/locate`` for one batcher result ``res`` (``timing``: read/decode/elapsed ms)."""
    tm = res.get("timing", {})
    return {
        "lat": lat, "lon": lon, "radius_m": finite_or_none(res["radius_m"]),
        "confidence": finite_or_none(res.get("confidence")),
        "alternatives": alternatives_json(res.get("alternatives")),
        "neighbors": [neighbor_json(d, server.thumbs) for d in list(res["neighbors"] or [])[:MAX_NEIGHBORS]],
        "flags": [str(f) for f in (res["flags"] or [])],
        "exif_distance_m": finite_or_none(res.get("exif_distance_m", float("nan"))),
        "elapsed_ms": timing["elapsed"],
        "method": server.method,
        "timing_ms": {"read": timing["read"], "decode": timing["decode"],
                      "queue": round(tm.get("queue_ms", 0.0), 2), "predict": round(tm.get("predict_ms", 0.0), 2),
                      "batch_size": tm.get("batch_size", 1)},
    }


def model_payload(server) -> dict:
    """The answer of ``GET /v1/model``: bundle metadata, reference positions, frame origin, server options."""
    settings, b, frame = server.settings, server.batcher, server.frame
    return {
        **server.meta,
        "reference": server.refs,
        "origin": {"lat": frame.lat0, "lon": frame.lon0} if frame is not None else None,
        "server": {"campusgps_version": __version__, "image_field": IMAGE_FIELD,
                   "max_upload_bytes": settings.max_upload_bytes, "max_pixels": settings.max_pixels,
                   "input_max_side": server.max_side, "thumbnails": server.thumbs,
                   "tiles_url": settings.tiles_url, "tiles_attribution": settings.tiles_attribution,
                   "max_batch": settings.max_batch, "workers": settings.workers,
                   "stats": {"served": server.served, "batches": b.batches if b else 0,
                             "images": b.images if b else 0}},
    }
