"""Progress bars: a tqdm bar (counts and rate) on a terminal, silent when stderr is not a TTY."""
from __future__ import annotations

import os
import sys


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", enable: bool | None = True, **kw):
    """``enable=None`` or True: show only when stderr is a TTY (or CAMPUSGPS_PROGRESS=1 forces it)."""
    from tqdm.auto import tqdm

    forced = os.environ.get("CAMPUSGPS_PROGRESS")
    show = bool(enable) and (sys.stderr.isatty() or forced == "1") and forced != "0"
    return tqdm(total=total, desc=desc, unit=unit, disable=not show, dynamic_ncols=True, leave=False, **kw)


def thread_map(fn, n: int, desc: str = "", unit: str = "img", progress: bool | None = True) -> list:
    """``[fn(0), ..., fn(n - 1)]`` on one thread per core (torch's thread count, or ``CAMPUSGPS_THREADS``), in
    order, with a progress bar: for per-photo work in OpenCV/PIL, which releases the GIL. One thread: inline."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    workers = int(os.environ.get("CAMPUSGPS_THREADS", 0) or torch.get_num_threads())
    out = []
    bar = progress_bar(total=n, desc=desc, unit=unit, enable=progress)
    if workers <= 1 or n <= 1:
        for i in range(n):
            out.append(fn(i))
            bar.update(1)
    else:
        with ThreadPoolExecutor(min(workers, n)) as pool:
            for r in pool.map(fn, range(n)):
                out.append(r)
                bar.update(1)
    bar.close()
    return out
