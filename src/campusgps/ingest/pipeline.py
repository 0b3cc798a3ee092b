"""``campusgps ingest SRC --out DATASET``: a folder of photos -> a cleaned :class:`~campusgps.dataset.Dataset`.

Every file under SRC (recursively) ends up either as a sample in ``manifest.parquet`` or as a
``path,reason`` row in ``rejected.csv``. Reasons, in the order they are checked:

=====================  =====================================================================
``unreadable``         the file cannot be read, or the image data is corrupt
``not_an_image``       not a format Pillow / pillow-heif can open
``decompression_bomb`` declared pixel count above ``--max-pixels``
``no_gps``             no labels-CSV row, no correction and no EXIF GPS position
``zero_or_out_of_range``  (0, 0), NaN, or lat/lon outside [-90, 90] x [-180, 180]
``outside_bbox``       outside ``--bbox minlat,minlon,maxlat,maxlon``
``low_accuracy``       EXIF GPS accuracy worse than ``--max-accuracy-m``
``truncated``          the image data ends early
``duplicate``          same bytes as a sample already in the dataset
``near_duplicate``     (``--near-dup``) perceptual hash within ``--near-dup-bits`` of a sample
``isolated``           (``--isolated-m R``) no other sample within R metres
``dropped_by_audit``   removed later by ``campusgps split --apply-audit``
=====================  =====================================================================

Label priority: ``--corrections`` > ``--labels`` > EXIF GPS.

Resuming: each accepted photo is written to ``images/<id>.jpg`` (atomically) before it is recorded, and
the manifest and rejected.csv are rewritten atomically every ``--checkpoint-every`` photos and at the end
(also on Ctrl-C). A re-run skips files already in the manifest, re-uses stored images whose content hash
matches (so a killed run finishes quickly), and retries files rejected earlier (a new labels CSV or looser
options may now accept them), except those dropped by an audit. Nothing already ingested is removed.
"""
from __future__ import annotations

import hashlib
import io
import math
import multiprocessing as mp
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from campusgps.errors import ImageError, UserError

REASONS = ("unreadable", "not_an_image", "decompression_bomb", "no_gps", "zero_or_out_of_range",
           "outside_bbox", "low_accuracy", "truncated", "duplicate", "near_duplicate", "isolated",
           "dropped_by_audit")
FINAL_REASONS = {"dropped_by_audit"}  # never retried by a re-run


@dataclass
class IngestConfig:
    max_side: int = field(default=512, metadata={"help": "longest side of the stored JPEGs in pixels"})
    quality: int = field(default=90, metadata={"help": "JPEG quality of the stored images"})
    workers: int = field(default=2, metadata={"help": "decoding processes (1 = in this process)"})
    bbox: str = field(default="", metadata={"help": "keep only photos inside minlat,minlon,maxlat,maxlon"})
    max_accuracy_m: float = field(default=0.0, metadata={
        "help": "reject photos whose EXIF GPS accuracy (GPSHPositioningError, or DOP x 5 m) is worse than "
                "this many metres; 0 = keep all"})
    near_dup: bool = field(default=False, metadata={
        "help": "reject near-duplicate photos (64-bit difference hash within --near-dup-bits of a sample)"})
    near_dup_bits: int = field(default=4, metadata={"help": "Hamming distance that counts as a near duplicate"})
    isolated_m: float = field(default=0.0, metadata={
        "help": "reject new photos with no other sample within this many metres; 0 = off"})
    max_pixels: int = field(default=100_000_000, metadata={
        "help": "pixel-count limit; larger images are rejected as decompression_bomb"})
    checkpoint_every: int = field(default=200, metadata={
        "help": "write manifest and rejected.csv every N processed files (a killed run resumes from there)"})

    def parsed_bbox(self) -> tuple[float, float, float, float] | None:
        if not self.bbox:
            return None
        try:
            vals = tuple(float(x) for x in self.bbox.split(","))
        except ValueError:
            vals = ()
        if len(vals) != 4 or not (vals[0] < vals[2] and vals[1] < vals[3]):
            raise UserError(f"--bbox {self.bbox!r}: expected minlat,minlon,maxlat,maxlon in decimal degrees "
                            f"with min < max, e.g. 31.25,34.79,31.27,34.81")
        return vals  # type: ignore[return-value]

    def validate(self) -> None:
        if self.max_side < 16:
            raise UserError(f"--max-side {self.max_side}: must be at least 16 pixels")
        if not 1 <= self.quality <= 100:
            raise UserError(f"--quality {self.quality}: must be between 1 and 100")
        if self.workers < 1:
            raise UserError(f"--workers {self.workers}: must be at least 1")
        if self.max_accuracy_m < 0 or self.isolated_m < 0:
            raise UserError("--max-accuracy-m and --isolated-m must be >= 0 (0 turns the filter off)")
        if not 0 <= self.near_dup_bits <= 32:
            raise UserError(f"--near-dup-bits {self.near_dup_bits}: must be between 0 and 32")
        if self.max_pixels < 1:
            raise UserError("--max-pixels must be positive")
        self.parsed_bbox()


