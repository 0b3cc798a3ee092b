"""Stream prediction batches from an engine to CSV, GeoJSON or Parquet (bounded memory for every format)."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Iterable

import numpy as np

PARQUET_FIELDS = (("row", "int64"), ("file", "string"), ("lat", "float64"), ("lon", "float64"),
                  ("radius_m", "float64"), ("flags", "string"))


class _Sink:
    """One output format. ``write(batch)`` with the rows that located; ``close()`` finishes the file."""

    def __init__(self, fmt: str, fh):
        self.fmt, self.fh, self.first = fmt, fh, True
        if fmt == "csv":
            self.w = csv.writer(fh, lineterminator="\n")
            self.w.writerow(["file", "lat", "lon", "radius_m", "flags"])
        elif fmt == "geojson":
            fh.write('{"type": "FeatureCollection", "features": [\n')
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            self.schema = pa.schema([(n, getattr(pa, t)()) for n, t in PARQUET_FIELDS])
            self.w = pq.ParquetWriter(fh, self.schema)

    def write(self, b: dict) -> None:
        if self.fmt == "csv":
            for f, la, lo, r, fl in zip(b["file"], b["lat"], b["lon"], b["radius_m"], b["flags"]):
                self.w.writerow([str(f), f"{la:.8f}", f"{lo:.8f}", f"{r:.2f}", str(fl)])
        elif self.fmt == "geojson":
            for f, la, lo, r, fl in zip(b["file"], b["lat"], b["lon"], b["radius_m"], b["flags"]):
                props = {"file": str(f), "lat": float(la), "lon": float(lo), "radius_m": float(r),
                         "flags": [x for x in str(fl).split(";") if x]}
                feat = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(lo), float(la)]},
                        "properties": props}
                self.fh.write(("" if self.first else ",\n") + json.dumps(feat))
                self.first = False
        else:
            import pyarrow as pa

            cols = {n: (np.asarray(b[n]).astype(str) if t == "string" else np.asarray(b[n]))
                    for n, t in PARQUET_FIELDS}
            self.w.write_table(pa.Table.from_pydict(cols, schema=self.schema))

    def close(self) -> None:
        if self.fmt == "geojson":
            self.fh.write("\n]}\n")
        elif self.fmt == "parquet":
            self.w.close()


def write_predictions(batches: Iterable[dict], out: str | None, fmt: str) -> tuple[int, int]:
    """Write located rows; unreadable photos go to stderr. Returns (located, total). Atomic for files."""
    tmp = None
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(out).with_name(Path(out).name + ".tmp")
        fh = open(tmp, "wb" if fmt == "parquet" else "w", newline="" if fmt == "csv" else None)
    else:
        fh = sys.stdout
    ok_n = total = 0
    try:
        sink = _Sink(fmt, fh)
        for b in batches:
            err = np.asarray(b["error"]).astype(str)
            ok = (err == "") & np.isfinite(np.asarray(b["lat"], dtype=float))
            for f, e in zip(np.asarray(b["file"])[~ok], err[~ok]):
                print(f"campusgps predict: skipped {f}: {e or 'no answer'}", file=sys.stderr)
            total += len(err)
            ok_n += int(ok.sum())
            if ok.any():
                sink.write({k: np.asarray(v)[ok] for k, v in b.items()})
        sink.close()
    finally:
        if fh is not sys.stdout:
            fh.close()
    if tmp is not None:
        tmp.replace(out)
    return ok_n, total


def predict_with_engine(args, files: list, fmt: str) -> int:
    """`campusgps predict` through an engine (``--engine ray`` or a ``.parquet`` output)."""
    from campusgps.engine import get_engine
    from campusgps.errors import UserError
    from campusgps.localizers.base import Localizer

    Localizer.read_metadata(args.model)  # a bad bundle fails here, before any cluster starts
    engine = get_engine(args.engine, address=getattr(args, "ray_address", None),
                        workers=getattr(args, "workers", 0))
    try:
        ok, total = write_predictions(
            engine.predict_photos(args.model, [str(f) for f in files], batch_size=args.batch_size),
            args.out, fmt)
    finally:
        engine.close()
    if args.out:
        print(f"located {ok} of {total} photos -> {args.out}", file=sys.stderr)
    if not ok:
        raise UserError(f"none of the {total} photos could be read")
    return 0
