"""Render the capture plan in parallel and write JPEG + EXIF, truth.csv and world.json."""
from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from campusgps.errors import UserError
from campusgps.synth.camera import Camera
from campusgps.synth.capture import CaptureConfig, Shot, plan
from campusgps.synth.world import PRESETS, World, build_world

TRUTH_COLUMNS = ["file", "lat", "lon", "true_lat", "true_lon", "heading_deg", "condition", "session",
                 # extras after the contract columns
                 "spot", "area", "accuracy_m", "gps_outlier", "label_error_m", "east_m", "north_m",
                 "label_east_m", "label_north_m", "pitch_deg", "roll_deg", "hfov_deg", "camera_height_m",
                 "taken_at", "sun_az_deg", "sun_el_deg"]
MAKE, MODEL = "campusgps", "SynthPhone 1"
JPEG_QUALITY = 90
# bump when the renderer/world changes, so a folder made by an older version is not reused;
# 2: every tree its own billboard (tree_sprites)
SYNTH_VERSION = 2

_W: World | None = None  # the world in worker processes (inherited by fork, or rebuilt)
_W_KEY = None


def _ensure_world(preset: str, seed: int, tree_sprites: str = "unique") -> World:
    global _W, _W_KEY
    if _W is None or _W_KEY != (preset, seed, tree_sprites):
        _W, _W_KEY = build_world(preset, seed, tree_sprites=tree_sprites), (preset, seed, tree_sprites)
    return _W


def _init_worker(preset, seed, tree_sprites="unique"):
    import cv2

    cv2.setNumThreads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _ensure_world(preset, seed, tree_sprites)


def encode_jpeg(rgb: np.ndarray, exif: bytes | None, quality: int = JPEG_QUALITY) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    kw = {"exif": exif} if exif else {}
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, optimize=False, **kw)
    return buf.getvalue()


def exif_for(shot: Shot, lat: float, lon: float, alt0: float, cam: Camera) -> bytes:
    from campusgps.exif.metadata import gps_exif_bytes

    return gps_exif_bytes(lat, lon, alt=round(alt0 + shot.z, 1), accuracy_m=shot.accuracy_m, taken_at=shot.taken_at,
                          make=MAKE, model=MODEL, focal_35mm=round(cam.focal_35mm()))


def render_shot(shot: Shot, world: World, width: int, height: int) -> np.ndarray:
    from campusgps.synth.render import Lighting, render

    cam = Camera(shot.x, shot.y, shot.z, shot.heading_deg, shot.pitch_deg, shot.roll_deg, shot.hfov_deg, width, height)
    light = Lighting(shot.condition, shot.sun_az_deg, shot.sun_el_deg, shot.exposure, tuple(shot.wb))
    return render(world, cam, light, occluders=shot.occluders, seed=shot.seed)


def _job(args):
    """Worker: render one shot, write its JPEG (EXIF carries the noisy label). Returns file name."""
    shot, out, width, height, (preset, seed, trees), lat, lon, quality = args
    world = _ensure_world(preset, seed, trees)
    rgb = render_shot(shot, world, width, height)
    cam = Camera(shot.x, shot.y, shot.z, shot.heading_deg, shot.pitch_deg, shot.roll_deg, shot.hfov_deg, width, height)
    data = encode_jpeg(rgb, exif_for(shot, lat, lon, world.origin[2], cam), quality)
    path = Path(out) / shot.file
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return shot.file


def settings_dict(preset, seed, cfg: CaptureConfig, quality) -> dict:
    d = {"generator": SYNTH_VERSION, "preset": preset, "seed": int(seed), "jpeg_quality": quality}
    d.update(asdict(cfg))
    return d


