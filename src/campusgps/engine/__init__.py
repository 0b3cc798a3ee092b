"""Where per-photo work runs: in this process (``local``) or as Ray Data jobs over a cluster (``ray``).

``get_engine(name, address=None, workers=0)`` returns an :class:`~campusgps.engine.base.Engine` with

* ``embed_photos(photos, backbone, pooling)`` -> (features (n, D) float32, errors): decode + backbone
  features per photo, batched; unreadable photos get a NaN row and an error message.
* ``predict_photos(model_path, photos)`` -> iterator of column batches (``row, file, lat, lon, radius_m,
  flags, error``) in input order; :func:`campusgps.engine.output.write_predictions` streams them to a file.

Both engines run the same per-batch code (:class:`~campusgps.engine.base.EmbedWorker`,
:class:`~campusgps.engine.base.PredictWorker`), so they give the same answers; every result carries its input
row index and :class:`~campusgps.engine.base.RowTracker` checks that no row is lost or duplicated.
Ray is optional (``pip install 'campusgps[ray]'``).
"""
from __future__ import annotations

from campusgps.engine.base import ENGINES, Engine, EngineError, RowTracker, get_engine

__all__ = ["ENGINES", "Engine", "EngineError", "RowTracker", "add_engine_arguments", "get_engine"]


def add_engine_arguments(p, work: str, actors: str) -> None:
    """``--engine``, ``--ray-address``, ``--workers`` for a command whose per-photo ``work`` can run on Ray."""
    p.add_argument("--engine", choices=list(ENGINES), default="local",
                   help=f"where {work} runs: local (this process) or ray (Ray Data jobs over a pool of {actors}; "
                        "pip install 'campusgps[ray]')")
    p.add_argument("--ray-address", metavar="ADDR", help="with --engine ray: join a cluster (auto, "
                                                         "ray://host:port); default: a local Ray on this machine")
    p.add_argument("--workers", type=int, default=0, help=f"with --engine ray: {actors} (0: one per CPU)")
