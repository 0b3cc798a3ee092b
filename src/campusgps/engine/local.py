"""The in-process engine: the same workers as Ray, one instance, batches in order."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from campusgps.engine.base import Engine


class LocalEngine(Engine):
    name = "local"

    def _run(self, photos: Sequence[str], worker_cls, ctor_kwargs: dict, batch_size: int) -> Iterator[dict]:
        worker = worker_cls(**ctor_kwargs)
        from campusgps.progress import progress_bar

        bar = progress_bar(total=len(photos), desc="photos", unit="img")
        for s in range(0, len(photos), batch_size):
            chunk = photos[s:s + batch_size]
            yield worker({"row": np.arange(s, s + len(chunk)), "path": np.asarray(chunk, dtype=object)})
            bar.update(len(chunk))
        bar.close()
