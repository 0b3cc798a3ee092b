"""Contact sheet: a grid of labelled thumbnails (condition, session, area) for eyeballing a synthetic set."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np


def write_contact_sheet(root: str | Path, dest: str | Path, n: int = 48, cols: int = 8, thumb=(200, 150),
                        seed: int = 0) -> Path:
    """Pick ``n`` images spread over conditions, sessions and areas from ``root/truth.csv``; write a PNG."""
    root = Path(root)
    with open(root / "truth.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = np.random.default_rng(seed)
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["condition"], r["session"], r.get("area", "")), []).append(r)
    keys = sorted(groups)
    picked, k = [], 0
    pools = {key: list(rng.permutation(len(groups[key]))) for key in keys}
    while len(picked) < min(n, len(rows)) and any(pools.values()):
        key = keys[k % len(keys)]
        if pools[key]:
            picked.append(groups[key][pools[key].pop()])
        k += 1
    picked.sort(key=lambda r: (["day", "overcast", "dusk", "night"].index(r["condition"])
                               if r["condition"] in ("day", "overcast", "dusk", "night") else 9, r["file"]))
    tw, th = thumb
    rows_n = (len(picked) + cols - 1) // cols
    sheet = np.full((rows_n * (th + 18), cols * tw, 3), 255, np.uint8)
    for i, r in enumerate(picked):
        im = cv2.imread(str(root / r["file"]), cv2.IMREAD_COLOR)
        if im is None:
            continue
        im = cv2.resize(im, (tw, th), interpolation=cv2.INTER_AREA)
        y, x = (i // cols) * (th + 18), (i % cols) * tw
        sheet[y:y + th, x:x + tw] = im
        label = f"{r['condition']} {r['session'][0]} {r.get('area', '')}"
        cv2.putText(sheet, label, (x + 3, y + th + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    dest = Path(dest)
    cv2.imwrite(str(dest), sheet)
    return dest
