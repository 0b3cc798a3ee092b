"""Render speed of `campusgps synth` at 320x240 (JPEG + EXIF written), workers=1 and workers=2.

    .venv/bin/python benchmarks/synth.py [--preset small] [--n 300]

For each worker count, renders an even subsample of N shots of the preset's capture plan into a temp
folder and reports images/s of the render+write phase (worker start-up and their world build included;
the parent's world build and planning reported separately). Also a steady-state single-process figure
(render only, world already built). Target: >= 20 images/s on this 2-core machine. The load average
is recorded next to each figure: other processes on the machine slow this down.
Writes benchmarks/results/synth.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n", type=int, default=300, help="images per measurement")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "synth.json"))
    args = ap.parse_args(argv)

    import cv2

    from campusgps.synth.capture import CaptureConfig, plan
    from campusgps.synth.world import PRESETS, build_world
    from campusgps.synth.writer import render_shot, synthesize

    res = {"preset": args.preset, "n": args.n, "size": "320x240", "cpu_count": os.cpu_count(),
           "machine": platform.machine(), "runs": []}
    t = time.time()
    world = build_world(args.preset, args.seed)
    res["world_build_s"] = round(time.time() - t, 2)
    shots = plan(world, CaptureConfig(), args.seed, PRESETS[args.preset])
    step = max(1, len(shots) // 60)
    nthr = cv2.getNumThreads()
    cv2.setNumThreads(1)
    load = os.getloadavg()[0]
    from campusgps.synth.camera import Camera
    from campusgps.synth.writer import encode_jpeg, exif_for

    t, c = time.time(), time.process_time()
    cpu_jpeg = 0.0
    for s in shots[::step][:60]:
        rgb = render_shot(s, world, 320, 240)
        c1 = time.process_time()
        cam = Camera(s.x, s.y, s.z, s.heading_deg, s.pitch_deg, s.roll_deg, s.hfov_deg, 320, 240)
        encode_jpeg(rgb, exif_for(s, 31.262, 34.801, 280.0, cam))
        cpu_jpeg += time.process_time() - c1
    dt = time.time() - t
    cpu = time.process_time() - c
    cv2.setNumThreads(nthr)
    n1 = len(shots[::step][:60])
    # CPU time does not depend on what else runs on the machine: it projects the idle-machine rate
    res["cpu_ms_per_img_render_jpeg_exif"] = round(1000 * cpu / n1, 1)
    res["cpu_ms_per_img_jpeg_exif"] = round(1000 * cpu_jpeg / n1, 1)
    res["projected_img_s_idle_2_cores"] = round(2 * n1 / cpu, 1)
    print(f"CPU time per image (render + JPEG + EXIF, 1 thread): {1000 * cpu / n1:.1f} ms "
          f"(JPEG+EXIF {1000 * cpu_jpeg / n1:.1f} ms) -> {2 * n1 / cpu:.1f} img/s projected on 2 idle cores")
    res["wall_1proc_img_s"] = round(n1 / dt, 1)
    res["wall_1proc_ms"] = round(1000 * dt / n1, 1)
    res["render_only_load"] = round(load, 2)
    print(f"wall (1 process): {n1 / dt:.1f} img/s ({1000 * dt / n1:.1f} ms/img), load {load:.2f}")
    for workers in (1, 2):
        with tempfile.TemporaryDirectory(prefix="cgps_synth_bench_") as tmp:
            load = os.getloadavg()[0]
            summ = synthesize(Path(tmp) / "c", preset=args.preset, seed=args.seed, cfg=CaptureConfig(),
                              workers=workers, progress=False, log=lambda *_: None, max_shots=args.n)
            load_end = os.getloadavg()[0]
        run = {"workers": workers, "images": summ["photos"] + summ["queries"], "img_s": summ["images_per_s"],
               "render_s": summ["render_seconds"], "total_s": summ["seconds"], "load_start": round(load, 2),
               "load_end": round(load_end, 2)}
        res["runs"].append(run)
        print(f"workers={workers}: {run['images']} images in {run['render_s']:.1f} s = {run['img_s']:.1f} img/s "
              f"(total with world build {run['total_s']:.1f} s), load {load:.2f} -> {load_end:.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
