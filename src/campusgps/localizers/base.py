"""The one interface every localization method implements: fit / predict / save / load.

The CLI, the evaluator, the server and the ensemble only speak to this interface.

Subclass contract (see docs/ARCHITECTURE.md):

* ``method``: class attribute, the registered name (``regression``, ``retrieval``, ...).
* ``fit(dataset, **opts)``: train on ``dataset.training_rows()`` (validation on ``"val"`` when present),
  set ``self.frame`` and return ``self``.
* ``predict_arrays(images: list[np.ndarray], exclude_ids=()) -> Prediction`` with east/north in ``self.frame``.
  The base class handles paths/bytes, unreadable files, batching and WGS84 conversion. Methods that answer
  from reference photos (``uses_references = True``) must not use the references whose id is in
  ``exclude_ids`` (held-out calibration on photos the model indexed). Prediction must not change the model:
  one fitted model serves several threads at once.
* ``_state() -> (tensors: dict[str, np.ndarray], meta: dict)`` and
  ``_from_state(cls, tensors, meta) -> instance`` for bundles.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Collection, Iterable, Sequence

import numpy as np

from campusgps import __version__
from campusgps.errors import BundleError, ImageError, UserError
from campusgps.geo import LocalFrame
from campusgps.localizers.bundle import read_bundle, read_bundle_meta, write_bundle

_REGISTRY: dict[str, type["Localizer"]] = {}
# modules that register methods; imported lazily by get_localizer_class
_METHOD_MODULES = {
    "mean": "campusgps.localizers.base",
    "regression": "campusgps.localizers.regression",
    "retrieval": "campusgps.localizers.retrieval",
    "hybrid": "campusgps.localizers.hybrid",
    "ensemble": "campusgps.localizers.ensemble",
}


# options renamed since older bundles were written: old name -> current name
RENAMED_OPTIONS = {"radius_coverage": "radius_target"}


def _renamed_options(config: dict) -> dict:
    """A bundle's saved options under their current names (older bundles load unchanged)."""
    return {RENAMED_OPTIONS.get(k, k): v for k, v in config.items()}


def register(cls: type["Localizer"]) -> type["Localizer"]:
    _REGISTRY[cls.method] = cls
    return cls


def get_localizer_class(method: str) -> type["Localizer"]:
    if method not in _REGISTRY and method in _METHOD_MODULES:
        import importlib

        importlib.import_module(_METHOD_MODULES[method])
    if method not in _REGISTRY:
        known = ", ".join(sorted(set(_METHOD_MODULES) | set(_REGISTRY)))
        raise UserError(f"unknown localization method {method!r}; known: {known}")
    return _REGISTRY[method]


@dataclass
class Prediction:
    """Batch result. Arrays have one entry per input image, in input order.

    Rows whose image could not be read have NaN lat/lon/radius and a message in ``errors``.
    ``neighbors[i]`` lists reference photos that support the answer: dicts with at least
    ``lat, lon, score`` and optionally ``id``, ``file``, ``inliers``.
    ``flags[i]`` holds short tags such as ``no_local_features`` or ``out_of_area``.
    ``confidence[i]``: calibrated probability that the photo was taken within 20 m of (lat, lon) (NaN when
    the method has no confidence model, e.g. an older bundle). ``alternatives[i]``: up to two other places,
    dicts ``east, north, radius_m, probability`` (``lat, lon`` added by :meth:`Localizer.predict`).
    ``exif_distance_m[i]``: metres between the answer and the query's own EXIF GPS (NaN when it has none),
    see ``localizers.exif_check``.
    """

    east: np.ndarray
    north: np.ndarray
    radius_m: np.ndarray
    lat: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lon: np.ndarray = field(default_factory=lambda: np.zeros(0))
    neighbors: list[list[dict]] = field(default_factory=list)
    flags: list[list[str]] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)
    confidence: np.ndarray | None = None
    alternatives: list[list[dict]] = field(default_factory=list)
    exif_distance_m: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return len(self.east)

    def __post_init__(self):
        n = len(self.east)
        self.neighbors = self.neighbors or [[] for _ in range(n)]
        self.flags = self.flags or [[] for _ in range(n)]
        self.errors = self.errors or [None] * n
        self.confidence = np.full(n, np.nan) if self.confidence is None else np.asarray(self.confidence, float)
        self.alternatives = self.alternatives or [[] for _ in range(n)]
        if len(self.exif_distance_m) != n:
            self.exif_distance_m = np.full(n, np.nan)

    @classmethod
    def empty(cls, n: int) -> "Prediction":
        nan = np.full(n, np.nan)
        return cls(east=nan.copy(), north=nan.copy(), radius_m=nan.copy(), lat=nan.copy(), lon=nan.copy())

    def latlon(self) -> np.ndarray:
        return np.stack([self.lat, self.lon], axis=1)


@dataclass
class NoConfig:
    """Methods without options."""


