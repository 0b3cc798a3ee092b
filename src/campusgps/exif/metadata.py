"""EXIF metadata that matters for localisation: GPS position, its accuracy, time, camera, focal length.

GPS and time missing from EXIF are taken from the file's XMP packet when it has them (:mod:`.xmp`);
capture times keep their offset when the photo gives one (:mod:`.times`).

Reading (:func:`read_metadata`) goes through Pillow's ``getexif()`` / ``get_ifd()`` so JPEG, PNG (``eXIf``
chunk), TIFF, WebP and HEIC/HEIF (via pillow-heif) all work the same way, and only the header is parsed:
no pixels are decoded. GPS coordinates are accepted in every shape phones write them: three rationals
(degrees, minutes, seconds; Samsung and Apple), a single rational in decimal degrees, zero-denominator
rationals (treated as missing), and ``S``/``W`` references given as str or bytes.

Writing (:func:`gps_exif_bytes`) builds an EXIF block with piexif in the same layout a phone uses; the
simulator and the tests use it to make realistic geotagged files::

    im.save("p.jpg", exif=gps_exif_bytes(31.2620, 34.8010, alt=280.0, accuracy_m=4.0))
"""
from __future__ import annotations

import datetime as _dt
import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Union

from PIL import Image

from campusgps.exif.times import exif_time_iso, gps_time_iso
from campusgps.exif.xmp import read_xmp, xmp_text

try:  # HEIC/HEIF (iPhone photos); importing campusgps.exif.image registers it too
    import pillow_heif

    pillow_heif.register_heif_opener()
except Exception:  # pragma: no cover - required by pyproject, optional at import time
    pillow_heif = None

# Tag numbers (EXIF 2.32 / TIFF 6). Named here so the code reads without a lookup table.
_IFD_EXIF, _IFD_GPS = 0x8769, 0x8825
_MAKE, _MODEL, _ORIENTATION, _DATETIME = 271, 272, 274, 306
_DT_ORIGINAL, _DT_DIGITIZED = 36867, 36868
_OFFSET, _OFFSET_ORIGINAL, _OFFSET_DIGITIZED = 36880, 36881, 36882
_SUBSEC, _SUBSEC_ORIGINAL, _SUBSEC_DIGITIZED = 37520, 37521, 37522
# (date-time tag, 0 = IFD0 / 1 = Exif IFD, its SubSecTime* tag, its OffsetTime* tag), most specific first
_TIME_TAGS = ((_DT_ORIGINAL, 1, _SUBSEC_ORIGINAL, _OFFSET_ORIGINAL), (_DT_DIGITIZED, 1, _SUBSEC_DIGITIZED,
              _OFFSET_DIGITIZED), (_DATETIME, 0, _SUBSEC, _OFFSET))
_FOCAL, _FOCAL_35 = 37386, 41989
_FP_XRES, _FP_YRES, _FP_UNIT = 41486, 41487, 41488
_EXIF_W, _EXIF_H = 40962, 40963
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4
_GPS_ALT_REF, _GPS_ALT, _GPS_TIME, _GPS_DOP = 5, 6, 7, 11
_GPS_IMGDIR = 17
_GPS_DATE, _GPS_HPE = 29, 31

FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 43.27 mm
NOMINAL_UERE_M = 5.0  # metres per unit of DOP when only GPSDOP is known (typical phone receiver)
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # FocalPlaneResolutionUnit -> mm per unit

MetaSource = Union[str, Path, bytes, bytearray, Image.Image]


@dataclass
class PhotoMeta:
    """What one photo's EXIF says. Every field is ``None`` when the photo does not say it."""

    lat: float | None = None            # WGS84 degrees, negative south
    lon: float | None = None            # WGS84 degrees, negative west
    alt: float | None = None            # metres above sea level (negative below)
    accuracy_m: float | None = None     # horizontal accuracy: GPSHPositioningError, else DOP x NOMINAL_UERE_M
    dop: float | None = None            # GPSDOP as written
    heading_deg: float | None = None    # GPSImgDirection (camera heading), degrees
    taken_at: str | None = None         # ISO 8601; with offset when the photo gives one
    make: str | None = None
    model: str | None = None
    focal_mm: float | None = None       # actual focal length
    focal_35mm: float | None = None     # 35 mm-equivalent (written, or computed from the sensor size)
    orientation: int = 1                # EXIF orientation 1..8 (1 = upright)
    width: int | None = None            # pixel size as stored (before orientation)
    height: int | None = None
    format: str | None = None           # JPEG, PNG, TIFF, HEIF, ...

    @property
    def has_gps(self) -> bool:
        return self.lat is not None and self.lon is not None

    @property
    def camera(self) -> str:
        """"Make Model" without the make repeated (``Apple iPhone 13``, ``samsung SM-G991B``)."""
        make, model = (self.make or "").strip(), (self.model or "").strip()
        if make and model.lower().startswith(make.lower()):
            return model
        return " ".join(x for x in (make, model) if x)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["camera"] = self.camera
        return d