def _validate(preset: str, cfg: CaptureConfig, workers: int) -> None:
    """Clear errors for settings ``synthesize`` cannot honour."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if cfg.tree_sprites not in ("unique", "shared"):
        raise UserError(f"--tree-sprites must be unique or shared, got {cfg.tree_sprites!r}")
    if cfg.gps_sigma_m < 0 or not np.isfinite(cfg.gps_sigma_m):
        raise UserError(f"--gps-sigma-m must be a non-negative number of metres, got {cfg.gps_sigma_m}")
    for name in ("outlier_fraction", "night_fraction", "dusk_fraction", "overcast_fraction"):
        v = getattr(cfg, name)
        if not (0.0 <= v <= 1.0):
            raise UserError(f"--{name.replace('_', '-')} must be between 0 and 1, got {v}")
    if cfg.night_fraction + cfg.dusk_fraction + cfg.overcast_fraction > 1.0 + 1e-9:
        raise UserError("--night-fraction + --dusk-fraction + --overcast-fraction must not exceed 1")
    if not (32 <= cfg.width <= 4096 and 24 <= cfg.height <= 4096):
        raise UserError(f"image size {cfg.width}x{cfg.height} out of range (32x24 .. 4096x4096)")
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")


def _existing_campus(out: Path, settings: dict, overwrite: bool) -> bool:
    """True if ``out`` already holds this very campus (nothing to do); clears or refuses other contents."""
    if out.exists() and any(out.iterdir()):
        prev = out / "world.json"
        if prev.exists() and (out / "truth.csv").exists():
            try:
                same = json.loads(prev.read_text()).get("settings") == json.loads(json.dumps(settings))
            except ValueError:
                same = False
            if same and not overwrite:
                return True
            if not overwrite:
                raise UserError(f"{out} already holds a synthetic campus made with other settings; "
                                "pass --overwrite to replace it or choose another OUT")
            for sub in ("photos", "queries"):
                shutil.rmtree(out / sub, ignore_errors=True)
            for f in ("truth.csv", "world.json", "contact_sheet.png"):
                (out / f).unlink(missing_ok=True)
        elif not overwrite and ((out / "photos").exists() or (out / "queries").exists()):
            raise UserError(f"{out} already has photos/ or queries/ that synth did not write; choose an empty OUT")
    return False


def _render_all(jobs: list, workers: int, preset: str, seed: int, progress: bool, tree_sprites: str = "unique") -> None:
    """Render and write every job's JPEG, in this process or in ``workers`` spawned ones."""
    from campusgps.progress import progress_bar

    bar = progress_bar(total=len(jobs), desc="synth", unit="img", enable=progress)
    try:
        if workers == 1:
            import cv2

            n_thr = cv2.getNumThreads()
            cv2.setNumThreads(1)
            try:
                for j in jobs:
                    _job(j)
                    bar.update(1)
            finally:
                cv2.setNumThreads(n_thr)
        else:
            # spawn, not fork: OpenCV's thread pool does not survive fork() (workers would deadlock), so each
            # worker starts clean and rebuilds the (deterministic) world from (preset, seed).
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(preset, seed, tree_sprites)) as pool:
                for _ in pool.imap_unordered(_job, jobs, chunksize=4):
                    bar.update(1)
    finally:
        bar.close()