class Localizer:
    """Base class. See module docstring for what subclasses implement.

    ``Config`` is the method's dataclass of options (defaults that work); ``campusgps train`` exposes
    its fields as flags. ``self.cfg`` is the instance, ``self.config`` its dict (stored in bundles).
    """

    method: ClassVar[str] = "base"
    Config: ClassVar[type] = NoConfig
    uses_references: ClassVar[bool] = False  # answers from indexed reference photos (honours exclude_ids)

    def __init__(self, config=None, **overrides):
        self.cfg = config if config is not None else self.Config()
        self.config: dict = dataclasses.asdict(self.cfg)
        self.configure(**overrides)
        self.frame: LocalFrame | None = None
        self.info: dict = {}  # training summary, data summary, calibration, ... (goes into metadata)
        self.bundle_meta: dict | None = None  # the bundle's metadata when loaded by Localizer.load

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        # subclasses written against the old private name ``_predict_arrays`` keep working
        if "_predict_arrays" in cls.__dict__ and "predict_arrays" not in cls.__dict__:
            cls.predict_arrays = lambda self, images, exclude_ids=(): self._predict_arrays(images)

    @property
    def is_fitted(self) -> bool:
        return self.frame is not None

    def configure(self, **opts) -> "Localizer":
        """Override fields of ``Config`` (``fit(dataset, **opts)`` calls this); unknown names raise UserError."""
        if opts:
            from campusgps.configs import update

            self.cfg = update(self.cfg, opts)
            self.config = dataclasses.asdict(self.cfg)
        return self

    # --- to implement ------------------------------------------------------------------------------
    def fit(self, dataset, **opts) -> "Localizer":
        """Train on ``dataset``; ``opts`` override ``Config`` fields (via :meth:`configure`)."""
        raise NotImplementedError

    def predict_arrays(self, images: list[np.ndarray], exclude_ids: Collection[str] = ()) -> Prediction:
        """Locate decoded RGB arrays (already shrunk to ``input_max_side``); east/north in ``self.frame``."""
        raise NotImplementedError

    def _predict_arrays(self, images: list[np.ndarray], exclude_ids: Collection[str] = ()) -> Prediction:
        """Old name of :meth:`predict_arrays`."""
        return self.predict_arrays(images, exclude_ids)

    def _state(self) -> tuple[dict[str, np.ndarray], dict]:
        raise NotImplementedError

    @classmethod
    def _from_state(cls, tensors: dict[str, np.ndarray], meta: dict) -> "Localizer":
        raise NotImplementedError

    # --- prediction --------------------------------------------------------------------------------
    def predict(self, images: Sequence, batch_size: int = 32, progress: bool = False,
                exclude_ids: Collection[str] = ()) -> Prediction:
        """Locate a batch of images: numpy RGB arrays, paths, or raw bytes (any mix).

        Unreadable inputs do not stop the batch: their row is NaN and ``errors[i]`` says why.
        ``exclude_ids``: reference photos (by manifest id) the answer must not use (see ``uses_references``).
        """
        from campusgps.exif import load_image
        from campusgps.localizers.exif_check import apply_exif_checks, exif_gps
        from campusgps.progress import progress_bar

        self.require_fitted()
        exclude_ids = frozenset(str(i) for i in exclude_ids)
        images = list(images)
        out = Prediction.empty(len(images))
        gps: list = [None] * len(images)  # the queries' own EXIF GPS, checked against the answers
        bar = progress_bar(total=len(images), desc="locating", unit="img", enable=progress)
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            arrays, idx = [], []
            for j, src in enumerate(chunk):
                try:
                    arrays.append(load_image(src, max_side=self.input_max_side()))
                    idx.append(start + j)
                    gps[start + j] = exif_gps(src)
                except ImageError as e:
                    out.errors[start + j] = str(e)
            if arrays:
                p = self.predict_arrays(arrays, exclude_ids)
                for k, i in enumerate(idx):
                    out.east[i], out.north[i], out.radius_m[i] = p.east[k], p.north[k], p.radius_m[k]
                    out.neighbors[i] = p.neighbors[k] if p.neighbors else []
                    out.flags[i] = p.flags[k] if p.flags else []
                    out.confidence[i] = p.confidence[k]
                    out.alternatives[i] = p.alternatives[k] if p.alternatives else []
            bar.update(len(chunk))
        bar.close()
        ok = np.isfinite(out.east)
        out.lat = np.full(len(images), np.nan)
        out.lon = np.full(len(images), np.nan)
        if ok.any():
            out.lat[ok], out.lon[ok] = self.frame.to_wgs84(out.east[ok], out.north[ok])
        for nb in [*out.neighbors, *out.alternatives]:  # these carry east/north from the method; add lat/lon
            for d in nb:
                if "lat" not in d and "east" in d:
                    la, lo = self.frame.to_wgs84(d["east"], d["north"])
                    d["lat"], d["lon"] = float(la), float(lo)
        apply_exif_checks(self, out, gps)
        return out

    def predict_gps(self, image) -> np.ndarray:
        """One image (H, W, 3) uint8 RGB array or path -> np.array([lat, lon]) float64."""
        p = self.predict([image], batch_size=1)
        if p.errors[0]:
            raise ImageError(p.errors[0])
        return np.array([p.lat[0], p.lon[0]], dtype=np.float64)

    def input_max_side(self) -> int | None:
        """Images are shrunk to this max side on load (None: keep). Methods override if useful."""
        return 1024

    def reference_thumbnail(self, ref_id: str) -> bytes | None:
        """JPEG bytes of a reference (mapping) photo, when the bundle keeps thumbnails; else None."""
        return None

    def reference_positions(self) -> dict | None:
        """Where the reference (mapping) photos the model knows were taken, for drawing a basemap.

        ``{"lat": array, "lon": array}`` plus optional ``"id"`` (list of str, the ids neighbours use) and
        ``"session"``; None when the model keeps no positions (the server then draws no basemap points).
        """
        return None

    # --- persistence -------------------------------------------------------------------------------
    def metadata(self) -> dict:
        from campusgps.configs import run_record

        rec = run_record()
        return {
            "method": self.method,
            "campusgps_version": __version__,
            "frame": self.frame.to_dict() if self.frame else None,
            "config": self.config,
            "info": self.info,
            "versions": rec["versions"],
            "saved_at": rec["time"],
        }

    def save(self, path: str | Path) -> Path:
        self.require_fitted()
        tensors, meta = self._state()
        write_bundle(path, tensors, {**self.metadata(), "state": meta})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Localizer":
        tensors, meta = read_bundle(path)
        method = meta.get("method")
        try:
            klass = get_localizer_class(method)
        except UserError:
            raise BundleError(f"{path}: bundle uses method {method!r}, which this campusgps does not know")
        if cls is not Localizer and not issubclass(klass, cls):
            raise BundleError(f"{path}: is a {method!r} bundle, not {cls.method!r}")
        try:
            loc = klass._from_state(tensors, meta.get("state", {}))
        except BundleError:
            raise
        except Exception as e:
            raise BundleError(f"{path}: corrupt or incompatible {method!r} bundle ({type(e).__name__}: {e})")
        loc.frame = LocalFrame.from_dict(meta["frame"]) if meta.get("frame") else None
        loc.config = _renamed_options(meta.get("config", {}))
        known = {f.name for f in dataclasses.fields(klass.Config)}
        loc.cfg = klass.Config(**{k: v for k, v in loc.config.items() if k in known})
        loc.info = meta.get("info", {})
        loc.bundle_meta = meta
        return loc

    @staticmethod
    def read_metadata(path: str | Path) -> dict:
        return read_bundle_meta(path)

    def require_fitted(self) -> None:
        """UserError unless the model is trained (``fit``) or loaded (``Localizer.load``)."""
        if not self.is_fitted:
            raise UserError(f"{self.method} localizer is not trained yet: call fit() or Localizer.load()")

    _require_fitted = require_fitted  # old private name