# --- reading --------------------------------------------------------------------------------------
def _num(v: Any) -> float | None:
    """A rational/int/float/(num, den) tuple -> float, or None when missing, NaN or zero-denominator."""
    if v is None:
        return None
    try:
        if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) for x in v):
            if v[1] == 0:
                return None
            x = v[0] / v[1]
        elif isinstance(v, (bytes, bytearray)):
            x = float(v[0]) if len(v) == 1 else float(v.decode("ascii", "ignore").strip("\x00 "))
        else:
            x = float(v)
    except (TypeError, ValueError, ZeroDivisionError, IndexError):
        return None
    return x if math.isfinite(x) else None


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray)):
        v = bytes(v).decode("utf-8", "replace")
    s = str(v).replace("\x00", "").strip()
    return s or None


def _dms(v: Any) -> float | None:
    """GPS coordinate value -> unsigned decimal degrees. Accepts (d, m, s), (d, m), a single number."""
    if v is None:
        return None
    if isinstance(v, (tuple, list)):
        # piexif style ((num, den), ...) or Pillow style (IFDRational, ...)
        parts = [_num(x) for x in v]
        if not parts or parts[0] is None:
            return None
        parts = [p if p is not None else 0.0 for p in parts[:3]]
        while len(parts) < 3:
            parts.append(0.0)
        d, m, s = parts
        return abs(d) + abs(m) / 60.0 + abs(s) / 3600.0
    x = _num(v)
    return None if x is None else abs(x)


def _ref(v: Any) -> str:
    t = _text(v)
    return t[0].upper() if t else ""


def _gps(gps: dict, meta: PhotoMeta) -> None:
    lat, lon = _dms(gps.get(_GPS_LAT)), _dms(gps.get(_GPS_LON))
    if lat is not None and lon is not None:
        if _ref(gps.get(_GPS_LAT_REF)) == "S":
            lat = -lat
        if _ref(gps.get(_GPS_LON_REF)) == "W":
            lon = -lon
        meta.lat, meta.lon = lat, lon
    alt = _num(gps.get(_GPS_ALT))
    if alt is not None:
        ref = gps.get(_GPS_ALT_REF)
        ref = ref[0] if isinstance(ref, (bytes, bytearray)) and ref else ref
        meta.alt = -abs(alt) if _num(ref) == 1 else alt
    hpe, dop = _num(gps.get(_GPS_HPE)), _num(gps.get(_GPS_DOP))
    meta.dop = dop if dop is not None and dop > 0 else None
    if hpe is not None and hpe > 0:
        meta.accuracy_m = hpe
    elif meta.dop is not None:
        meta.accuracy_m = meta.dop * NOMINAL_UERE_M
    meta.heading_deg = _num(gps.get(_GPS_IMGDIR))


def _taken_at(base: dict, exif_ifd: dict, gps: dict) -> str | None:
    """Capture time: each date-time tag with its own SubSec/Offset tags, most specific first, GPS UTC last."""
    for dt_tag, src, sub_tag, off_tag in _TIME_TAGS:
        t = exif_time_iso(_text((base if src == 0 else exif_ifd).get(dt_tag)),
                          _text(exif_ifd.get(sub_tag)), _text(exif_ifd.get(off_tag)))
        if t:
            return t
    hms = gps.get(_GPS_TIME)
    hms = [_num(x) for x in hms] if isinstance(hms, (tuple, list)) else None
    return gps_time_iso(_text(gps.get(_GPS_DATE)), hms if hms and None not in hms else None)


