"""``campusgps ingest SRC --out DATASET``: read, clean and store a folder of geotagged photos."""
from __future__ import annotations

import argparse

HELP = "read a folder of geotagged photos (JPEG, PNG, TIFF, HEIC), clean it and store a dataset"
DESCRIPTION = """\
Read every file under SRC (recursively), take each photo's position from --corrections, then --labels,
then its EXIF GPS, and store each accepted photo once, resized, as DATASET/images/<id>.jpg.

Writes DATASET/manifest.parquet (one row per sample), DATASET/frame.json (local metric frame) and
DATASET/rejected.csv (path,reason for every file that did not become a sample). Reasons:
  unreadable, not_an_image, truncated, decompression_bomb, no_gps, zero_or_out_of_range, outside_bbox,
  low_accuracy, duplicate, near_duplicate (--near-dup), isolated (--isolated-m).

Re-running adds only new files; an interrupted run can be re-run and finishes the job.

Labels CSV: a file-name column (file, filename, image, image_file or image_name), lat/latitude and
lon/lng/longitude (any case); other columns are kept in the manifest. Corrections CSV: file,lat,lon.

examples:
  campusgps ingest ~/photos/campus --out data/campus
  campusgps ingest synth/photos --out data/sim --labels synth/truth.csv --workers 2
  campusgps ingest photos --out data/campus --bbox 31.25,34.79,31.27,34.81 --max-accuracy-m 20 --near-dup
  campusgps ingest photos --out data/campus --corrections fixes.csv
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from campusgps.configs import add_dataclass_arguments
    from campusgps.ingest.pipeline import IngestConfig

    p.add_argument("src", metavar="SRC", help="folder of photos (searched recursively)")
    p.add_argument("--out", required=True, metavar="DATASET", help="dataset folder to create or extend")
    p.add_argument("--labels", metavar="CSV", help="labels CSV (file name + lat/lon); wins over EXIF")
    p.add_argument("--corrections", metavar="CSV", help="file,lat,lon rows that override labels and EXIF")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_arguments(p, IngestConfig, "cleaning and storage")


def run(args: argparse.Namespace) -> int:
    import json

    from campusgps.configs import from_args, run_record
    from campusgps.ingest.pipeline import IngestConfig, ingest

    from campusgps.logs import step

    cfg = from_args(IngestConfig, args)
    with step("ingesting photos", input=args.src):
        res = ingest(args.src, args.out, labels=args.labels, corrections=args.corrections, config=cfg,
                     progress=not args.quiet)
    for line in res.summary_lines():
        print(line)
    rate = (res.added / res.seconds) if res.seconds > 0 else 0.0
    print(f"wrote {args.out} in {res.seconds:.1f} s ({rate:.1f} photos/s)")
    from pathlib import Path

    rec = run_record(cfg, command="ingest", src=str(args.src), labels=args.labels, corrections=args.corrections,
                     added=res.added, rejected=res.rejected, total=res.total)
    (Path(args.out) / "ingest_run.json").write_text(json.dumps(rec, indent=2, default=str) + "\n")
    return 0
