"""Capture times as real phones write them, and as one time line for a whole collection.

Phones disagree: an iPhone writes ``DateTimeOriginal`` plus ``OffsetTimeOriginal`` (so the manifest holds
``2024-09-23T16:06:58-04:00``), many Samsung and older cameras write local time only
(``2024-09-23T16:08:10.302000``), XMP gives ``2003-09-05T16:30+02:00`` or ``...Z``, GPS gives UTC with a date
``2024:09:23`` or ``2024-09-23``; some files hold ``0000:00:00 00:00:00`` or other junk.

- :func:`exif_time_iso` turns one EXIF date/time tag and its own SubSec and Offset tags into ISO 8601.
- :func:`gps_time_iso` turns GPSDateStamp + GPSTimeStamp into ISO 8601 UTC.
- :func:`capture_times_s` puts a whole collection on one clock: seconds since 1970 UTC. Times with an
  offset are converted exactly. Naive (local) times are read in the collection's most common offset, the
  same one for every naive time, so photos from two phones at the same place and hour line up (UTC when
  no photo gives an offset). Missing or unreadable values are NaN, counted, and reported in one warning.
"""
from __future__ import annotations

import datetime as _dt
import math
import re
import warnings
from collections import Counter
from typing import Iterable

import numpy as np

# 2024-09-23T16:06:58.302-04:00, 2024:09:23 16:06:58, 2003-09-05T16:30+02:00, ...Z
_ISO = re.compile(
    r"^\s*(\d{4})[-:](\d{1,2})[-:](\d{1,2})[T ]+(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2}|[+-]\d{2})?\s*$", re.IGNORECASE)
_OFFSET = re.compile(r"^\s*([+-])(\d{2}):?(\d{2})?\s*$")
_MIN_YEAR, _MAX_YEAR = 1980, 2100  # before 1980: a camera clock never set (1970-01-01, 1904...)
_MISSING = {"", "nan", "none", "<na>", "nat", "null"}


def parse_offset(text: str | None) -> int | None:
    """``+05:30`` / ``-0400`` / ``+02`` / ``Z`` -> minutes east of UTC; None when absent or invalid."""
    if text is None:
        return None
    s = str(text).strip()
    if s.upper() == "Z":
        return 0
    m = _OFFSET.match(s)
    if not m:
        return None
    mins = int(m.group(2)) * 60 + int(m.group(3) or 0)
    if mins > 14 * 60:
        return None
    return mins if m.group(1) == "+" else -mins


def parse_time(text) -> tuple[_dt.datetime, int | None] | None:
    """One date-time string -> (naive wall-clock datetime, offset minutes or None); None when unusable.

    Accepts ISO 8601 and EXIF (``YYYY:MM:DD HH:MM:SS``) spellings, sub-seconds of any length, ``Z``,
    ``+HH:MM``, ``+HHMM``, ``+HH``; rejects dates alone, zeros and years outside 1980..2100.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    m = _ISO.match(str(text).replace("\x00", ""))
    if not m:
        return None
    y, mo, d, hh, mm = (int(m.group(i)) for i in range(1, 6))
    ss = int(m.group(6) or 0)
    frac = m.group(7) or ""
    if not (_MIN_YEAR <= y <= _MAX_YEAR):
        return None
    try:
        t = _dt.datetime(y, mo, d, hh, mm, min(ss, 59), int(frac[:6].ljust(6, "0")) if frac else 0)
    except ValueError:
        return None
    off = parse_offset(m.group(8)) if m.group(8) else None
    if m.group(8) and off is None:
        return None
    return t, off


def format_iso(t: _dt.datetime, off: int | None) -> str:
    out = t.isoformat()
    if off is not None:
        sign = "+" if off >= 0 else "-"
        out += f"{sign}{abs(off) // 60:02d}:{abs(off) % 60:02d}"
    return out


def exif_time_iso(dt_text: str | None, subsec: str | None = None, offset: str | None = None) -> str | None:
    """An EXIF date-time tag with *its own* SubSecTime* and OffsetTime* tags -> ISO 8601, or None.

    ``DateTimeOriginal`` pairs with ``SubSecTimeOriginal`` / ``OffsetTimeOriginal``, ``DateTimeDigitized``
    with ``SubSecTimeDigitized`` / ``OffsetTimeDigitized``, ``DateTime`` with ``SubSecTime`` / ``OffsetTime``.
    """
    p = parse_time(dt_text)
    if p is None:
        return None
    t, off = p
    sub = (subsec or "").strip().replace("\x00", "")
    if sub.isdigit() and not t.microsecond:
        t = t.replace(microsecond=int(sub[:6].ljust(6, "0")))
    if off is None:
        off = parse_offset(offset)
    return format_iso(t, off)


def gps_time_iso(date_text: str | None, hms) -> str | None:
    """GPSDateStamp (``2024:09:23`` or ``2024-09-23``) + GPSTimeStamp (h, m, s numbers) -> ISO 8601 UTC."""
    if not date_text or hms is None or len(hms) != 3:
        return None
    m = re.match(r"^\s*(\d{4})[-:](\d{1,2})[-:](\d{1,2})", str(date_text))
    if not m:
        return None
    try:
        vals = [float(x) for x in hms]
        day = _dt.datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not all(math.isfinite(v) and v >= 0 for v in vals) or vals[0] >= 24 or vals[1] >= 60 or vals[2] >= 61:
        return None
    if not (_MIN_YEAR <= day.year <= _MAX_YEAR):
        return None
    t = day + _dt.timedelta(hours=vals[0], minutes=vals[1], seconds=vals[2])
    return format_iso(t, 0)


def capture_times_s(values: Iterable, warn: bool = True) -> tuple[np.ndarray, int]:
    """Capture-time strings of one collection -> (seconds since 1970-01-01 UTC as float64, n_bad).

    Offset-aware times are converted to UTC; naive ones are read in the collection's most common offset
    (UTC when none has an offset). ``n_bad`` counts values that are missing or unreadable (NaN in the
    result); with ``warn`` one warning says how many of each (none when no value has a time at all).
    """
    vals = list(values)
    parsed: list[tuple[_dt.datetime, int | None] | None] = []
    missing = garbage = 0
    for v in vals:
        if v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip().lower() in _MISSING:
            parsed.append(None)
            missing += 1
            continue
        p = parse_time(v)
        garbage += p is None
        parsed.append(p)
    offsets = Counter(p[1] for p in parsed if p is not None and p[1] is not None)
    local = offsets.most_common(1)[0][0] if offsets else 0
    epoch = _dt.datetime(1970, 1, 1)
    out = np.full(len(vals), np.nan)
    for i, p in enumerate(parsed):
        if p is not None:
            t, off = p
            out[i] = (t - epoch).total_seconds() - 60.0 * (local if off is None else off)
    if warn and (garbage or 0 < missing < len(vals)):  # none at all: a collection without times, no news
        warnings.warn(f"capture time missing for {missing} and unreadable for {garbage} of {len(vals)} photo(s); "
                      f"those are grouped into spots by position only", CaptureTimeWarning, stacklevel=2)
    return out, missing + garbage


class CaptureTimeWarning(UserWarning):
    """Some capture times were missing or unreadable (they were ignored)."""


__all__ = ["capture_times_s", "format_iso", "exif_time_iso", "gps_time_iso", "parse_time", "parse_offset",
           "CaptureTimeWarning"]
