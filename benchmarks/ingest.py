"""Ingest throughput on 12 MP phone-sized JPEGs with GPS EXIF (made here), workers=1 and workers=2.

    .venv/bin/python benchmarks/ingest.py [--n 60] [--max-side 512]

Prints a table and writes benchmarks/results/ingest.json. Target: >= 15 photos/s on a 2-core machine.
The load average at the start is recorded: other processes on the machine slow this down.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from campusgps.exif.metadata import gps_exif_bytes
from campusgps.ingest.pipeline import IngestConfig, ingest


def make_photos(folder: Path, n: int, size=(4000, 3000), seed=0) -> int:
    """n distinct 12 MP JPEGs (smooth scene + texture, ~phone-like file sizes), rotated ones included."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(xx / 230) * np.cos(yy / 170), 128 + 80 * np.cos((xx + yy) / 310),
                     128 + 70 * np.sin(yy / 120)], axis=-1)
    base += rng.normal(0, 12, base.shape).astype(np.float32)
    base = np.clip(base, 0, 255).astype(np.uint8)
    total = 0
    for i in range(n):
        img = base.copy()
        r, c = (i * 97) % (h - 200), (i * 131) % (w - 200)
        img[r:r + 200, c:c + 200] = rng.integers(0, 255, 3, dtype=np.uint8)
        exif = gps_exif_bytes(31.262 + 1e-4 * (i % 10), 34.801 + 1e-4 * (i // 10), alt=280.0, accuracy_m=4.0,
                              make="samsung", model="SM-G991B", focal_35mm=26, orientation=6 if i % 4 == 0 else 1)
        p = folder / f"IMG_{i:04d}.jpg"
        Image.fromarray(img).save(p, quality=92, exif=exif)
        total += p.stat().st_size
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ingest.json"))
    args = ap.parse_args()
    load0 = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="campusgps-bench-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        t = time.perf_counter()
        nbytes = make_photos(src, args.n)
        print(f"made {args.n} JPEGs of 4000x3000 ({nbytes / args.n / 1e6:.1f} MB each) in "
              f"{time.perf_counter() - t:.1f} s")
        for workers in (1, 2):
            out = Path(tmp) / f"ds{workers}"
            t, c = time.perf_counter(), time.process_time()
            res = ingest(src, out, config=IngestConfig(workers=workers, max_side=args.max_side), progress=False)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            assert res.added == args.n, res.summary_lines()
            row = {"workers": workers, "photos": args.n, "seconds": round(dt, 3),
                   "photos_per_s": round(args.n / dt, 2)}
            if workers == 1:  # all work in this process: CPU time per photo, independent of other load
                row["cpu_ms_per_photo"] = round(1000 * dc / args.n, 1)
            rows.append(row)
    print(f"\n{'workers':>7} {'photos':>6} {'seconds':>8} {'photos/s':>9}")
    for r in rows:
        print(f"{r['workers']:>7} {r['photos']:>6} {r['seconds']:>8.2f} {r['photos_per_s']:>9.1f}")
    best = max(r["photos_per_s"] for r in rows)
    cpu_ms = rows[0]["cpu_ms_per_photo"]
    idle_estimate = round(min(2, os.cpu_count() or 1) * 1000 / cpu_ms, 1)
    print(f"\nbest {best:.1f} photos/s measured (target >= 15); load average at start {load0[0]:.2f} on "
          f"{os.cpu_count()} CPUs (other processes share the machine)")
    print(f"CPU time {cpu_ms:.0f} ms/photo -> about {idle_estimate} photos/s with 2 idle cores")
    result = {"benchmark": "ingest", "image_size": [4000, 3000], "max_side": args.max_side, "rows": rows,
              "best_photos_per_s": best, "cpu_ms_per_photo": cpu_ms, "idle_2core_estimate_photos_per_s": idle_estimate, "target_photos_per_s": 15, "loadavg_at_start": load0,
              "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
