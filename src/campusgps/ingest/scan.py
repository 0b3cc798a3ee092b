"""Which files ``campusgps ingest`` will process, and with which label (corrections > labels CSV > EXIF)."""
from __future__ import annotations

import os
from pathlib import Path


def walk_files(src: Path, exclude: set[Path]) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        d = Path(dirpath)
        dirnames[:] = sorted(x for x in dirnames if (d / x).resolve() not in exclude)
        for f in sorted(filenames):
            p = d / f
            if p.resolve() not in exclude and (p.is_file() or p.is_symlink()):
                out.append(p)
    return out


def correct_existing(manifest, corr_table, src_abs: Path) -> int:
    """Apply the corrections CSV to samples ingested by earlier runs (in place); -> how many changed."""
    corrected = 0
    if corr_table is None or not len(manifest):
        return 0
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
            corrected += 1
    return corrected


def plan_jobs(files: list[Path], src: Path, images_dir: Path, known_paths: set, rejected: dict, final_reasons,
              label_table, corr_table, cfg) -> tuple[list, dict, int]:
    """-> (jobs for new files, labels-CSV extras per absolute path, files skipped as already done)."""
    from campusgps.ingest.worker import Job

    jobs, extras_for, skipped = [], {}, 0
    bbox = cfg.parsed_bbox()
    for p in files:
        ap = os.path.abspath(p)
        if ap in known_paths:
            skipped += 1
            continue
        if rejected.get(ap) in final_reasons:
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
        jobs.append(Job(path=ap, label=label, label_source=source, dest_dir=str(images_dir),
                        max_side=cfg.max_side, quality=cfg.quality, max_pixels=cfg.max_pixels, bbox=bbox,
                        max_accuracy_m=cfg.max_accuracy_m))
    return jobs, extras_for, skipped
