"""An answer's confidence and alternative places as output fields, the same everywhere they are written.

* :func:`confidence_columns` turns ``Prediction.confidence`` / ``Prediction.alternatives`` into flat float
  columns ``confidence, alt1_lat, alt1_lon, alt1_p, alt2_lat, alt2_lon, alt2_p`` (NaN where absent): the
  predict CSV/GeoJSON/parquet rows and evaluate's predictions.csv.
* :func:`csv_cells` / :func:`properties` format one row of those columns for CSV (empty cell when absent) and
  for GeoJSON properties (``null`` when absent).
* :func:`alternatives_json` is the HTTP API's ``"alternatives"`` list.
* :func:`withhold_below` is ``predict --min-confidence P``: answers whose confidence is below ``P`` (or
  unknown) keep their row but lose their position (lat, lon, radius and alternatives) and get the flag
  ``low_confidence``.
"""
from __future__ import annotations

import math

import numpy as np

from campusgps.errors import UserError
from campusgps.jsonio import finite_or_none

N_ALTERNATIVES = 2
ALT_FIELDS = ("lat", "lon", "p")
ALT_COLUMNS = [f"alt{k}_{f}" for k in range(1, N_ALTERNATIVES + 1) for f in ALT_FIELDS]
CONFIDENCE_COLUMNS = ["confidence", *ALT_COLUMNS]
LOW_CONFIDENCE = "low_confidence"
_FORMATS = {"lat": "{:.8f}", "lon": "{:.8f}", "p": "{:.4f}"}


def _prob(d: dict):
    return d.get("probability", d.get("p"))


def confidence_columns(pred, n: int | None = None) -> dict[str, np.ndarray]:
    """``confidence`` and the first two alternatives of every answer as float arrays (NaN where absent).

    Alternatives must carry ``lat``/``lon`` (``Localizer.predict`` adds them) and ``probability``."""
    n = len(pred) if n is None else n
    conf = getattr(pred, "confidence", None)
    cols = {"confidence": np.full(n, np.nan) if conf is None else np.asarray(conf, dtype=np.float64).copy()}
    for c in ALT_COLUMNS:
        cols[c] = np.full(n, np.nan)
    for i, alts in enumerate((getattr(pred, "alternatives", None) or [])[:n]):
        for k, a in enumerate((alts or [])[:N_ALTERNATIVES], start=1):
            vals = {"lat": a.get("lat"), "lon": a.get("lon"), "p": _prob(a)}
            for f, v in vals.items():
                cols[f"alt{k}_{f}"][i] = np.nan if finite_or_none(v) is None else float(v)
    return cols


def csv_cells(cols: dict, i: int) -> list[str]:
    """Row ``i`` of :func:`confidence_columns` as CSV cells in ``CONFIDENCE_COLUMNS`` order ("" when absent)."""
    out = []
    for c in CONFIDENCE_COLUMNS:
        v = float(cols[c][i])
        fmt = "{:.4f}" if c == "confidence" else _FORMATS[c.rsplit("_", 1)[1]]
        out.append("" if not math.isfinite(v) else fmt.format(v))
    return out


def properties(cols: dict, i: int) -> dict:
    """Row ``i`` of :func:`confidence_columns` as GeoJSON/JSON properties (None when absent)."""
    return {c: finite_or_none(cols[c][i]) for c in CONFIDENCE_COLUMNS}


def alternatives_json(alts) -> list[dict]:
    """The API's ``alternatives``: ``[{"lat", "lon", "radius_m", "probability"}]``, places without a finite
    position left out."""
    out = []
    for a in list(alts or [])[:N_ALTERNATIVES]:
        lat, lon = finite_or_none(a.get("lat")), finite_or_none(a.get("lon"))
        if lat is None or lon is None:
            continue
        out.append({"lat": lat, "lon": lon, "radius_m": finite_or_none(a.get("radius_m")),
                    "probability": finite_or_none(_prob(a))})
    return out


