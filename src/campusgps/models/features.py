"""On-disk feature cache: each image's features are computed once per backbone (and per augmented view).

Layout under ``DATASET/.cache/features/``::

    content_sha.json                         stored-file -> sha256 memo (keyed by size + mtime)
    <backbone key>/<pooling>-v<view>[-<augment key>]/
        meta.json                            row shape, dtype, backbone description
        data.f32                             rows appended batch by batch (float32, memory-mapped on read)
        keys.txt                             one image content sha256 per row, written AFTER its data

Rows are keyed by the sha256 of the stored image file, so a changed image (or a re-ingest that rewrote it)
gets new features, and identical images are shared. The backbone key changes with weights/preprocessing,
which selects a different folder. Appends happen under a file lock, one batch at a time, so an interrupted
run keeps everything computed so far and the next run only computes the rest.

``pooling``: ``gap`` (global average, (D,)), ``gem`` ((D,)), ``maps`` (last conv maps, (C, h, w)) or
``below:N`` (activations entering the last N blocks, for top-N fine-tuning).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from campusgps.errors import UserError

CACHE_DIRNAME = ".cache/features"


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Store:
    """One (backbone, pooling, view) table: append-only rows + keys, memory-mapped on read."""

    def __init__(self, folder: Path, row_shape: tuple[int, ...] | None = None, meta: dict | None = None):
        self.folder = folder
        self.data_path, self.keys_path = folder / "data.f32", folder / "keys.txt"
        self.meta_path, self.lock_path = folder / "meta.json", folder / ".lock"
        self.row_shape = tuple(row_shape) if row_shape else None
        if self.meta_path.exists():
            m = json.loads(self.meta_path.read_text())
            stored = tuple(m["row_shape"])
            if self.row_shape and stored != self.row_shape:  # should not happen (key covers it); start over
                self._reset()
            else:
                self.row_shape = stored
        self._meta = meta or {}
        self._index: dict[str, int] = {}
        self._mm = None
        self._n = 0

    def _reset(self):
        for p in (self.data_path, self.keys_path, self.meta_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    @property
    def row_size(self) -> int:
        return int(np.prod(self.row_shape)) if self.row_shape else 0

    def refresh(self) -> None:
        """Re-read keys and map the data file (only rows whose key was written count)."""
        self._index, self._mm, self._n = {}, None, 0
        if not self.keys_path.exists() or not self.row_shape:
            return
        keys = self.keys_path.read_text().split("\n")
        keys = [k for k in keys if k]
        nbytes = self.data_path.stat().st_size if self.data_path.exists() else 0
        n = min(len(keys), nbytes // (4 * self.row_size))
        for i, k in enumerate(keys[:n]):
            self._index[k] = i
        self._n = n
        if n:
            self._mm = np.memmap(self.data_path, dtype=np.float32, mode="r", shape=(n,) + self.row_shape)

    def has(self, key: str) -> bool:
        return key in self._index

    def rows(self, keys: list[str]) -> np.ndarray:
        idx = np.fromiter((self._index[k] for k in keys), dtype=np.int64, count=len(keys))
        if not len(idx):
            return np.zeros((0,) + (self.row_shape or (0,)), np.float32)
        return np.asarray(self._mm[idx], dtype=np.float32)

    def append(self, keys: list[str], rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if self.row_shape is None:
            self.row_shape = tuple(rows.shape[1:])
        if tuple(rows.shape[1:]) != self.row_shape:
            raise RuntimeError(f"feature shape {rows.shape[1:]} != cache shape {self.row_shape}")
        self.folder.mkdir(parents=True, exist_ok=True)
        with _locked(self.lock_path):
            if not self.meta_path.exists():
                tmp = self.meta_path.with_name(f"meta.{os.getpid()}.tmp")
                tmp.write_text(json.dumps({"row_shape": list(self.row_shape), "dtype": "float32", **self._meta},
                                          indent=1))
                os.replace(tmp, self.meta_path)
            # make data and keys agree before appending (an interrupted writer may have left extra bytes)
            n_keys = 0
            if self.keys_path.exists():
                text = self.keys_path.read_text()
                if text and not text.endswith("\n"):  # torn last line
                    text = text[: text.rfind("\n") + 1]
                    self.keys_path.write_text(text)
                n_keys = text.count("\n")
            rb = 4 * self.row_size
            nbytes = self.data_path.stat().st_size if self.data_path.exists() else 0
            if nbytes // rb < n_keys:  # keys without data (torn write): drop the extra keys
                lines = self.keys_path.read_text().split("\n")[: nbytes // rb]
                self.keys_path.write_text("".join(k + "\n" for k in lines))
                n_keys = len(lines)
            with open(self.data_path, "r+b" if self.data_path.exists() else "wb") as f:
                f.truncate(n_keys * rb)
                f.seek(n_keys * rb)
                f.write(rows.tobytes())
                f.flush()
                os.fsync(f.fileno())
            with open(self.keys_path, "a") as f:
                f.write("".join(k + "\n" for k in keys))
                f.flush()


class FeatureCache:
    """Features of a dataset's images, computed once per (backbone key, pooling, view) and kept on disk."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._sha_memo: dict | None = None

    @classmethod
    def for_dataset(cls, dataset) -> "FeatureCache":
        return cls(Path(dataset.root) / CACHE_DIRNAME)

    # --- image identity ------------------------------------------------------------------------------
    def content_keys(self, dataset) -> list[str]:
        """sha256 of every stored image file of ``dataset`` (memoised by path, size and mtime)."""
        memo_path = self.root / "content_sha.json"
        if self._sha_memo is None:
            try:
                self._sha_memo = json.loads(memo_path.read_text())
            except Exception:
                self._sha_memo = {}
        memo, changed, out = self._sha_memo, False, []
        for rel in dataset.manifest["file"]:
            p = Path(dataset.root) / rel
            try:
                st = p.stat()
            except FileNotFoundError:
                raise UserError(f"{p}: image listed in the manifest is missing; re-run `campusgps ingest` "
                                f"for {dataset.root}")
            tag = f"{st.st_size}:{st.st_mtime_ns}"
            hit = memo.get(str(rel))
            if hit and hit[0] == tag:
                out.append(hit[1])
            else:
                sha = file_sha256(p)
                memo[str(rel)] = [tag, sha]
                out.append(sha)
                changed = True
        if changed:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                tmp = memo_path.with_name(f"content_sha.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(memo))
                os.replace(tmp, memo_path)
            except OSError:
                pass
        return out

    # --- stores --------------------------------------------------------------------------------------
    def store_dir(self, bb, pooling: str, view: int, augment=None) -> Path:
        name = f"{pooling.replace(':', '')}-v{view}"
        if view > 0:
            name += f"-{augment.key}"
        return self.root / bb.key / name

    @staticmethod
    def _compute_fn(bb, pooling: str, batch_size: int) -> Callable[[list[np.ndarray]], np.ndarray]:
        if pooling in ("gap", "gem"):
            return lambda ims: bb.embed(ims, batch_size=batch_size, pooling=pooling)
        if pooling == "maps":
            return lambda ims: bb.feature_maps(ims, batch_size=batch_size)
        if pooling.startswith("below:"):
            n = int(pooling.split(":", 1)[1])
            return lambda ims: bb.features_below(ims, n, batch_size=batch_size)
        raise UserError(f"unknown pooling {pooling!r}; use gap, gem, maps or below:N")

    def get(self, dataset, bb, pooling: str = "gap", view: int = 0, augment=None, batch_size: int = 32,
            progress: bool = True) -> np.ndarray:
        """Features for every row of ``dataset`` in manifest order: (N, D) for gap/gem, (N, C, h, w) else.

        ``view`` 0 is the plain image; views >= 1 are augmented copies made by ``augment`` (an
        :class:`campusgps.models.augment.Augmenter`, default settings when None), deterministic per
        (image, view) so cached views are reproducible.
        """
        if view > 0 and augment is None:
            from campusgps.models.augment import Augmenter

            augment = Augmenter()
        keys = self.content_keys(dataset)
        store = self._store(bb, pooling, view, augment)
        missing = [i for i, k in enumerate(keys) if not store.has(k)]
        # dedupe identical images inside the missing set
        seen, todo = set(), []
        for i in missing:
            if keys[i] not in seen:
                seen.add(keys[i])
                todo.append(i)
        if todo:
            self._compute(dataset, bb, store, keys, todo, pooling, view, augment, batch_size, progress)
            store.refresh()
        return store.rows(keys)

    def _store(self, bb, pooling: str, view: int, augment) -> _Store:
        store = _Store(self.store_dir(bb, pooling, view, augment),
                       meta={"backbone": bb.describe(), "pooling": pooling, "view": view,
                             "augment": getattr(augment, "key", None) if view else None})
        store.refresh()
        return store

    def _compute(self, dataset, bb, store, keys, todo, pooling, view, augment, batch_size, progress):
        # gap and GeM come from the same network pass: cache the other pooling of the plain photos too (the
        # regression head reads gap, retrieval GeM, of the same photos: the second then costs nothing)
        sibling = {"gap": "gem", "gem": "gap"}.get(pooling) if view == 0 and hasattr(bb, "embed_pools") else None
        side = self._store(bb, sibling, view, augment) if sibling else None
        if _ENGINE[0] is not None:  # `train --engine ray`: the per-photo work as engine jobs
            return _compute_with_engine(_ENGINE[0], dataset, bb, (store, side), keys, todo, (pooling, sibling),
                                        view, augment, batch_size)
        from concurrent.futures import ThreadPoolExecutor

        from campusgps.errors import ImageError
        from campusgps.progress import progress_bar

        compute = self._compute_fn(bb, pooling, batch_size)
        max_side = bb.load_max_side()
        paths = dataset.paths()

        def load(idx: list[int]) -> list[np.ndarray]:
            from campusgps.exif import load_image

            out = []
            for i in idx:
                try:
                    im = load_image(paths[i], max_side=max_side)
                except ImageError as e:
                    raise UserError(f"{paths[i]}: stored image unreadable ({e}); re-run `campusgps ingest` "
                                    f"for {dataset.root}")
                if view > 0:
                    seed = int(keys[i][:12], 16) ^ (view * 0x9E3779B1)
                    im = augment(im, np.random.default_rng(seed))
                out.append(im)
            return out

        chunk = max(batch_size, 32)
        batches = [todo[s:s + chunk] for s in range(0, len(todo), chunk)]
        desc = f"features {bb.name} {pooling}" + (f" view {view}" if view else "")
        bar = progress_bar(total=len(todo), desc=desc, unit="img", enable=progress)
        with ThreadPoolExecutor(max_workers=1) as pool:  # decode the next batch while this one runs
            fut = pool.submit(load, batches[0])
            for b, idx in enumerate(batches):
                images = fut.result()
                if b + 1 < len(batches):
                    fut = pool.submit(load, batches[b + 1])
                if side is None:
                    feats = compute(images)
                else:
                    both = bb.embed_pools(images, batch_size=batch_size)
                    feats = both[pooling]
                    _append_new(side, [keys[i] for i in idx], both[sibling])
                store.append([keys[i] for i in idx], feats)
                bar.update(len(idx))
        bar.close()

    def clear(self, bb=None) -> None:
        """Delete cached features (of one backbone, or all)."""
        import shutil

        target = self.root / bb.key if bb is not None else self.root
        shutil.rmtree(target, ignore_errors=True)


# ---------------------------------------------------------------- computing through an engine (train --engine)
_ENGINE: list = [None]


@contextlib.contextmanager
def use_engine(engine):
    """Within this block, features missing from any cache are computed by ``engine``
    (:class:`campusgps.engine.base.Engine`; None: in this process, as always)."""
    before, _ENGINE[0] = _ENGINE[0], engine
    try:
        yield engine
    finally:
        _ENGINE[0] = before


def current_engine():
    """The engine set by :func:`use_engine` (None: compute in this process)."""
    return _ENGINE[0]


def _append_new(store: _Store, keys: list[str], rows: np.ndarray) -> None:
    """Append the rows whose key ``store`` does not hold yet."""
    new = [j for j, k in enumerate(keys) if not store.has(k)]
    if new:
        store.append([keys[j] for j in new], np.stack([np.asarray(rows[j], np.float32) for j in new]))


class CacheWorker:
    """One engine worker: decodes stored photos, applies the cache's deterministic view augmentation
    (seeded by the file's sha256, as in-process) and computes ``pooling`` features with its own backbone
    (and, with ``sibling``, the other pooling of the same pass as ``feat2``, as in-process)."""

    def __init__(self, backbone: str, key: str, pooling: str, view: int = 0, augment=None, max_side=None,
                 batch_size: int = 32, options: dict | None = None, sibling: str | None = None):
        from campusgps.models.backbones import get_backbone

        self.bb = get_backbone(backbone, device="cpu", options=options)  # options: an onnx:PATH's settings
        if self.bb.key != key:
            raise RuntimeError(f"worker backbone {self.bb.key} differs from the driver's {key} (other weights?)")
        self.view, self.augment, self.max_side = int(view), augment, max_side or self.bb.load_max_side()
        self.compute = FeatureCache._compute_fn(self.bb, pooling, batch_size)
        self.pooling, self.sibling, self.batch_size = pooling, sibling, batch_size

    def __call__(self, batch: dict) -> dict:
        from campusgps.errors import ImageError
        from campusgps.exif import load_image

        imgs, errors = [], []
        for path in batch["path"]:
            try:
                im = load_image(str(path), max_side=self.max_side)
                if self.view > 0:
                    seed = int(file_sha256(Path(str(path)))[:12], 16) ^ (self.view * 0x9E3779B1)
                    im = self.augment(im, np.random.default_rng(seed))
                imgs.append(im)
                errors.append("")
            except (ImageError, OSError) as e:
                errors.append(str(e) or "unreadable")
        out = {"row": np.asarray(batch["row"], np.int64), "error": np.asarray(errors, dtype=object)}
        if any(errors):  # a stored image that does not decode: the driver stops with a clear error
            out["feat"] = np.zeros((len(errors), 1), np.float32)
        elif self.sibling:
            both = self.bb.embed_pools(imgs, batch_size=self.batch_size)
            out["feat"], out["feat2"] = both[self.pooling], both[self.sibling]
        else:
            out["feat"] = np.asarray(self.compute(imgs), np.float32)
        return out


def _compute_with_engine(engine, dataset, bb, stores, keys, todo, poolings, view, augment, batch_size) -> None:
    """Features of rows ``todo`` through ``engine``, appended to ``stores[0]`` batch by batch as they arrive
    (an interrupted job keeps what was stored; every row comes back exactly once or the job fails); with a
    sibling pooling (``poolings[1]``), its features go to ``stores[1]``."""
    (store, side), (pooling, sibling) = stores, poolings
    paths = dataset.paths()
    photos = [str(paths[i]) for i in todo]
    kw = {"backbone": bb.name, "key": bb.key, "pooling": pooling, "view": view, "sibling": sibling,
          "augment": augment if view else None, "max_side": bb.load_max_side(), "batch_size": batch_size,
          "options": getattr(bb, "settings", None) if str(bb.name).startswith("onnx:") else None}
    for out in engine.map_photos(photos, CacheWorker, kw, batch_size):
        bad = [(r, e) for r, e in zip(out["row"], out["error"]) if e]
        if bad:
            r, e = bad[0]
            raise UserError(f"{photos[int(r)]}: stored image unreadable ({e}); re-run `campusgps ingest` "
                            f"for {dataset.root}")
        store.append([keys[todo[int(r)]] for r in out["row"]], out["feat"])
        if side is not None:
            _append_new(side, [keys[todo[int(r)]] for r in out["row"]], out["feat2"])
