"""`campusgps synth`: render a procedural campus as geotagged photos with known ground truth."""
from __future__ import annotations

import argparse

HELP = "render a procedural campus as geotagged JPEG photos with known true positions"
DESCRIPTION = """\
Render a procedural campus (buildings with distinct and deliberately repeated facades, a long covered
walkway, trees, lamps, paths, plazas; day/overcast/dusk/night) as phone-like geotagged photos.

Writes:
  OUT/photos/*.jpg     mapping session: spots every 5-10 m along paths, 4-8 headings each
  OUT/queries/*.jpg    a separate session at other spots and times (the external test set)
  OUT/truth.csv        file,lat,lon,true_lat,true_lon,heading_deg,condition,session (+ spot, area, accuracy_m, ...)
                       lat,lon = the noisy GPS written into EXIF; true_* = where the camera really was
  OUT/world.json       the campus layout and the settings used
  OUT/contact_sheet.png  with --contact-sheet

Presets: tiny (a few dozen photos, seconds; for tests), small (~200x150 m, ~2,400 photos + 300 queries;
the demo), medium (~420x300 m, ~10,000 photos). The same settings always give the same bytes.

Example:
  campusgps synth /tmp/campus --preset small --seed 1 --contact-sheet
  campusgps ingest /tmp/campus/photos --out /tmp/ds
"""


def _frac(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {s!r}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="OUT", help="output folder (created)")
    p.add_argument("--preset", choices=["tiny", "small", "medium"], default="small", help="campus size (default small)")
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same bytes (default 0)")
    p.add_argument("--gps-sigma-m", type=float, default=4.0,
                   help="GPS error sigma per axis in open sky, metres (default 4; larger near tall buildings/roofs)")
    p.add_argument("--outlier-fraction", type=_frac, default=0.03,
                   help="fraction of capture spots whose GPS drifts 20-60 m (default 0.03)")
    p.add_argument("--night-fraction", type=_frac, default=0.15, help="fraction of spots shot at night (default 0.15)")
    p.add_argument("--dusk-fraction", type=_frac, default=0.10, help="fraction shot at dusk (default 0.10)")
    p.add_argument("--overcast-fraction", type=_frac, default=0.25, help="fraction shot under overcast sky (default 0.25)")
    p.add_argument("--width", type=int, default=320, help="image width in pixels (default 320)")
    p.add_argument("--height", type=int, default=None, help="image height (default: width*3/4)")
    p.add_argument("--photos", type=int, default=None, help="target number of mapping photos (default: preset's)")
    p.add_argument("--queries", type=int, default=None, help="target number of query photos (default: preset's)")
    p.add_argument("--no-occluders", action="store_true", help="no people or vehicles")
    p.add_argument("--tree-sprites", choices=["unique", "shared"], default="unique",
                   help="unique (default): every tree its own billboard, as real trees differ; shared: ten "
                        "billboards for all trees (synth version 1: pixel-identical trees that local features "
                        "match across the campus), to rebuild an older campus")
    p.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality 1-100 (default 90)")
    p.add_argument("--contact-sheet", action="store_true", help="also write OUT/contact_sheet.png")
    p.add_argument("--workers", type=int, default=2, help="render processes (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace a campus previously written to OUT")


def run(args) -> int:
    from campusgps.errors import UserError
    from campusgps.synth.capture import CaptureConfig
    from campusgps.synth.writer import synthesize

    height = args.height if args.height is not None else args.width * 3 // 4
    if args.photos is not None and args.photos < 1:
        raise UserError(f"--photos must be >= 1, got {args.photos}")
    if args.queries is not None and args.queries < 0:
        raise UserError(f"--queries must be >= 0, got {args.queries}")
    if not (1 <= args.jpeg_quality <= 100):
        raise UserError(f"--jpeg-quality must be 1..100, got {args.jpeg_quality}")
    cfg = CaptureConfig(photos=args.photos, queries=args.queries, gps_sigma_m=args.gps_sigma_m,
                        outlier_fraction=args.outlier_fraction, night_fraction=args.night_fraction,
                        dusk_fraction=args.dusk_fraction, overcast_fraction=args.overcast_fraction,
                        occluders=not args.no_occluders, width=args.width, height=height,
                        tree_sprites=args.tree_sprites)
    from campusgps.logs import step

    with step("simulating the campus", input=args.out):
        synthesize(args.out, preset=args.preset, seed=args.seed, cfg=cfg, workers=args.workers,
                   contact_sheet=args.contact_sheet, overwrite=args.overwrite, quality=args.jpeg_quality)
    return 0