@dataclass
class IngestResult:
    dataset: object
    added: int
    skipped_existing: int
    rejected: dict[str, int]          # this run, by reason
    corrected_existing: int
    total: int
    unused_labels: int
    unused_corrections: int
    seconds: float

    def summary_lines(self) -> list[str]:
        lines = [f"accepted {self.added} new photo(s); dataset now has {self.total} sample(s)"
                 + (f"; {self.skipped_existing} already ingested (skipped)" if self.skipped_existing else "")]
        nrej = sum(self.rejected.values())
        if nrej:
            by = ", ".join(f"{r} {n}" for r, n in sorted(self.rejected.items(), key=lambda kv: -kv[1]))
            lines.append(f"rejected {nrej}: {by} (see rejected.csv)")
        else:
            lines.append("rejected 0")
        if self.corrected_existing:
            lines.append(f"corrected {self.corrected_existing} sample(s) already in the dataset")
        if self.unused_labels:
            lines.append(f"note: {self.unused_labels} labels-CSV row(s) matched no file under SRC")
        if self.unused_corrections:
            lines.append(f"note: {self.unused_corrections} correction row(s) matched no file")
        return lines


# --- per-file work (runs in worker processes) -----------------------------------------------------
@dataclass
class _Job:
    path: str                     # absolute path
    label: tuple[float, float] | None
    label_source: str             # exif | labels | correction
    dest_dir: str
    max_side: int
    quality: int
    max_pixels: int
    bbox: tuple[float, float, float, float] | None
    max_accuracy_m: float


def _reject(reason: str, message: str, **kw) -> dict:
    return {"ok": False, "reason": reason, "message": message, **kw}