@register
class MeanLocalizer(Localizer):
    """The mean-position baseline: always answers the centroid of the training labels.

    ``radius_m`` is the 90th percentile of training distances to the centroid. Every report compares
    against it; it is also the smallest complete example of the interface.
    """

    method = "mean"

    def fit(self, dataset, **opts) -> "MeanLocalizer":
        self.configure(**opts)
        train = dataset.training_rows()
        en = train.en()
        self.frame = dataset.frame
        self.center = en.mean(axis=0)
        self.radius = float(np.percentile(np.hypot(*(en - self.center).T), 90))
        self.info["data"] = {"n_train": int(len(train))}
        return self

    def predict_arrays(self, images: list[np.ndarray], exclude_ids: Collection[str] = ()) -> Prediction:
        n = len(images)
        return Prediction(east=np.full(n, self.center[0]), north=np.full(n, self.center[1]),
                          radius_m=np.full(n, self.radius))

    def input_max_side(self) -> int | None:
        return 64

    def _state(self):
        return {"center": self.center.astype(np.float64)}, {"radius": self.radius}

    @classmethod
    def _from_state(cls, tensors, meta):
        loc = cls()
        loc.center = np.asarray(tensors["center"], dtype=np.float64)
        loc.radius = float(meta["radius"])
        return loc


def iter_image_files(paths: Iterable[str | Path], recursive: bool = True) -> list[Path]:
    """Expand files and folders into a sorted list of image-looking files."""
    exts = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".heic", ".heif", ".avif", ".webp", ".bmp", ".mpo"}
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            it = p.rglob("*") if recursive else p.glob("*")
            out.extend(sorted(q for q in it if q.is_file() and q.suffix.lower() in exts))
        else:
            out.append(p)
    return out