def _focal_35(exif_ifd: dict, focal: float | None, size: tuple[int | None, int | None]) -> float | None:
    f35 = _num(exif_ifd.get(_FOCAL_35))
    if f35 is not None and f35 > 0:
        return f35
    if focal is None or focal <= 0:
        return None
    xres, yres = _num(exif_ifd.get(_FP_XRES)), _num(exif_ifd.get(_FP_YRES))
    unit = _UNIT_MM.get(int(_num(exif_ifd.get(_FP_UNIT)) or 2), 25.4)
    w = _num(exif_ifd.get(_EXIF_W)) or size[0]
    h = _num(exif_ifd.get(_EXIF_H)) or size[1]
    if not xres or xres <= 0 or not w or not h:
        return None
    yres = yres if yres and yres > 0 else xres
    sensor_w, sensor_h = w / xres * unit, h / yres * unit
    diag = math.hypot(sensor_w, sensor_h)
    if not (1.0 < diag < 100.0):  # not a plausible sensor: the tags are junk
        return None
    return round(focal * FULL_FRAME_DIAGONAL_MM / diag, 1)


def _from_xmp(im: Image.Image, meta: PhotoMeta) -> None:
    try:
        found = read_xmp(xmp_text(im))
    except Exception:  # a broken packet must not sink the EXIF fields
        return
    if not meta.has_gps and "lat" in found:
        meta.lat, meta.lon = found["lat"], found["lon"]
    if meta.taken_at is None:
        meta.taken_at = found.get("taken_at")


def meta_from_image(im: Image.Image) -> PhotoMeta:
    """Metadata of an opened PIL image (nothing is decoded). Corrupt EXIF gives the fields that parse."""
    meta = PhotoMeta(width=im.size[0], height=im.size[1], format=im.format)
    try:
        exif = im.getexif()
    except Exception:
        return meta
    try:
        gps = dict(exif.get_ifd(_IFD_GPS))
    except Exception:
        gps = {}
    try:
        exif_ifd = dict(exif.get_ifd(_IFD_EXIF))
    except Exception:
        exif_ifd = {}
    base = dict(exif)
    try:
        _gps(gps, meta)
    except Exception:  # a half-written GPS block must not sink the rest
        pass
    meta.make, meta.model = _text(base.get(_MAKE)), _text(base.get(_MODEL))
    o = _num(base.get(_ORIENTATION))
    meta.orientation = int(o) if o is not None and 1 <= o <= 8 else 1
    meta.taken_at = _taken_at(base, exif_ifd, gps)
    if meta.taken_at is None or not meta.has_gps:  # editors and some drones keep these only in XMP
        _from_xmp(im, meta)
    focal = _num(exif_ifd.get(_FOCAL))
    meta.focal_mm = focal if focal is not None and focal > 0 else None
    meta.focal_35mm = _focal_35(exif_ifd, meta.focal_mm, im.size)
    return meta


def read_metadata(src: MetaSource) -> PhotoMeta:
    """EXIF metadata of a file path, raw bytes or an opened PIL image.

    Raises the usual Pillow errors (``UnidentifiedImageError``, ``OSError``) when ``src`` is not an
    image at all; use :func:`campusgps.exif.image.open_image` first when you need a ``reason`` tag.
    """
    if isinstance(src, Image.Image):
        return meta_from_image(src)
    fp = io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src
    with Image.open(fp) as im:
        return meta_from_image(im)


# --- writing (tests, simulator) -------------------------------------------------------------------
def _to_dms_rationals(deg: float, sec_den: int = 1_000_000) -> tuple:
    """|deg| -> ((d,1), (m,1), (s*den, den)); exact to 1e-6 arc-seconds (3e-11 degrees)."""
    total = int(round(abs(float(deg)) * 3600 * sec_den))
    d, rest = divmod(total, 3600 * sec_den)
    m, s = divmod(rest, 60 * sec_den)
    return ((int(d), 1), (int(m), 1), (int(s), sec_den))


def _rational(x: float, den: int = 1000) -> tuple[int, int]:
    return (int(round(abs(float(x)) * den)), den)