def check_min_confidence(value) -> float | None:
    """``--min-confidence``: None, or a probability in [0, 1]; anything else is a UserError (exit 2)."""
    if value is None:
        return None
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise UserError(f"--min-confidence {value!r}: give a probability between 0 and 1, e.g. 0.8")
    if not (0.0 <= p <= 1.0):  # also refuses NaN
        raise UserError(f"--min-confidence {value}: give a probability between 0 and 1, e.g. 0.8")
    return p


def withhold_below(pred, threshold: float, rows=None) -> np.ndarray:
    """Blank the answers of ``pred`` (in place) whose confidence is below ``threshold`` or unknown.

    Such rows keep their confidence, lose lat/lon/east/north/radius_m and their alternatives, and get the flag
    ``low_confidence`` (once). ``rows``: only these indices are considered. Returns the withheld indices."""
    idx = np.arange(len(pred)) if rows is None else np.asarray(list(rows), dtype=np.int64)
    conf = np.asarray(pred.confidence, dtype=np.float64)
    low = idx[~(np.nan_to_num(conf[idx], nan=-1.0) >= threshold)] if len(idx) else idx
    for i in low:
        for name in ("lat", "lon", "east", "north", "radius_m"):
            arr = getattr(pred, name, None)
            if arr is not None:
                arr[i] = np.nan
        pred.alternatives[i] = []
        if LOW_CONFIDENCE not in pred.flags[i]:
            pred.flags[i] = [*pred.flags[i], LOW_CONFIDENCE]
    return low


# ---------------------------------------------------------------- predict's output rows (every format, every engine)
# (column, kind) in output order; kind picks the CSV format / parquet type: str, deg (8 decimals), m (2), p (4),
# flags (";"-joined in CSV and parquet, a list in GeoJSON). A new output column is added here and in
# answer_columns, and every writer (CSV, GeoJSON, parquet; local and Ray engines) gets it.
ROW_FIELDS = [("file", "str"), ("lat", "deg"), ("lon", "deg"), ("radius_m", "m"), ("confidence", "p"),
              *[(c, "p" if c.endswith("_p") else "deg") for c in ALT_COLUMNS], ("flags", "flags"),
              ("exif_distance_m", "m")]
ROW_FORMATS = {"deg": "{:.8f}", "m": "{:.2f}", "p": "{:.4f}"}


def answer_columns(files, pred) -> dict[str, np.ndarray]:
    """Columns of predict's output for ``pred`` (a ``Prediction`` of ``files``): every :data:`ROW_FIELDS`
    column plus ``error`` ("" when located). Flags are ";"-joined strings so a batch travels as arrays."""
    n = len(files)
    cols = {"file": np.asarray([str(f) for f in files], dtype=object),
            "lat": np.asarray(pred.lat, np.float64).copy(), "lon": np.asarray(pred.lon, np.float64).copy(),
            "radius_m": np.asarray(pred.radius_m, np.float64).copy(), **confidence_columns(pred, n),
            "flags": np.asarray([";".join(f) for f in pred.flags], dtype=object),
            "exif_distance_m": np.asarray(pred.exif_distance_m, np.float64).copy()}
    errs = [("" if e is None else str(e).removeprefix(f"{f}: ") or "unreadable") for f, e in zip(files, pred.errors)]
    cols["error"] = np.asarray(errs, dtype=object)
    return cols


def withhold_columns(cols: dict, threshold: float) -> int:
    """:func:`withhold_below` on output columns (in place): rows less confident than ``threshold`` (or of
    unknown confidence) lose lat, lon, radius_m and alternatives and get the flag ``low_confidence``."""
    conf = np.asarray(cols["confidence"], np.float64)
    low = np.flatnonzero(~(np.nan_to_num(conf, nan=-1.0) >= threshold))
    for c in ("lat", "lon", "radius_m", *ALT_COLUMNS):
        cols[c][low] = np.nan
    for i in low:
        flags = [f for f in str(cols["flags"][i]).split(";") if f]
        if LOW_CONFIDENCE not in flags:
            cols["flags"][i] = ";".join([*flags, LOW_CONFIDENCE])
    return int(len(low))
