"""GPS position and capture time from an XMP packet, for files whose EXIF lacks them.

Editors (Lightroom, Photoshop, IPTC tools) and some drones and thermal cameras keep GPS only in XMP, as
``exif:GPSLatitude="0,4.21601S"`` (degrees, decimal minutes, hemisphere) or ``"38,53,24.85N"`` (degrees,
minutes, seconds) in attribute or element form; times as ``exif:DateTimeOriginal``, ``xmp:CreateDate`` or
``photoshop:DateCreated`` in ISO 8601. The packet is read with regular expressions, not an XML parser:
packets in the wild are often not well-formed, and nothing here needs the tree (no entity expansion either).
"""
from __future__ import annotations

import math
import re
from typing import Any

from campusgps.exif.times import format_iso, parse_time

_TIME_TAGS = ("DateTimeOriginal", "CreateDate", "DateCreated", "DateTimeDigitized")
_COORD = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)(?:\s*,\s*(\d+(?:\.\d+)?))?(?:\s*,\s*(\d+(?:\.\d+)?))?\s*([NSEW])?\s*$",
                    re.IGNORECASE)


def xmp_text(im) -> str | None:
    """The XMP packet of an opened PIL image (JPEG APP1, PNG iTXt, TIFF tag 700, WebP, HEIF), or None."""
    info = getattr(im, "info", {}) or {}
    raw: Any = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if raw is None:
        try:
            raw = getattr(im, "tag_v2", {}).get(700)
        except Exception:
            raw = None
    if raw is None:
        return None
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw).decode("utf-8", "replace")
    return str(raw) if "xmpmeta" in str(raw) or "rdf:RDF" in str(raw) else None


def _value(xmp: str, name: str) -> str | None:
    """First value of property ``name`` (any namespace prefix), attribute or simple-element form."""
    m = re.search(rf"[\s<][\w-]+:{name}\s*=\s*([\"'])(.*?)\1", xmp, re.DOTALL)
    if m and m.group(2).strip():
        return m.group(2).strip()
    m = re.search(rf"<[\w-]+:{name}>\s*([^<]+?)\s*</[\w-]+:{name}>", xmp, re.DOTALL)
    return m.group(1).strip() if m else None


def xmp_coordinate(text: str | None, axis: str) -> float | None:
    """``"0,4.21601S"`` / ``"38,53,24.85N"`` / ``"-77.0493"`` -> signed decimal degrees, or None.

    ``axis`` is ``"lat"`` or ``"lon"``: the hemisphere letter must fit it and the value its range.
    """
    if not text:
        return None
    m = _COORD.match(text)
    if not m:
        return None
    d, mins, secs, ref = m.group(1), m.group(2), m.group(3), (m.group(4) or "").upper()
    if ref and ref not in ("NS" if axis == "lat" else "EW"):
        return None
    deg = abs(float(d)) + float(mins or 0) / 60.0 + float(secs or 0) / 3600.0
    if (mins and float(mins) >= 60) or (secs and float(secs) >= 60):
        return None
    neg = ref in ("S", "W") or (not ref and d.strip().startswith("-"))
    val = -deg if neg else deg
    limit = 90.0 if axis == "lat" else 180.0
    return val if math.isfinite(val) and abs(val) <= limit else None


def read_xmp(xmp: str | None) -> dict:
    """``{"lat", "lon", "taken_at"}`` found in an XMP packet (keys absent when not there)."""
    out: dict = {}
    if not xmp:
        return out
    lat = xmp_coordinate(_value(xmp, "GPSLatitude"), "lat")
    lon = xmp_coordinate(_value(xmp, "GPSLongitude"), "lon")
    if lat is not None and lon is not None:
        out["lat"], out["lon"] = lat, lon
    for tag in _TIME_TAGS:
        v = _value(xmp, tag)
        p = parse_time(v)
        if p is not None:
            out["taken_at"] = format_iso(*p)
            break
    return out


__all__ = ["read_xmp", "xmp_text", "xmp_coordinate"]
