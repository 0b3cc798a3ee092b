"""campusgps predict MODEL PATH... [--out FILE.csv|FILE.geojson]"""
from __future__ import annotations

HELP = "locate photos (files or folders) with a trained model -> CSV or GeoJSON"
DESCRIPTION = """Locate photos with a model bundle written by `campusgps train`.

PATH may be image files or folders (searched recursively for JPEG/MPO/PNG/TIFF/HEIC/AVIF/WebP/BMP).
Output: one row (CSV) or one point feature (GeoJSON) per photo with lat, lon and radius_m (the truth lies
within radius_m about 90 % of the time), plus flags. Without --out, CSV goes to stdout.
Unreadable files are reported on stderr and skipped; the rest are still located.

examples:
  campusgps predict model.cgps photo.jpg
  campusgps predict model.cgps new_photos/ --out located.csv
  campusgps predict model.cgps new_photos/ --out located.geojson
"""


def add_arguments(p):
    p.add_argument("model", metavar="MODEL", help="model bundle file")
    p.add_argument("paths", metavar="PATH", nargs="+", help="photos or folders")
    p.add_argument("--out", metavar="FILE", help="FILE.csv or FILE.geojson (default: CSV on stdout)")
    p.add_argument("--batch-size", type=int, default=32, help="photos per batch (32)")


def run(args) -> int:
    import csv
    import io
    import json
    import sys
    from pathlib import Path

    import numpy as np

    from campusgps.errors import UserError
    from campusgps.localizers.base import Localizer, iter_image_files

    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    fmt = "csv"
    if args.out:
        suffix = Path(args.out).suffix.lower()
        if suffix in (".geojson", ".json"):
            fmt = "geojson"
        elif suffix != ".csv":
            raise UserError(f"--out {args.out}: use a .csv or .geojson file name")
    missing = [p for p in args.paths if not Path(p).exists()]
    for p in missing:
        print(f"campusgps predict: skipped {p}: no such file or folder", file=sys.stderr)
    files = iter_image_files([p for p in args.paths if Path(p).exists()])
    if not files:
        raise UserError("no photos found in " + ", ".join(args.paths) +
                        " (give image files or folders containing .jpg/.png/.tif/.heic)")
    from campusgps.logs import step

    with step("loading the model", input=args.model):
        loc = Localizer.load(args.model)
    with step("locating photos", input=", ".join(args.paths)):
        pred = loc.predict([str(f) for f in files], batch_size=args.batch_size, progress=True)
    ok = [i for i in range(len(files)) if pred.errors[i] is None and np.isfinite(pred.lat[i])]
    for i in range(len(files)):
        if pred.errors[i] is not None:
            err = pred.errors[i].removeprefix(f"{files[i]}: ")  # the path once, not twice
            print(f"campusgps predict: skipped {files[i]}: {err}", file=sys.stderr)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["file", "lat", "lon", "radius_m", "flags"])
        for i in ok:
            w.writerow([str(files[i]), f"{pred.lat[i]:.8f}", f"{pred.lon[i]:.8f}", f"{pred.radius_m[i]:.2f}",
                        ";".join(pred.flags[i])])
        text = buf.getvalue()
    else:
        feats = []
        for i in ok:
            props = {"file": str(files[i]), "lat": float(pred.lat[i]), "lon": float(pred.lon[i]),
                     "radius_m": float(pred.radius_m[i]), "flags": list(pred.flags[i])}
            feats.append({"type": "Feature", "geometry": {"type": "Point",
                                                          "coordinates": [float(pred.lon[i]), float(pred.lat[i])]},
                          "properties": props})
        text = json.dumps({"type": "FeatureCollection", "features": feats}, indent=1) + "\n"
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)
        print(f"located {len(ok)} of {len(files)} photos -> {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if not ok:
        raise UserError(f"none of the {len(files)} photos could be read")
    return 0
