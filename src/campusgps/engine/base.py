"""Engine interface, the per-batch workers both engines run, and row bookkeeping."""
from __future__ import annotations

import logging
import os
import tempfile
from typing import Iterator, Sequence

import numpy as np

from campusgps.errors import UserError

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
RAY_INSTALL_HINT = "pip install 'campusgps[ray]'"
# predict batches: "row" + campusgps.answers.answer_columns (ROW_FIELDS + "error")
PREDICT_COLUMNS = ("row", "file", "lat", "lon", "radius_m", "confidence", "flags", "error")


class EngineError(RuntimeError):
    """A distributed job came back incomplete (rows lost) or inconsistent."""


def get_engine(name: str = "local", address: str | None = None, workers: int = 0) -> "Engine":
    """``local`` (in-process) or ``ray`` (Ray Data jobs; ``address``: None starts a local Ray with the
    available CPUs, ``auto`` or ``ray://host:port`` joins a cluster). ``workers``: actors in the pool
    (0: one per CPU of the cluster)."""
    if name == "local":
        if address:
            raise UserError("--ray-address only applies with --engine ray")
        from campusgps.engine.local import LocalEngine

        return LocalEngine(workers=workers)
    if name == "ray":
        try:
            import ray  # noqa: F401
            import ray.data  # noqa: F401
        except ImportError:
            raise UserError(f"--engine ray needs Ray, which is not installed: {RAY_INSTALL_HINT}")
        from campusgps.engine.ray_engine import RayEngine

        return RayEngine(address=address, workers=workers)
    raise UserError(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")


class RowTracker:
    """Checks that each of ``n`` input rows comes back exactly once. ``accept(rows)`` returns a boolean
    mask of rows seen for the first time (duplicates, e.g. from a retried task, are dropped and counted)."""

    def __init__(self, n: int):
        self.n = int(n)
        self.seen = np.zeros(self.n, bool)
        self.duplicates = 0

    def accept(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n):
            raise EngineError(f"job returned row index outside 0..{self.n - 1}")
        first = ~self.seen[rows]
        _, uniq = np.unique(rows, return_index=True)  # duplicates inside one batch
        inside = np.zeros(len(rows), bool)
        inside[uniq] = True
        keep = first & inside
        self.seen[rows[keep]] = True
        self.duplicates += int((~keep).sum())
        if self.duplicates and not keep.all():
            log.warning("engine: dropped %d duplicated result rows", int((~keep).sum()))
        return keep

    def finish(self) -> None:
        missing = np.flatnonzero(~self.seen)
        if len(missing):
            raise EngineError(f"job lost {len(missing)} of {self.n} rows (first: {missing[:5].tolist()})")


class EmbedWorker:
    """Decode photos and compute pooled backbone features. Holds the backbone (one per worker)."""

    def __init__(self, backbone: str, pooling: str = "gem", max_side: int | None = None, device: str = "cpu"):
        from campusgps.models.backbones import get_backbone

        self.bb = get_backbone(backbone, device=device)
        self.pooling = pooling
        self.max_side = max_side or self.bb.load_max_side()

    def __call__(self, batch: dict) -> dict:
        from campusgps.errors import ImageError
        from campusgps.exif import load_image

        rows = np.asarray(batch["row"], dtype=np.int64)
        feats = np.full((len(rows), self.bb.feature_dim), np.nan, np.float32)
        errors = [""] * len(rows)
        imgs, ok = [], []
        for j, path in enumerate(batch["path"]):
            try:
                imgs.append(load_image(str(path), max_side=self.max_side))
                ok.append(j)
            except ImageError as e:
                errors[j] = str(e) or "unreadable"
        if imgs:
            feats[ok] = self.bb.embed(imgs, batch_size=len(imgs), pooling=self.pooling)
        return {"row": rows, "feat": feats, "error": np.asarray(errors, dtype=object)}


class PredictWorker:
    """Holds a loaded model; locates a batch of photo paths. ``bundle`` is a path or the bundle's bytes."""

    def __init__(self, bundle):
        from campusgps.localizers.base import Localizer

        if isinstance(bundle, (bytes, bytearray, memoryview)):
            with tempfile.NamedTemporaryFile(suffix=".cgps", delete=False) as f:
                f.write(bytes(bundle))
            try:
                self.loc = Localizer.load(f.name)
            finally:
                os.unlink(f.name)
        else:
            self.loc = Localizer.load(bundle)

    def __call__(self, batch: dict) -> dict:
        from campusgps.answers import answer_columns

        paths = [str(p) for p in batch["path"]]
        pred = self.loc.predict(paths, batch_size=max(1, len(paths)))
        return {"row": np.asarray(batch["row"], dtype=np.int64), **answer_columns(paths, pred)}


class Engine:
    """Runs per-photo work. Subclasses implement :meth:`_run` (stream of result batches for a worker)."""

    name = "base"
    batch_size = 32

    def __init__(self, workers: int = 0):
        self.workers = int(workers or 0)

    def _run(self, photos: Sequence[str], worker_cls, ctor_kwargs: dict, batch_size: int) -> Iterator[dict]:
        raise NotImplementedError

    def _checked(self, photos, worker_cls, ctor_kwargs, batch_size) -> Iterator[dict]:
        """Result batches, each filtered to rows not seen before; raises EngineError if rows are lost."""
        tracker = RowTracker(len(photos))
        for out in self._run(list(map(str, photos)), worker_cls, ctor_kwargs, batch_size):
            keep = tracker.accept(out["row"])
            if not keep.all():
                out = {k: np.asarray(v)[keep] for k, v in out.items()}
            if len(out["row"]):
                yield out
        tracker.finish()
        self.duplicates_dropped = tracker.duplicates

    def map_photos(self, photos: Sequence[str], worker_cls, ctor_kwargs: dict, batch_size: int | None = None
                   ) -> Iterator[dict]:
        """Run ``worker_cls(**ctor_kwargs)`` over batches ``{"row", "path"}`` of ``photos``; result batches
        (each carrying ``row``) stream back, every row exactly once (EngineError when rows are lost)."""
        yield from self._checked(photos, worker_cls, ctor_kwargs, batch_size or self.batch_size)

    def embed_photos(self, photos: Sequence[str], backbone: str = "efficientnet-lite0", pooling: str = "gem",
                     max_side: int | None = None, batch_size: int | None = None,
                     worker_cls=EmbedWorker) -> tuple[np.ndarray, list[str | None]]:
        """(n, D) float32 features in input order (NaN rows for unreadable photos) and per-photo errors."""
        feats, errors = None, [None] * len(photos)
        kw = {"backbone": backbone, "pooling": pooling, "max_side": max_side}
        for out in self._checked(photos, worker_cls, kw, batch_size or self.batch_size):
            f = np.asarray(out["feat"], dtype=np.float32)
            if feats is None:
                feats = np.full((len(photos), f.shape[1]), np.nan, np.float32)
            feats[out["row"]] = f
            for r, e in zip(out["row"], out["error"]):
                errors[int(r)] = str(e) or None
        return (feats if feats is not None else np.zeros((0, 0), np.float32)), errors

    def predict_photos(self, model_path, photos: Sequence[str], batch_size: int | None = None,
                       worker_cls=PredictWorker) -> Iterator[dict]:
        """Batches of columns :data:`PREDICT_COLUMNS`, in input order, each row exactly once."""
        kw = {"bundle": self._bundle_arg(model_path)}
        yield from self._checked(photos, worker_cls, kw, batch_size or self.batch_size)

    def _bundle_arg(self, model_path):
        return str(model_path)

    def close(self) -> None:
        pass