def dhash64(im) -> int:
    """64-bit difference hash of a PIL image (robust to resizing and re-encoding)."""
    from PIL import Image

    g = np.asarray(im.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


def _header(data: bytes, max_pixels: int):
    """Open the header only (no decode): metadata and the pixel-count check."""
    from PIL import Image, UnidentifiedImageError

    from campusgps.exif.metadata import meta_from_image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageError(f"{w}x{h} = {w * h / 1e6:.1f} MP exceeds the pixel limit "
                                     f"({max_pixels / 1e6:g} MP; raise --max-pixels if this is a real photo)",
                                     reason="decompression_bomb")
                return meta_from_image(im)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image (unknown format)", reason="not_an_image")
    except Image.DecompressionBombError as e:
        raise ImageError(f"decompression bomb ({e})", reason="decompression_bomb")
    except Exception as e:
        raise ImageError(f"unreadable image header ({type(e).__name__}: {e})", reason="unreadable")


def process_file(job: _Job) -> dict:
    """Check, decode and store one photo. Returns a dict (``ok`` plus sample fields, or ``reason``)."""
    from PIL import Image

    from campusgps.exif.image import open_image

    try:
        data = Path(job.path).read_bytes()
    except OSError as e:
        return _reject("unreadable", f"cannot read file ({e.strerror or e})")
    sha = hashlib.sha256(data).hexdigest()
    try:
        meta = _header(data, job.max_pixels)
    except ImageError as e:
        return _reject(e.reason, str(e), sha256=sha)
    if job.label is not None:
        lat, lon = job.label
    elif meta.has_gps:
        lat, lon = meta.lat, meta.lon
    else:
        return _reject("no_gps", "no GPS position in EXIF and no row in the labels CSV", sha256=sha)
    if not (math.isfinite(lat) and math.isfinite(lon)) or not (-90 <= lat <= 90 and -180 <= lon <= 180) \
            or (abs(lat) < 1e-9 and abs(lon) < 1e-9):
        return _reject("zero_or_out_of_range", f"unusable position lat={lat}, lon={lon}", sha256=sha)
    if job.bbox is not None:
        a, b, c, d = job.bbox
        if not (a <= lat <= c and b <= lon <= d):
            return _reject("outside_bbox", f"lat={lat:.6f}, lon={lon:.6f} is outside --bbox", sha256=sha)
    acc = meta.accuracy_m if job.label_source == "exif" else None
    if job.max_accuracy_m > 0 and acc is not None and acc > job.max_accuracy_m:
        return _reject("low_accuracy", f"GPS accuracy {acc:.1f} m is worse than {job.max_accuracy_m:g} m",
                       sha256=sha)
    sid = sha[:16]
    dest = Path(job.dest_dir) / f"{sid}.jpg"
    stored = None
    if dest.exists():  # stored by an earlier (perhaps killed) run: written atomically, so complete
        try:
            with Image.open(dest) as prev:
                prev.load()
                stored = prev.copy()
        except Exception:
            stored = None
    if stored is None:
        try:
            im = open_image(data, max_pixels=job.max_pixels, draft_max_side=job.max_side)
        except ImageError as e:
            return _reject(e.reason, str(e).replace("<bytes>: ", ""), sha256=sha)
        if max(im.size) > job.max_side:
            im.thumbnail((job.max_side, job.max_side), Image.Resampling.BILINEAR, reducing_gap=None)
        from campusgps.exif.image import to_rgb_array

        stored = Image.fromarray(to_rgb_array(im))
        tmp = dest.with_name(f".{sid}.{os.getpid()}.tmp")
        stored.save(tmp, "JPEG", quality=job.quality)
        os.replace(tmp, dest)
    return {
        "ok": True, "sha256": sha, "id": sid, "width": stored.size[0], "height": stored.size[1],
        "lat": float(lat), "lon": float(lon),
        "alt": meta.alt, "accuracy_m": acc, "taken_at": meta.taken_at or "", "camera": meta.camera,
        "focal_35mm": meta.focal_35mm, "dhash": dhash64(stored),
    }


# --- the run ----------------------------------------------------------------------------------------
def _walk(src: Path, exclude: set[Path]) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        d = Path(dirpath)
        dirnames[:] = sorted(x for x in dirnames if (d / x).resolve() not in exclude)
        for f in sorted(filenames):
            p = d / f
            if p.resolve() not in exclude and (p.is_file() or p.is_symlink()):
                out.append(p)
    return out


def _read_rejected(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        return dict(zip(df["path"], df["reason"]))
    except Exception:
        return {}


def write_rejected(path: Path, rejected: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(sorted(rejected.items()), columns=["path", "reason"]).to_csv(tmp, index=False)
    os.replace(tmp, path)


def _pool(workers: int):
    ctx = mp.get_context("forkserver" if sys.platform.startswith("linux") else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["campusgps.ingest.pipeline"])
    return ctx.Pool(processes=workers, maxtasksperchild=None)


def _hamming_min(h: int, hashes: np.ndarray) -> int:
    if hashes.size == 0:
        return 65
    x = np.bitwise_xor(hashes, np.uint64(h))
    return int(np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1).min())


def ingest(src: str | Path, out: str | Path, labels: str | Path | None = None,
           corrections: str | Path | None = None, config: IngestConfig | None = None,
           progress: bool = True) -> IngestResult:
    """Ingest the photos under ``src`` into the dataset at ``out`` (created or extended)."""
    from campusgps.dataset import IMAGES, MANIFEST, MANIFEST_COLUMNS, REJECTED, Dataset, empty_manifest
    from campusgps.geo import LocalFrame
    from campusgps.ingest.labels import read_label_csv
    from campusgps.progress import progress_bar

    t0 = time.perf_counter()
    cfg = config or IngestConfig()
    cfg.validate()
    src, out = Path(src), Path(out)
    if not src.exists():
        raise UserError(f"SRC folder not found: {src}")
    if not src.is_dir():
        raise UserError(f"SRC must be a folder of photos, got a file: {src}")
    label_table = read_label_csv(labels, "labels") if labels else None
    corr_table = read_label_csv(corrections, "corrections", keep_extras=False) if corrections else None

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    had_frame = (out / MANIFEST).exists()
    if had_frame:
        ds = Dataset.open(out)
    else:
        ds = Dataset(root=out, manifest=empty_manifest(), frame=LocalFrame(0.0, 0.0))
    manifest = ds.manifest
    rejected_path = out / REJECTED
    rejected = _read_rejected(rejected_path)

    exclude = {out.resolve()} | {Path(p).resolve() for p in (labels, corrections) if p}
    files = _walk(src, exclude)
    src_abs = src.resolve()

    # corrections also fix samples ingested by earlier runs
    corrected_existing = 0
    if corr_table is not None and len(manifest):
        for i, sp in enumerate(manifest["source_path"]):
            try:
                rel = Path(sp).relative_to(src_abs).as_posix()
            except ValueError:
                rel = Path(sp).name
            hit = corr_table.lookup(rel)
            if hit is not None and (manifest.at[i, "lat"], manifest.at[i, "lon"]) != hit[:2]:
                manifest.at[i, "lat"], manifest.at[i, "lon"] = hit[0], hit[1]
                manifest.at[i, "corrected"] = True
                manifest.at[i, "label_source"] = "correction"
                corrected_existing += 1

    known_paths = set(manifest["source_path"])
    jobs, extras_for, skipped = [], {}, 0
    bbox = cfg.parsed_bbox()
    for p in files:
        ap = os.path.abspath(p)
        if ap in known_paths:
            skipped += 1
            continue
        if rejected.get(ap) in FINAL_REASONS:
            skipped += 1
            continue
        rel = p.relative_to(src).as_posix()
        label, source, extras = None, "exif", {}
        if label_table is not None:
            hit = label_table.lookup(rel)
            if hit is not None:
                label, source, extras = (hit[0], hit[1]), "labels", hit[2]
        if corr_table is not None:
            hit = corr_table.lookup(rel)
            if hit is not None:
                label, source = (hit[0], hit[1]), "correction"
        extras_for[ap] = extras
        jobs.append(_Job(path=ap, label=label, label_source=source, dest_dir=str(out / IMAGES),
                         max_side=cfg.max_side, quality=cfg.quality, max_pixels=cfg.max_pixels, bbox=bbox,
                         max_accuracy_m=cfg.max_accuracy_m))

    known_sha = dict(zip(manifest["sha256"], manifest["id"]))
    hash_arr = np.array(_parse_hashes(manifest) if cfg.near_dup else [], dtype=np.uint64)
    new_rows: list[dict] = []
    run_rejected: dict[str, int] = {}

    def reject(ap: str, reason: str):
        rejected[ap] = reason
        run_rejected[reason] = run_rejected.get(reason, 0) + 1

    def frame_for(df: pd.DataFrame) -> LocalFrame:
        if had_frame and len(ds.manifest):
            return ds.frame
        return LocalFrame.from_points(df["lat"], df["lon"])

    def checkpoint(final: bool = True):
        # with --isolated-m the decision needs every photo, so samples are recorded only at the end
        # (a killed run still resumes quickly: its stored images are re-used by content hash)
        df = _merge(manifest, new_rows if (final or cfg.isolated_m <= 0) else [])
        if len(df):
            ds.frame = frame_for(df)
            e, n = ds.frame.to_local(df["lat"].to_numpy(float), df["lon"].to_numpy(float))
            df["east_m"], df["north_m"] = e, n
            ds.manifest = df
            ds.save()
        write_rejected(rejected_path, rejected)

    bar = progress_bar(total=len(jobs), desc="ingest", unit="photo", enable=progress)
    pool = _pool(cfg.workers) if cfg.workers > 1 and len(jobs) > 1 else None
    completed = False
    try:
        results = pool.imap(process_file, jobs, chunksize=1) if pool else map(process_file, jobs)
        for k, (job, res) in enumerate(zip(jobs, results)):
            bar.update(1)
            ap = job.path
            if not res["ok"]:
                reject(ap, res["reason"])
            elif res["sha256"] in known_sha:
                reject(ap, "duplicate")
            elif cfg.near_dup and _hamming_min(res["dhash"], hash_arr) <= cfg.near_dup_bits:
                reject(ap, "near_duplicate")
                _remove_image(out / IMAGES / f"{res['id']}.jpg", manifest, new_rows)
            else:
                rejected.pop(ap, None)
                known_sha[res["sha256"]] = res["id"]
                if cfg.near_dup:
                    hash_arr = np.append(hash_arr, np.uint64(res["dhash"]))
                row = {c: res.get(c) for c in MANIFEST_COLUMNS if c in res}
                row.update(file=f"{IMAGES}/{res['id']}.jpg", source_path=ap, label_source=job.label_source,
                           corrected=job.label_source == "correction", split="",
                           dhash=f"{res['dhash']:016x}")
                for c, v in extras_for.get(ap, {}).items():
                    row[c if c not in MANIFEST_COLUMNS and c != "dhash" else f"label_{c}"] = v
                new_rows.append(row)
            if cfg.checkpoint_every > 0 and (k + 1) % cfg.checkpoint_every == 0:
                checkpoint(final=False)
        if cfg.isolated_m > 0 and new_rows:
            new_rows = _drop_isolated(manifest, new_rows, cfg.isolated_m, reject, out / IMAGES)
        completed = True
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        checkpoint(final=completed)  # also on Ctrl-C / errors: what is done stays done

    if not len(ds.manifest) and not (out / MANIFEST).exists():
        # nothing accepted at all: still write a valid (empty) dataset so the result is inspectable
        ds.frame = LocalFrame(0.0, 0.0)
        ds.manifest = empty_manifest()
        ds.save()
    return IngestResult(
        dataset=ds, added=len(new_rows), skipped_existing=skipped, rejected=run_rejected,
        corrected_existing=corrected_existing, total=len(ds.manifest),
        unused_labels=len(label_table.unused_names()) if label_table is not None else 0,
        unused_corrections=(len(corr_table.unused_names()) if corr_table is not None else 0),
        seconds=time.perf_counter() - t0)


def _merge(manifest: pd.DataFrame, new_rows: list[dict]) -> pd.DataFrame:
    from campusgps.dataset import normalise_manifest

    if not new_rows:
        return manifest.copy()
    new = pd.DataFrame(new_rows)
    df = new if not len(manifest) else pd.concat([manifest, new], ignore_index=True)
    return normalise_manifest(df)


def _parse_hashes(manifest: pd.DataFrame) -> list[int]:
    out = []
    for h in manifest["dhash"] if "dhash" in manifest.columns else []:
        try:
            out.append(int(str(h), 16))
        except ValueError:
            pass
    return out


def _remove_image(path: Path, manifest: pd.DataFrame, new_rows: list[dict]) -> None:
    """Delete a stored image that no sample uses (after a late rejection)."""
    rel = f"images/{path.name}"
    if rel in set(manifest["file"]) or any(r["file"] == rel for r in new_rows):
        return
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _drop_isolated(manifest: pd.DataFrame, new_rows: list[dict], radius_m: float, reject, images: Path):
    """Reject new samples with no other sample (old or new) within ``radius_m``."""
    from scipy.spatial import cKDTree

    from campusgps.geo import LocalFrame

    lat = np.concatenate([manifest["lat"].to_numpy(float), [r["lat"] for r in new_rows]])
    lon = np.concatenate([manifest["lon"].to_numpy(float), [r["lon"] for r in new_rows]])
    frame = LocalFrame.from_points(lat, lon)
    e, n = frame.to_local(lat, lon)
    tree = cKDTree(np.c_[e, n])
    counts = tree.query_ball_point(np.c_[e, n], r=radius_m, return_length=True)
    old = len(manifest)
    keep = []
    for j, row in enumerate(new_rows):
        if counts[old + j] <= 1:
            reject(row["source_path"], "isolated")
        else:
            keep.append(row)
    for row in new_rows:
        if row not in keep:
            _remove_image(images / f"{row['id']}.jpg", manifest, keep)
    return keep