def gps_exif_dict(lat: float, lon: float, alt: float | None = None, accuracy_m: float | None = None,
                  taken_at: _dt.datetime | str | None = None, make: str | None = None,
                  model: str | None = None, focal_35mm: float | None = None, orientation: int = 1,
                  heading_deg: float | None = None) -> dict:
    """The piexif dict behind :func:`gps_exif_bytes` (edit it to write unusual tags in tests)."""
    import piexif

    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ValueError(f"lat/lon out of range: {lat}, {lon}")
    zeroth: dict = {piexif.ImageIFD.Orientation: int(orientation)}
    exif: dict = {}
    gps: dict = {
        piexif.GPSIFD.GPSVersionID: (2, 2, 0, 0),
        piexif.GPSIFD.GPSLatitudeRef: b"S" if lat < 0 else b"N",
        piexif.GPSIFD.GPSLatitude: _to_dms_rationals(lat),
        piexif.GPSIFD.GPSLongitudeRef: b"W" if lon < 0 else b"E",
        piexif.GPSIFD.GPSLongitude: _to_dms_rationals(lon),
        piexif.GPSIFD.GPSMapDatum: b"WGS-84",
    }
    if alt is not None:
        gps[piexif.GPSIFD.GPSAltitudeRef] = 1 if alt < 0 else 0
        gps[piexif.GPSIFD.GPSAltitude] = _rational(alt)
    if accuracy_m is not None:
        gps[piexif.GPSIFD.GPSHPositioningError] = _rational(accuracy_m)
    if heading_deg is not None:
        gps[piexif.GPSIFD.GPSImgDirectionRef] = b"T"
        gps[piexif.GPSIFD.GPSImgDirection] = _rational(float(heading_deg) % 360.0, 100)
    if make:
        zeroth[piexif.ImageIFD.Make] = make.encode()
    if model:
        zeroth[piexif.ImageIFD.Model] = model.encode()
    if taken_at is not None:
        t = _dt.datetime.fromisoformat(taken_at) if isinstance(taken_at, str) else taken_at
        stamp = t.strftime("%Y:%m:%d %H:%M:%S").encode()
        zeroth[piexif.ImageIFD.DateTime] = stamp
        exif[piexif.ExifIFD.DateTimeOriginal] = stamp
        exif[piexif.ExifIFD.DateTimeDigitized] = stamp
        if t.microsecond:
            exif[piexif.ExifIFD.SubSecTimeOriginal] = f"{t.microsecond:06d}".rstrip("0").encode()
        off = t.utcoffset()
        if off is not None:
            mins = int(off.total_seconds() // 60)
            sign = "+" if mins >= 0 else "-"
            exif[piexif.ExifIFD.OffsetTimeOriginal] = f"{sign}{abs(mins) // 60:02d}:{abs(mins) % 60:02d}".encode()
            utc = (t - off).replace(tzinfo=None)
            gps[piexif.GPSIFD.GPSDateStamp] = utc.strftime("%Y:%m:%d").encode()
            gps[piexif.GPSIFD.GPSTimeStamp] = ((utc.hour, 1), (utc.minute, 1), (utc.second, 1))
    if focal_35mm is not None:
        exif[piexif.ExifIFD.FocalLengthIn35mmFilm] = int(round(focal_35mm))
    return {"0th": zeroth, "Exif": exif, "GPS": gps, "1st": {}, "thumbnail": None}


def gps_exif_bytes(lat: float, lon: float, alt: float | None = None, accuracy_m: float | None = None,
                   taken_at: _dt.datetime | str | None = None, make: str | None = None,
                   model: str | None = None, focal_35mm: float | None = None, orientation: int = 1,
                   heading_deg: float | None = None) -> bytes:
    """An EXIF block (``Exif\\0\\0`` + TIFF) with GPS in phone layout, for ``Image.save(..., exif=...)``.

    Latitude/longitude are written as degrees, minutes and seconds rationals (seconds to 1e-6) with
    N/S and E/W references, so they read back to better than 1e-9 degrees. ``accuracy_m`` goes to
    GPSHPositioningError, ``heading_deg`` to GPSImgDirection (true north). Works for JPEG, PNG, TIFF,
    WebP and HEIF saves.
    """
    import piexif

    return piexif.dump(gps_exif_dict(lat, lon, alt=alt, accuracy_m=accuracy_m, taken_at=taken_at, make=make,
                                      model=model, focal_35mm=focal_35mm, orientation=orientation,
                                      heading_deg=heading_deg))


__all__ = ["PhotoMeta", "read_metadata", "meta_from_image", "gps_exif_bytes", "gps_exif_dict",
           "NOMINAL_UERE_M"]
