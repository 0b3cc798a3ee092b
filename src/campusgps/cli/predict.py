"""campusgps predict MODEL PATH... [--out FILE.csv|FILE.geojson|FILE.parquet] [--engine local|ray]
[--min-confidence P]"""
from __future__ import annotations

HELP = "locate photos (files or folders) with a trained model -> CSV or GeoJSON"
DESCRIPTION = """Locate photos with a model bundle written by `campusgps train`.

PATH may be image files or folders (searched recursively for JPEG/MPO/PNG/TIFF/HEIC/AVIF/WebP/BMP).
Output: one row (CSV) or one point feature (GeoJSON) per photo with lat, lon and radius_m (the truth lies
within radius_m about 90 % of the time), confidence (the probability that the photo was taken within
20 m of lat, lon; empty for models without a confidence model), up to two alternative places
(alt1_lat, alt1_lon, alt1_p, alt2_lat, alt2_lon, alt2_p; empty when none) and flags.
Without --out, CSV goes to stdout. Unreadable files are reported on stderr and skipped; the rest are still
located. With --min-confidence P, answers less confident than P keep their row (file, confidence) but get
empty lat, lon, radius_m and alternatives and the flag low_confidence: for when no answer beats a wrong one.
A photo that carries its own GPS is located from its pixels alone, then checked against that GPS:
exif_distance_m says how far apart they are, flag exif_disagrees that the GPS lies outside the circle,
flag exif_outside_area that it lies outside the mapped area (e.g. a shared photo from another city).

examples:
  campusgps predict model.cgps photo.jpg
  campusgps predict model.cgps new_photos/ --out located.csv
  campusgps predict model.cgps new_photos/ --out located.geojson
  campusgps predict model.cgps archive/ --engine ray --out located.parquet
  campusgps predict model.cgps new_photos/ --min-confidence 0.8 --out sure_only.csv
"""


def add_arguments(p):
    from campusgps.engine import add_engine_arguments

    p.add_argument("model", metavar="MODEL", help="model bundle file")
    p.add_argument("paths", metavar="PATH", nargs="+", help="photos or folders")
    p.add_argument("--out", metavar="FILE", help="FILE.csv, FILE.geojson or FILE.parquet (streamed; default: CSV "
                                                 "on stdout)")
    p.add_argument("--batch-size", type=int, default=32, help="photos per batch (32)")
    add_engine_arguments(p, "locating the photos", "model actors")
    p.add_argument("--min-confidence", metavar="P", default=None,
                   help="0..1: withhold answers less confident than P (empty lat/lon, flag low_confidence)")


def run(args) -> int:
    import sys
    from pathlib import Path

    from campusgps.answers import check_min_confidence
    from campusgps.errors import UserError
    from campusgps.localizers.base import Localizer, iter_image_files

    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    min_conf = check_min_confidence(args.min_confidence)
    fmt = "csv"
    if args.out:
        suffix = Path(args.out).suffix.lower()
        if suffix in (".geojson", ".json"):
            fmt = "geojson"
        elif suffix == ".parquet":
            fmt = "parquet"
        elif suffix != ".csv":
            raise UserError(f"--out {args.out}: use a .csv, .geojson or .parquet file name")
    missing = [p for p in args.paths if not Path(p).exists()]
    for p in missing:
        print(f"campusgps predict: skipped {p}: no such file or folder", file=sys.stderr)
    files = iter_image_files([p for p in args.paths if Path(p).exists()])
    if not files:
        raise UserError("no photos found in " + ", ".join(args.paths) +
                        " (give image files or folders containing .jpg/.png/.tif/.heic)")
    from campusgps.logs import step

    if args.engine != "local" or fmt == "parquet" or args.ray_address:  # streamed through campusgps.engine
        from campusgps.engine.output import predict_with_engine

        with step("locating photos with the %s engine" % args.engine, input=", ".join(args.paths)):
            return predict_with_engine(args, files, fmt, min_conf)
    from campusgps.answers import answer_columns
    from campusgps.engine.output import report, write_predictions

    with step("loading the model", input=args.model):
        loc = Localizer.load(args.model)
    with step("locating photos", input=", ".join(args.paths)):
        pred = loc.predict([str(f) for f in files], batch_size=args.batch_size, progress=True)
    ok, total, withheld = write_predictions([answer_columns(files, pred)], args.out, fmt, min_conf, args.model)
    report(ok, total, withheld, min_conf, args.out)
    return 0
