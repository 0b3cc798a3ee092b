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
