"""The Ray engine: per-photo work as Ray Data ``map_batches`` jobs, the model held by a pool of actors.

* ``address=None``: start a local Ray with the CPUs this machine has (``workers`` caps the actor pool).
* ``address="auto"`` or ``"ray://host:port"``: join a running cluster (``ray start --head`` ...).

Photos are read by the workers from their paths, so on a multi-machine cluster the paths must be on storage
every node sees (NFS, a mounted bucket). The model bundle travels to the actors as bytes.
Actors are restarted and their batches retried when a worker dies; every result carries its input row and
:class:`~campusgps.engine.base.RowTracker` drops duplicates and fails loudly on lost rows.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

from campusgps.engine.base import Engine
from campusgps.errors import UserError

log = logging.getLogger(__name__)


def _worker_env() -> dict:
    """Environment the Ray workers need: where campusgps lives and one thread per actor."""
    import campusgps

    src = str(Path(campusgps.__file__).resolve().parent.parent)
    pp = os.environ.get("PYTHONPATH", "")
    env = {"PYTHONPATH": src + (os.pathsep + pp if pp else ""), "OMP_NUM_THREADS": "1",
           "CAMPUSGPS_PROGRESS": "0"}
    for k in ("CAMPUSGPS_CACHE",):
        if os.environ.get(k):
            env[k] = os.environ[k]
    return env


class RayEngine(Engine):
    name = "ray"

    def __init__(self, address: str | None = None, workers: int = 0):
        super().__init__(workers)
        import ray

        self.address = address
        self._started_here = False
        if not ray.is_initialized():
            kw = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                      runtime_env={"env_vars": _worker_env()})
            try:
                if address:
                    ray.init(address=address, **kw)
                else:
                    ray.init(num_cpus=os.cpu_count() or 1, **kw)
            except (ConnectionError, ValueError, RuntimeError) as e:
                where = address or "a local Ray"
                raise UserError(f"--engine ray: could not start/connect to {where}: {str(e).splitlines()[0]}")
            self._started_here = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.pool_size = max(1, min(self.workers or cpus, cpus))

    def _bundle_arg(self, model_path):
        return Path(model_path).read_bytes()  # shipped with the actor pool: no shared disk needed

    def _run(self, photos: Sequence[str], worker_cls, ctor_kwargs: dict, batch_size: int) -> Iterator[dict]:
        import warnings

        import ray
        import ray.data

        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no execution-plan chatter on stderr
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        items = [{"row": i, "path": p} for i, p in enumerate(photos)]
        n_blocks = max(1, min(1000, -(-len(items) // batch_size)))  # one block per batch: spread over actors
        ds = ray.data.from_items(items, override_num_blocks=n_blocks)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # remote-args spelling differs across Ray 2.x
            warnings.simplefilter("ignore", UserWarning)
            ds = ds.map_batches(worker_cls, fn_constructor_kwargs=ctor_kwargs, batch_size=batch_size,
                                batch_format="numpy", num_cpus=1,
                                compute=ray.data.ActorPoolStrategy(size=min(self.pool_size, n_blocks)),
                                max_restarts=-1, max_task_retries=-1)
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")

    def close(self) -> None:
        import ray

        if self._started_here and ray.is_initialized():
            ray.shutdown()
