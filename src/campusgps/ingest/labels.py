"""Labels and corrections CSVs for ``campusgps ingest``.

A labels CSV has a file-name column (``file``, ``filename``, ``image``, ``image_file`` or ``image_name``)
and latitude/longitude columns (``lat``/``latitude``, ``lon``/``lng``/``longitude``); names match in any
case. Other columns (``condition``, ``session``, ``true_lat``...) are kept and copied into the manifest.
A corrections CSV has the same three columns and overrides both EXIF and labels.

File names match an input photo by its path relative to SRC (``photos/000123.jpg``) or, when the CSV only
gives base names, by base name (``000123.jpg``). A blank lat/lon means "no label for this file" (EXIF is
used); anything else that is not a number is an error naming the row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from campusgps.errors import UserError

FILE_COLUMNS = ("file", "filename", "image", "image_file", "image_name")
LAT_COLUMNS = ("lat", "latitude")
LON_COLUMNS = ("lon", "lng", "longitude")


def _norm_key(name: str) -> str:
    """``./photos\\a.jpg`` -> ``photos/a.jpg``; "" for a blank name."""
    s = str(name).strip().replace("\\", "/")
    if not s:
        return ""
    s = str(PurePosixPath(s))
    while s.startswith("./"):
        s = s[2:]
    return s


def _pick(columns: list[str], choices: tuple[str, ...]) -> str | None:
    lower = {c.strip().lower(): c for c in columns}
    for ch in choices:
        if ch in lower:
            return lower[ch]
    return None


@dataclass
class LabelTable:
    """Lookup from an input photo (path relative to SRC) to its label ``(lat, lon)`` and extra columns."""

    path: Path
    by_rel: dict[str, int] = field(default_factory=dict)     # "photos/000123.jpg" -> row
    by_base: dict[str, int] = field(default_factory=dict)    # "000123.jpg" -> row (unique base names only)
    lat: list[float] = field(default_factory=list)
    lon: list[float] = field(default_factory=list)
    extras: list[dict] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    used: set[int] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.lat)

    def find(self, rel_path: str) -> int | None:
        """Row index for a photo path relative to SRC, or None."""
        key = _norm_key(rel_path)
        i = self.by_rel.get(key)
        if i is None:
            i = self.by_base.get(PurePosixPath(key).name)
        return i

    def lookup(self, rel_path: str) -> tuple[float, float, dict] | None:
        """``(lat, lon, extras)`` for a photo, or None when the CSV has no usable row for it."""
        i = self.find(rel_path)
        if i is None:
            return None
        self.used.add(i)
        if math.isnan(self.lat[i]) or math.isnan(self.lon[i]):
            return None
        return self.lat[i], self.lon[i], self.extras[i]

    def unused_names(self) -> list[str]:
        names = {i: n for n, i in self.by_rel.items()}
        return [names[i] for i in range(len(self)) if i not in self.used and i in names]


def read_csv_strings(path: str | Path, what: str, expected: str, hint: str = "") -> pd.DataFrame:
    """A user-supplied CSV as strings (no NaN guessing); missing, empty or unreadable -> UserError.

    ``expected`` describes the columns the file needs (used in the empty-file message); ``hint`` is appended
    to the not-found message (e.g. where such a file usually comes from)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} CSV not found: {path}" + (f" ({hint})" if hint else ""))
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty {what} CSV; expected a header with {expected}")
    except Exception as e:
        raise UserError(f"{path}: cannot read {what} CSV ({type(e).__name__}: {e})")


def read_label_csv(path: str | Path, what: str = "labels", keep_extras: bool = True) -> LabelTable:
    """Read and validate a labels (or corrections) CSV; raise :class:`UserError` saying what to fix."""
    path = Path(path)
    df = read_csv_strings(path, what, f"a file-name column ({', '.join(FILE_COLUMNS)}) and lat/lon columns")
    cols = [str(c) for c in df.columns]
    fcol, latcol, loncol = _pick(cols, FILE_COLUMNS), _pick(cols, LAT_COLUMNS), _pick(cols, LON_COLUMNS)
    missing = []
    if fcol is None:
        missing.append(f"a file-name column ({' or '.join(FILE_COLUMNS)})")
    if latcol is None:
        missing.append(f"a latitude column ({' or '.join(LAT_COLUMNS)})")
    if loncol is None:
        missing.append(f"a longitude column ({' or '.join(LON_COLUMNS)})")
    if missing:
        raise UserError(f"{path}: {what} CSV is missing {'; '.join(missing)}, any case; "
                        f"found columns: {', '.join(cols) or '(none)'}")
    table = LabelTable(path=path)
    table.extra_columns = [c for c in cols if c not in (fcol, latcol, loncol)] if keep_extras else []
    extras = pd.DataFrame({c: _column(df[c]) for c in table.extra_columns}, index=df.index)
    base_count: dict[str, int] = {}
    for r, row in zip(df.index, df.to_dict("records")):
        line = r + 2  # 1-based, after the header
        key = _norm_key(row[fcol])
        if not key:
            raise UserError(f"{path}, line {line}: empty file name in column {fcol!r}")
        vals = []
        for col, lo, hi in ((latcol, -90.0, 90.0), (loncol, -180.0, 180.0)):
            s = str(row[col]).strip()
            if s == "" or s.lower() in ("nan", "na", "null", "none"):
                vals.append(float("nan"))
                continue
            try:
                v = float(s)
            except ValueError:
                raise UserError(f"{path}, line {line}: {col}={s!r} is not a number (decimal degrees expected)")
            vals.append(v)  # out-of-range values are kept: ingest rejects them as zero_or_out_of_range
        if key in table.by_rel:
            prev = table.by_rel[key]
            if (table.lat[prev], table.lon[prev]) != tuple(vals) and not any(map(math.isnan, vals)):
                raise UserError(f"{path}, line {line}: {key!r} is listed twice with different coordinates; "
                                f"keep one row per file")
            continue
        i = len(table.lat)
        table.by_rel[key] = i
        table.lat.append(vals[0])
        table.lon.append(vals[1])
        table.extras.append({c: _value(extras.at[r, c]) for c in table.extra_columns})
        base = PurePosixPath(key).name
        base_count[base] = base_count.get(base, 0) + 1
        table.by_base[base] = i
    for base, n in base_count.items():  # an ambiguous base name must be matched by its full path
        if n > 1:
            del table.by_base[base]
    return table


def _column(s: pd.Series) -> pd.Series:
    """An extra column: numeric when every non-blank value is a number, else text (blank -> missing)."""
    s = s.astype(str).str.strip()
    blank = s == ""
    try:
        num = pd.to_numeric(s.where(~blank, None))
        return num
    except (ValueError, TypeError):
        return s.where(~blank, None)


def _value(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v
