"""Write predict's rows to CSV, GeoJSON or Parquet, streamed batch by batch (bounded memory for every format).

Both paths of ``campusgps predict`` (the in-process one and ``--engine ray`` / ``.parquet``) hand batches of
:func:`campusgps.answers.answer_columns` to :func:`write_predictions`, so every format and engine writes the
same columns (:data:`campusgps.answers.ROW_FIELDS`) and honours ``--min-confidence`` the same way.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Iterable

import numpy as np

from campusgps.answers import ROW_FIELDS, ROW_FORMATS, withhold_columns
from campusgps.errors import UserError
from campusgps.jsonio import finite_or_none


def _cell(v, kind: str) -> str:
    if kind in ("str", "flags"):
        return str(v)
    v = float(v)
    return ROW_FORMATS[kind].format(v) if v == v else ""  # NaN (absent / withheld) -> empty cell


class _Sink:
    """One output format. ``write(batch)`` with the rows that located; ``close()`` finishes the file."""

    def __init__(self, fmt: str, fh):
        self.fmt, self.fh, self.first = fmt, fh, True
        if fmt == "csv":
            self.w = csv.writer(fh, lineterminator="\n")
            self.w.writerow([c for c, _ in ROW_FIELDS])
        elif fmt == "geojson":
            fh.write('{"type": "FeatureCollection", "features": [\n')
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            types = {"str": pa.string(), "flags": pa.string()}
            self.schema = pa.schema([("row", pa.int64())] + [(c, types.get(k, pa.float64())) for c, k in ROW_FIELDS])
            self.w = pq.ParquetWriter(fh, self.schema)

    def write(self, b: dict) -> None:
        n = len(b["file"])
        if self.fmt == "csv":
            for i in range(n):
                self.w.writerow([_cell(b[c][i], k) for c, k in ROW_FIELDS])
        elif self.fmt == "geojson":
            for i in range(n):
                props = {c: (str(b[c][i]) if k == "str" else [x for x in str(b[c][i]).split(";") if x]
                             if k == "flags" else finite_or_none(b[c][i])) for c, k in ROW_FIELDS}
                lat, lon = props["lat"], props["lon"]
                geom = {"type": "Point", "coordinates": [lon, lat]} if lat is not None and lon is not None else None
                feat = {"type": "Feature", "geometry": geom, "properties": props}
                self.fh.write(("" if self.first else ",\n") + json.dumps(feat))
                self.first = False
        else:
            import pyarrow as pa

            cols = {"row": np.asarray(b.get("row", np.arange(n)), np.int64)}
            for c, k in ROW_FIELDS:
                cols[c] = (np.asarray(b[c]).astype(str) if k in ("str", "flags")
                           else pa.array(np.asarray(b[c], np.float64), from_pandas=True))  # NaN -> null
            self.w.write_table(pa.Table.from_pydict(cols, schema=self.schema))

    def close(self) -> None:
        if self.fmt == "geojson":
            self.fh.write("\n]}\n")
        elif self.fmt == "parquet":
            self.w.close()


def _located(b: dict, min_conf: float | None, model, checked: list) -> tuple[dict, int]:
    """The batch's located rows (reporting the others on stderr), withheld below ``min_conf``."""
    err = np.asarray(b["error"]).astype(str)
    ok = (err == "") & np.isfinite(np.asarray(b["lat"], dtype=float))
    for f, e in zip(np.asarray(b["file"])[~ok], err[~ok]):
        print(f"campusgps predict: skipped {f}: {e or 'no answer'}", file=sys.stderr)
    rows = {k: np.array(v)[ok] for k, v in b.items()}  # copies: batches from Ray may be read-only
    if min_conf is None or not ok.any():
        return rows, 0
    if not checked and not np.isfinite(np.asarray(rows["confidence"], float)).any():
        raise UserError(f"{model}: this model gives no confidence (trained before campusgps had one); "
                        f"retrain it, or run without --min-confidence")
    checked.append(True)
    return rows, withhold_columns(rows, min_conf)


def write_predictions(batches: Iterable[dict], out: str | None, fmt: str, min_conf: float | None = None,
                      model=None) -> tuple[int, int, int]:
    """Write located rows; unreadable photos go to stderr. Returns (located, total, withheld). Files are
    written to ``OUT.tmp`` and renamed at the end (no half-written output under the real name)."""
    tmp = None
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(out).with_name(Path(out).name + ".tmp")
        fh = open(tmp, "wb" if fmt == "parquet" else "w", newline="" if fmt == "csv" else None)
    else:
        fh = sys.stdout
    ok_n = total = withheld = 0
    checked: list = []
    try:
        sink = _Sink(fmt, fh)
        for b in batches:
            rows, w = _located(b, min_conf, model, checked)
            total += len(b["file"])
            ok_n += len(rows["file"])
            withheld += w
            if len(rows["file"]):
                sink.write(rows)
        sink.close()
    except BaseException:
        if fh is not sys.stdout:
            fh.close()
            tmp.unlink(missing_ok=True)
        raise
    if fh is not sys.stdout:
        fh.close()
        tmp.replace(out)
    return ok_n, total, withheld


def report(ok: int, total: int, withheld: int, min_conf, out) -> None:
    """The closing line on stderr, and the exit-2 error when nothing located."""
    if out:
        note = f" ({withheld} withheld: confidence below {min_conf:g})" if withheld else ""
        print(f"located {ok} of {total} photos{note} -> {out}", file=sys.stderr)
    if not ok:
        raise UserError(f"none of the {total} photos could be read")


def predict_with_engine(args, files: list, fmt: str, min_conf: float | None = None) -> int:
    """`campusgps predict` through an engine (``--engine ray`` or a ``.parquet`` output)."""
    from campusgps.engine import get_engine
    from campusgps.localizers.base import Localizer

    Localizer.read_metadata(args.model)  # a bad bundle fails here, before any cluster starts
    engine = get_engine(args.engine, address=getattr(args, "ray_address", None),
                        workers=getattr(args, "workers", 0))
    try:
        batches = engine.predict_photos(args.model, [str(f) for f in files], batch_size=args.batch_size)
        ok, total, withheld = write_predictions(batches, args.out, fmt, min_conf, args.model)
    finally:
        engine.close()
    report(ok, total, withheld, min_conf, args.out)
    return 0
