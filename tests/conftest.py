"""Shared fixtures. Keep them tiny: the whole suite runs in a few minutes on 2 CPU cores."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

os.environ.setdefault("CAMPUSGPS_PROGRESS", "0")
os.environ.setdefault("OMP_NUM_THREADS", "2")


def make_toy_dataset(root, n_spots: int = 12, views: int = 4, size=(64, 48), seed: int = 0,
                     extent_m: float = 60.0, label_noise_m: float = 0.0):
    """A dataset written straight to disk (no ingest): images whose content depends smoothly on position
    and heading, so a model can learn it. Returns the opened :class:`campusgps.dataset.Dataset`.
    Splits: spots are assigned round-robin train/train/val/test so every split is non-empty."""
    from campusgps.dataset import Dataset, normalise_manifest
    from campusgps.geo import LocalFrame

    rng = np.random.default_rng(seed)
    frame = LocalFrame(lat0=31.2620, lon0=34.8010)
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    rows = []
    yy, xx = np.mgrid[0:size[1], 0:size[0]].astype(np.float32)
    for s in range(n_spots):
        e, n = rng.uniform(-extent_m / 2, extent_m / 2, size=2)
        split = ("train", "train", "val", "test")[s % 4]
        for v in range(views):
            h = v * 2 * np.pi / views
            img = np.stack([
                128 + 100 * np.sin(xx / 9 + e / 10 + h),
                128 + 100 * np.cos(yy / 7 + n / 10 - h),
                128 + 60 * np.sin((xx + yy) / 13 + (e - n) / 15),
            ], axis=-1) + rng.normal(0, 4, size=(size[1], size[0], 3))
            img = np.clip(img, 0, 255).astype(np.uint8)
            sid = f"{s:03d}{v:02d}{seed:04d}aaaaaaa"[:16]
            f = f"images/{sid}.jpg"
            Image.fromarray(img).save(root / f, quality=92)
            le, ln = e + rng.normal(0, label_noise_m), n + rng.normal(0, label_noise_m)
            lat, lon = frame.to_wgs84(le, ln)
            tlat, tlon = frame.to_wgs84(e, n)
            rows.append(dict(id=sid, file=f, source_path=f"/toy/{sid}.jpg", sha256=sid * 4, width=size[0],
                             height=size[1], lat=float(lat), lon=float(lon), east_m=le, north_m=ln,
                             label_source="labels", split=split, true_lat=float(tlat), true_lon=float(tlon),
                             heading_deg=float(np.degrees(h)), condition="day", spot=s))
    ds = Dataset(root=root, manifest=normalise_manifest(pd.DataFrame(rows)), frame=frame)
    ds.save()
    return ds


@pytest.fixture
def toy_dataset(tmp_path):
    return make_toy_dataset(tmp_path / "toy")


@pytest.fixture(scope="session")
def toy_dataset_session(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("toyds") / "toy")
