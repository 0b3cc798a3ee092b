"""Capture plan: spots along paths, headings per spot, phone pose jitter, conditions, GPS noise.

Two sessions: ``photos`` (the mapping walk: spots every 5-10 m, 4-8 headings each) and ``queries``
(another day, other spots and random headings: the external test set). Everything is drawn from
``numpy.random.default_rng([seed, ...])`` so the plan is a pure function of the settings.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from campusgps.synth.world import World

CONDITIONS = ("day", "overcast", "dusk", "night")
RAYLEIGH_MEDIAN = math.sqrt(2 * math.log(2))  # median of |2-D error| / per-axis sigma = 1.1774


@dataclass
class CaptureConfig:
    photos: int | None = None          # target mapping photos (preset default when None)
    queries: int | None = None         # target query photos
    gps_sigma_m: float = 4.0           # per-axis GPS error sigma in open sky
    outlier_fraction: float = 0.03     # fraction of spots whose fix drifts 20-60 m
    night_fraction: float = 0.15
    dusk_fraction: float = 0.10
    overcast_fraction: float = 0.25
    occluders: bool = True
    width: int = 320
    height: int = 240
    # unique: every tree its own billboard (shape, colour, leaf texture), as real trees differ; shared: the
    # ten billboards of synth version 1 for all trees (pixel-identical trees, which SIFT matches across the
    # campus: look-alikes the world does not have). Kept to rebuild older campuses.
    tree_sprites: str = "unique"


@dataclass
class Shot:
    file: str
    session: str
    spot: int
    x: float
    y: float
    z: float
    heading_deg: float
    pitch_deg: float
    roll_deg: float
    hfov_deg: float
    condition: str
    sun_az_deg: float
    sun_el_deg: float
    taken_at: str
    label_x: float
    label_y: float
    accuracy_m: float
    gps_outlier: bool
    area: str
    seed: int
    exposure: float = 1.0
    wb: tuple = (1.0, 1.0, 1.0)
    occluders: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)


def gps_errors(rng: np.random.Generator, n_spots: int, per_spot: np.ndarray, sigma: float,
               multiplier: np.ndarray | None = None, outlier: np.ndarray | None = None,
               jitter: float = 0.3) -> np.ndarray:
    """Phone-like GPS error (east, north) per photo.

    One fix per spot (N(0, (sigma*m)^2 (1-jitter^2)) per axis) plus per-photo jitter (sigma*m*jitter), so a
    photo's error has per-axis sigma*m overall and photos of a spot are strongly correlated. Spots flagged
    ``outlier`` get an extra 20-60 m drift in a random direction. ``per_spot``: spot index of every photo.
    """
    m = np.ones(n_spots) if multiplier is None else np.asarray(multiplier, float)
    fix = rng.normal(0, 1, (n_spots, 2)) * (sigma * m * math.sqrt(1 - jitter ** 2))[:, None]
    if outlier is not None and outlier.any():
        k = int(outlier.sum())
        ang = rng.uniform(0, 2 * math.pi, k)
        mag = rng.uniform(20, 60, k)
        fix[outlier] += np.stack([np.cos(ang) * mag, np.sin(ang) * mag], -1)
    per_spot = np.asarray(per_spot, int)
    return fix[per_spot] + rng.normal(0, 1, (len(per_spot), 2)) * (sigma * m[per_spot] * jitter)[:, None]


def _stratified(rng, n, fracs: dict) -> list:
    """Assign exactly round(frac*n) items to each condition (rest: day), in random order."""
    out = []
    for c in ("night", "dusk", "overcast"):
        out += [c] * int(round(fracs[c] * n))
    out = out[:n]
    out += ["day"] * (n - len(out))
    return [out[i] for i in rng.permutation(n)]


def _sun(rng, cond: str, hour: float) -> tuple[float, float]:
    if cond == "dusk":
        return float(rng.uniform(285, 300)), float(rng.uniform(2, 6))
    if cond == "night":
        return 0.0, -20.0
    az = 90.0 + (hour - 6.0) * 15.0
    el = max(10.0, 62.0 * math.sin(math.pi * (hour - 6.0) / 12.0))
    return float(az % 360), float(el)


def _hour(rng, cond: str) -> float:
    return float({"day": rng.uniform(8.0, 16.5), "overcast": rng.uniform(8.0, 17.0),
                  "dusk": rng.uniform(19.3, 19.9), "night": rng.uniform(21.0, 23.5)}[cond])


def spot_context(world: World, x: float, y: float) -> tuple[str, float]:
    """(area tag, GPS error multiplier) of a position: walkway, repeated_facade, plaza, road, path."""
    wk = world.walkway
    under = wk is not None and wk["x0"] <= x <= wk["x1"] and abs(y - wk["y"]) <= wk["width"] / 2
    best_d, best_rep, canyon = 1e9, False, 0.0
    rep = set(world.repeated_ids)
    desc_b = world.desc["buildings"]
    for b in desc_b:
        for bx in b["boxes"]:
            c = np.asarray(bx["corners"], np.float32)
            d = max(0.5, -cv2.pointPolygonTest(c, (float(x), float(y)), True))
            canyon = max(canyon, b["height_m"] / max(d, 2.0))
            if d < best_d:
                best_d, best_rep = d, b["id"] in rep
    mult = 1.0 + 0.25 * min(3.0, max(0.0, canyon - 1.2))  # urban canyon: tall walls close by
    if under:
        mult *= 1.5  # roof over the antenna
    if under:
        area = "walkway"
    elif best_rep and best_d < 18:
        area = "repeated_facade"
    elif any(p[0] <= x <= p[2] and p[1] <= y <= p[3] for p in world.desc["plazas"]):
        area = "plaza"
    else:
        area = "path"
    return area, float(mult)


def _walk_positions(rng, world: World, spacing: tuple[float, float], lateral: float = 0.6):
    """Positions every `spacing` metres along every capture path, with lateral jitter; (N, 2) + path idx."""
    pos, pidx = [], []
    for k, p in enumerate(world.paths):
        a, b = np.asarray(p["pts"][0], float), np.asarray(p["pts"][1], float)
        L = float(np.linalg.norm(b - a))
        d = (b - a) / L
        nrm = np.array([-d[1], d[0]])
        t = rng.uniform(0, spacing[1])
        while t < L:
            pos.append(a + d * t + nrm * rng.uniform(-1, 1) * p["width"] / 2 * lateral)
            pidx.append(k)
            t += rng.uniform(*spacing)
    return np.asarray(pos), np.asarray(pidx)


def _path_length(world: World) -> float:
    return float(sum(np.linalg.norm(np.subtract(p["pts"][1], p["pts"][0])) for p in world.paths))


def _occluders(rng, world: World, x, y, heading, cond) -> list:
    out = []
    psi = math.radians(heading)
    F, R = np.array([math.sin(psi), math.cos(psi)]), np.array([math.cos(psi), -math.sin(psi)])
    n_people = rng.poisson(0.35 if cond == "night" else 1.3)
    for _ in range(n_people):
        dpt = rng.uniform(2.5, 30)
        p = np.array([x, y]) + F * dpt + R * rng.uniform(-0.6, 0.6) * dpt
        out.append([float(p[0]), float(p[1]), int(world.people[rng.integers(len(world.people))])])
    for road in world.roads:
        ry = road["pts"][0][1]
        if abs(y - ry) < 30:
            for _ in range(rng.poisson(1.6)):
                cx = x + rng.uniform(-40, 40)
                side = 1 if rng.random() < 0.5 else -1
                out.append([float(cx), float(ry + side * rng.uniform(1.8, 2.6)), int(world.cars[rng.integers(len(world.cars))])])
    return out


def plan(world: World, cfg: CaptureConfig, seed: int, preset) -> list[Shot]:
    """All shots of both sessions, in file order (photos first, then queries)."""
    if cfg.gps_sigma_m < 0:
        raise ValueError("gps_sigma_m must be >= 0")
    fracs = {"night": cfg.night_fraction, "dusk": cfg.dusk_fraction, "overcast": cfg.overcast_fraction}
    n_photos = cfg.photos if cfg.photos is not None else preset.photos
    n_queries = cfg.queries if cfg.queries is not None else preset.queries
    L = _path_length(world)
    mean_views = 4.0 if preset.name == "tiny" else 6.0
    spacing_mean = float(np.clip(L * mean_views / max(1, n_photos), 5.0, 10.0))
    spacing = (max(4.0, spacing_mean - 2.0), spacing_mean + 2.0)
    shots, pos = _mapping_shots(world, cfg, seed, preset, fracs, spacing)
    return shots + _query_shots(world, cfg, seed, fracs, n_queries, pos)


def _mapping_shots(world: World, cfg: CaptureConfig, seed: int, preset, fracs: dict,
                   spacing: tuple) -> tuple[list[Shot], np.ndarray]:
    """Mapping session: spots every ``spacing`` metres along the paths, several headings each."""
    shots: list[Shot] = []
    rng = np.random.default_rng([seed, 8001])
    pos, _ = _walk_positions(rng, world, spacing)
    n_spots = len(pos)
    ctx = [spot_context(world, *p) for p in pos]
    conds = _stratified(rng, n_spots, fracs)
    outl = np.zeros(n_spots, bool)
    n_out = int(round(cfg.outlier_fraction * n_spots))
    if cfg.outlier_fraction > 0 and n_out == 0 and n_spots >= 5:
        n_out = 1
    outl[rng.permutation(n_spots)[:n_out]] = True
    views = []
    for s in range(n_spots):
        nv = 4 if preset.name == "tiny" else int(rng.integers(4, 9))
        base = rng.uniform(0, 360)
        views.append([(base + k * 360.0 / nv + rng.uniform(-8, 8)) % 360 for k in range(nv)])
    per_spot = np.concatenate([[s] * len(v) for s, v in enumerate(views)]).astype(int)
    err = gps_errors(rng, n_spots, per_spot, cfg.gps_sigma_m, np.array([c[1] for c in ctx]), outl)
    start = dt.datetime(2024, 4, 16, 0, 0, 0)
    hfov_phone = 66.0
    i = 0
    for s in range(n_spots):
        cond = conds[s]
        day_off = s * 4 // max(1, n_spots)  # the walk spans a few days
        hour = _hour(rng, cond)
        az, el = _sun(rng, cond, hour)
        t0 = start + dt.timedelta(days=day_off, hours=hour)
        exp = float(rng.uniform(0.9, 1.1))
        wb = tuple(float(v) for v in rng.uniform(0.96, 1.04, 3))
        acc = round(max(1.5, cfg.gps_sigma_m * ctx[s][1] * rng.uniform(0.9, 1.4)), 1)
        for k, hd in enumerate(views[s]):
            shots.append(Shot(
                file=f"photos/{i:06d}.jpg", session="photos", spot=s, x=float(pos[s][0]), y=float(pos[s][1]),
                z=float(rng.uniform(1.35, 1.65)), heading_deg=float(hd), pitch_deg=float(np.clip(rng.normal(2, 3), -6, 10)),
                roll_deg=float(np.clip(rng.normal(0, 1.5), -4, 4)), hfov_deg=float(hfov_phone + rng.uniform(-4, 5)),
                condition=cond, sun_az_deg=az, sun_el_deg=el,
                taken_at=(t0 + dt.timedelta(seconds=6 * k)).isoformat(timespec="seconds"),
                label_x=float(pos[s][0] + err[i][0]), label_y=float(pos[s][1] + err[i][1]), accuracy_m=float(acc),
                gps_outlier=bool(outl[s]), area=ctx[s][0],
                seed=int(np.random.SeedSequence([seed, 1, i]).generate_state(1)[0]), exposure=exp, wb=wb,
                occluders=_occluders(rng, world, pos[s][0], pos[s][1], hd, cond) if cfg.occluders else []))
            i += 1

    return shots, pos


def _query_shots(world: World, cfg: CaptureConfig, seed: int, fracs: dict, n_queries: int,
                 pos: np.ndarray) -> list[Shot]:
    """Query session: other spots (>= 2 m from mapping spots), other days, 1-3 random headings per spot."""
    shots: list[Shot] = []
    rng = np.random.default_rng([seed, 8002])
    q_spots = []
    pts, _ = _walk_positions(rng, world, (1.0, 3.0), lateral=0.8)
    order = rng.permutation(len(pts))
    need = int(math.ceil(n_queries / 1.8))
    for j in order:
        p = pts[j]
        if np.min(np.hypot(*(pos - p).T)) < 2.0:
            continue
        if any(np.hypot(*(np.asarray(q) - p)) < 3.0 for q in q_spots[-200:]):
            continue
        q_spots.append(p)
        if len(q_spots) >= need:
            break
    q_spots = np.asarray(q_spots)
    nq = len(q_spots)
    nv = [int(rng.integers(1, 4)) for _ in range(nq)]
    # trim to the target number of query photos
    while sum(nv) > n_queries and any(v > 1 for v in nv):
        nv[[k for k, v in enumerate(nv) if v > 1][-1]] -= 1
    qctx = [spot_context(world, *p) for p in q_spots]
    qconds = _stratified(rng, nq, fracs)
    qout = np.zeros(nq, bool)
    nqo = int(round(cfg.outlier_fraction * nq))
    qout[rng.permutation(nq)[:nqo]] = True
    per_q = np.concatenate([[s] * v for s, v in enumerate(nv)]).astype(int) if nq else np.zeros(0, int)
    qerr = gps_errors(rng, nq, per_q, cfg.gps_sigma_m, np.array([c[1] for c in qctx]) if nq else None, qout)
    qstart = dt.datetime(2024, 10, 2, 0, 0, 0)
    j = 0
    for s in range(nq):
        cond = qconds[s]
        hour = _hour(rng, cond)
        az, el = _sun(rng, cond, hour)
        t0 = qstart + dt.timedelta(days=s * 2 // max(1, nq), hours=hour)
        acc = round(max(1.5, cfg.gps_sigma_m * qctx[s][1] * rng.uniform(0.9, 1.4)), 1)
        exp = float(rng.uniform(0.88, 1.12))
        wb = tuple(float(v) for v in rng.uniform(0.95, 1.05, 3))
        for k in range(nv[s]):
            hd = float(rng.uniform(0, 360))
            shots.append(Shot(
                file=f"queries/q{j:05d}.jpg", session="queries", spot=s, x=float(q_spots[s][0]), y=float(q_spots[s][1]),
                z=float(rng.uniform(1.3, 1.7)), heading_deg=hd, pitch_deg=float(np.clip(rng.normal(2, 3.5), -7, 11)),
                roll_deg=float(np.clip(rng.normal(0, 2), -5, 5)), hfov_deg=float(62.0 + rng.uniform(-3, 6)),
                condition=cond, sun_az_deg=az, sun_el_deg=el,
                taken_at=(t0 + dt.timedelta(seconds=9 * k)).isoformat(timespec="seconds"),
                label_x=float(q_spots[s][0] + qerr[j][0]), label_y=float(q_spots[s][1] + qerr[j][1]),
                accuracy_m=float(acc), gps_outlier=bool(qout[s]), area=qctx[s][0],
                seed=int(np.random.SeedSequence([seed, 2, j]).generate_state(1)[0]), exposure=exp, wb=wb,
                occluders=_occluders(rng, world, q_spots[s][0], q_spots[s][1], hd, cond) if cfg.occluders else []))
            j += 1
    return shots
