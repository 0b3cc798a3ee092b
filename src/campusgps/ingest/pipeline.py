"""``campusgps ingest SRC --out DATASET``: a folder of photos -> a cleaned :class:`~campusgps.dataset.Dataset`.

Modules: ``pipeline.py`` (this: options, the run, resume), ``scan.py`` (files and their labels),
``worker.py`` (one file: checks, decode, store), ``clean.py`` (duplicates, near duplicates, isolated),
``store.py`` (manifest merge, rejected.csv), ``labels.py`` (labels/corrections CSV), ``split.py``.

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

import multiprocessing as mp
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from campusgps.errors import UserError
from campusgps.ingest.clean import Sieve
from campusgps.ingest.scan import correct_existing, plan_jobs, walk_files
from campusgps.ingest.store import merge_rows, read_rejected, write_rejected  # noqa: F401  (write_rejected: API)
from campusgps.ingest.worker import process_file  # tests patch pipeline.process_file

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


def _pool(workers: int):
    ctx = mp.get_context("forkserver" if sys.platform.startswith("linux") else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["campusgps.ingest.pipeline"])
    return ctx.Pool(processes=workers, maxtasksperchild=None)


def _open_or_create(out: Path):
    """-> (dataset, had_manifest): the dataset at ``out``, or a new empty one."""
    from campusgps.dataset import IMAGES, MANIFEST, Dataset, empty_manifest
    from campusgps.geo import LocalFrame

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    if (out / MANIFEST).exists():
        return Dataset.open(out), True
    return Dataset(root=out, manifest=empty_manifest(), frame=LocalFrame(0.0, 0.0)), False


def _checkpoint(ds, manifest, rows: list, had_frame: bool, rejected_path: Path, rejected: dict) -> None:
    """Write the manifest (old samples + ``rows``, local coordinates) and rejected.csv atomically."""
    from campusgps.geo import LocalFrame

    df = merge_rows(manifest, rows)
    if len(df):
        # the frame stays fixed once a dataset has samples
        ds.frame = ds.frame if had_frame and len(ds.manifest) else LocalFrame.from_points(df["lat"], df["lon"])
        e, n = ds.frame.to_local(df["lat"].to_numpy(float), df["lon"].to_numpy(float))
        df["east_m"], df["north_m"] = e, n
        ds.manifest = df
        ds.save()
    write_rejected(rejected_path, rejected)


def ingest(src: str | Path, out: str | Path, labels: str | Path | None = None,
           corrections: str | Path | None = None, config: IngestConfig | None = None,
           progress: bool = True) -> IngestResult:
    """Ingest the photos under ``src`` into the dataset at ``out`` (created or extended)."""
    from campusgps.dataset import IMAGES, MANIFEST, REJECTED, empty_manifest
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
    ds, had_frame = _open_or_create(out)
    manifest = ds.manifest
    rejected_path = out / REJECTED
    rejected = read_rejected(rejected_path)

    exclude = {out.resolve()} | {Path(p).resolve() for p in (labels, corrections) if p}
    files = walk_files(src, exclude)
    # corrections also fix samples ingested by earlier runs
    corrected_existing = correct_existing(manifest, corr_table, src.resolve())
    jobs, extras_for, skipped = plan_jobs(files, src, out / IMAGES, set(manifest["source_path"]), rejected,
                                          FINAL_REASONS, label_table, corr_table, cfg)
    sieve = Sieve(manifest, out / IMAGES, cfg.near_dup, cfg.near_dup_bits, rejected)

    def checkpoint(final: bool = True):
        # with --isolated-m the decision needs every photo, so samples are recorded only at the end
        # (a killed run still resumes quickly: its stored images are re-used by content hash)
        rows = sieve.new_rows if (final or cfg.isolated_m <= 0) else []
        _checkpoint(ds, manifest, rows, had_frame, rejected_path, rejected)

    bar = progress_bar(total=len(jobs), desc="ingest", unit="photo", enable=progress)
    pool = _pool(cfg.workers) if cfg.workers > 1 and len(jobs) > 1 else None
    completed = False
    try:
        results = pool.imap(process_file, jobs, chunksize=1) if pool else map(process_file, jobs)
        for k, (job, res) in enumerate(zip(jobs, results)):
            bar.update(1)
            sieve.take(job, res, extras_for.get(job.path, {}))
            if cfg.checkpoint_every > 0 and (k + 1) % cfg.checkpoint_every == 0:
                checkpoint(final=False)
        sieve.drop_isolated(cfg.isolated_m)
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
        dataset=ds, added=len(sieve.new_rows), skipped_existing=skipped, rejected=sieve.run_rejected,
        corrected_existing=corrected_existing, total=len(ds.manifest),
        unused_labels=len(label_table.unused_names()) if label_table is not None else 0,
        unused_corrections=(len(corr_table.unused_names()) if corr_table is not None else 0),
        seconds=time.perf_counter() - t0)