def _write_truth(path: Path, shots: list, llat, llon, tlat, tlon, err) -> None:
    """truth.csv rows (``TRUTH_COLUMNS``) for ``shots``."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(TRUTH_COLUMNS)
        for i, s in enumerate(shots):
            w.writerow([s.file, f"{llat[i]:.9f}", f"{llon[i]:.9f}", f"{tlat[i]:.9f}", f"{tlon[i]:.9f}",
                        f"{s.heading_deg:.2f}", s.condition, s.session,
                        f"{s.session[0]}{s.spot}", s.area, f"{s.accuracy_m:.1f}", int(s.gps_outlier), f"{err[i]:.3f}",
                        f"{s.x:.3f}", f"{s.y:.3f}", f"{s.label_x:.3f}", f"{s.label_y:.3f}", f"{s.pitch_deg:.2f}",
                        f"{s.roll_deg:.2f}", f"{s.hfov_deg:.2f}", f"{s.z:.2f}", s.taken_at, f"{s.sun_az_deg:.1f}",
                        f"{s.sun_el_deg:.1f}"])


def synthesize(out: str | Path, preset: str = "tiny", seed: int = 0, cfg: CaptureConfig | None = None,
               workers: int = 2, contact_sheet: bool = False, overwrite: bool = False, quality: int = JPEG_QUALITY,
               progress: bool = True, log=print, max_shots: int | None = None) -> dict:
    """Build the world, plan the captures, render everything into ``out``. Returns a summary dict."""
    cfg = cfg or CaptureConfig()
    _validate(preset, cfg, workers)
    out = Path(out)
    settings = settings_dict(preset, seed, cfg, quality)
    if _existing_campus(out, settings, overwrite):
        log(f"{out}: already holds this campus (same settings); nothing to do")
        return {"out": str(out), "skipped": True}
    (out / "photos").mkdir(parents=True, exist_ok=True)
    (out / "queries").mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    world = _ensure_world(preset, seed, cfg.tree_sprites)
    frame = world.frame()
    shots = plan(world, cfg, seed, PRESETS[preset])
    if max_shots is not None and len(shots) > max_shots:  # benchmarks: an even subsample of the plan
        keep = np.linspace(0, len(shots) - 1, max_shots).round().astype(int)
        shots = [shots[i] for i in keep]
    ex = np.array([s.x for s in shots]), np.array([s.y for s in shots])
    lx, ly = np.array([s.label_x for s in shots]), np.array([s.label_y for s in shots])
    tlat, tlon = frame.to_wgs84(*ex)
    llat, llon = frame.to_wgs84(lx, ly)
    log(f"synth: {preset} campus seed {seed}: {sum(s.session == 'photos' for s in shots)} photos + "
        f"{sum(s.session == 'queries' for s in shots)} queries at {cfg.width}x{cfg.height}, {workers} worker(s)")

    wkey = (preset, seed, cfg.tree_sprites)
    jobs = [(s, str(out), cfg.width, cfg.height, wkey, float(llat[i]), float(llon[i]), quality)
            for i, s in enumerate(shots)]
    t_render = time.time()
    _render_all(jobs, workers, preset, seed, progress, cfg.tree_sprites)
    render_s = time.time() - t_render

    # truth.csv (written last, atomically: its presence means the set is complete)
    err = np.hypot(lx - ex[0], ly - ex[1])
    tmp = out / "truth.csv.part"
    _write_truth(tmp, shots, llat, llon, tlat, tlon, err)
    desc = dict(world.desc)
    desc["settings"] = json.loads(json.dumps(settings))
    desc["counts"] = {"photos": sum(s.session == "photos" for s in shots),
                      "queries": sum(s.session == "queries" for s in shots)}
    (out / "world.json.part").write_text(json.dumps(desc, indent=1) + "\n")
    os.replace(out / "world.json.part", out / "world.json")
    os.replace(tmp, out / "truth.csv")
    sheet = None
    if contact_sheet:
        from campusgps.synth.contact_sheet import write_contact_sheet

        sheet = write_contact_sheet(out, out / "contact_sheet.png")
    summary = {"out": str(out), "photos": desc["counts"]["photos"], "queries": desc["counts"]["queries"],
               "seconds": round(time.time() - t0, 2), "render_seconds": round(render_s, 2),
               "images_per_s": round(len(shots) / max(render_s, 1e-9), 2),
               "median_label_error_m": round(float(np.median(err)), 2), "contact_sheet": str(sheet) if sheet else None}
    log(f"synth: wrote {summary['photos']} photos + {summary['queries']} queries to {out} in {summary['seconds']} s "
        f"({summary['images_per_s']} img/s); median GPS label error {summary['median_label_error_m']} m")
    return summary
