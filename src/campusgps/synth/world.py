"""Procedural campus: :func:`build_world` runs the stages and returns a :class:`World` (+ world.json).

Stages, each its own module and random stream: ``layout.py`` (paths, blocks, walkway, buildings),
``props.py`` (trees, lamps, benches, landmarks; sprites), ``facades.py`` (wall segments + facade atlas),
``ground.py`` (ground texture, night light map); skies come from ``textures.py``.

Coordinates are east/north metres in a :class:`campusgps.geo.LocalFrame` centred on the campus; the
origin's lat/lon is in ``world.json``. Buildings are unions of (possibly rotated) boxes whose walls become
vertical textured segments; trees, lamps, benches, people and cars are billboards.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from campusgps.synth import textures as T
from campusgps.synth.facades import build_walls
from campusgps.synth.ground import ground_box, ground_texture, light_map
from campusgps.synth.layout import Layout, Site, box_corners, capture_paths, make_layout
from campusgps.synth.props import TREE_KINDS, Props, make_sprites, place_props


@dataclass(frozen=True)
class Preset:
    name: str
    width_m: float
    height_m: float
    block: tuple  # (min, max) block size in metres
    photos: int   # target mapping photos
    queries: int  # target query photos
    walkway_blocks: int = 2
    capture_ring: bool = True  # also capture along the ring path around the campus


PRESETS = {
    "tiny": Preset("tiny", 80.0, 60.0, (30.0, 36.0), photos=40, queries=10, walkway_blocks=1,
                   capture_ring=False),
    "small": Preset("small", 200.0, 150.0, (34.0, 44.0), photos=2400, queries=300),
    "medium": Preset("medium", 420.0, 300.0, (30.0, 40.0), photos=10000, queries=1000, walkway_blocks=3),
}


@dataclass
class World:
    preset: str
    seed: int
    width_m: float
    height_m: float
    origin: tuple
    desc: dict                      # JSON-able description (world.json)
    seg: dict                       # arrays: x0 y0 x1 y1 zlo zhi nx ny ax ay len kind bid
    atlas: list                     # facade atlas mip levels (RGBA: A = emissive)
    ground: list                    # ground texture mip levels (RGB)
    ground_box: tuple               # (x0, y0, x1, y1) metres covered by the ground texture
    light: np.ndarray               # night light map uint8 (LIGHT_PPM)
    ceilings: list                  # dicts: cx cy len wid angle z tex(RGBA mips) ppm
    skies: dict                     # condition -> panorama RGB
    sprites: list                   # props.Sprite
    objects: dict                   # arrays: x y sprite
    people: list                    # sprite ids
    cars: list                      # sprite ids
    footprints: list                # (corners (4,2), height) for shadows / GPS
    paths: list                     # capture polylines: dicts {pts, kind, width, name}
    walkway: dict | None
    repeated_ids: list
    roads: list = field(default_factory=list)   # polylines where cars may park

    def frame(self):
        from campusgps.geo import LocalFrame
        return LocalFrame(lat0=self.origin[0], lon0=self.origin[1], alt0=self.origin[2])


def _describe(spec: Preset, seed: int, origin, L: Layout, P: Props, cap: list) -> dict:
    """The JSON-able world description (world.json)."""
    return {
        "version": 1, "preset": spec.name, "seed": int(seed),
        "frame": {"lat0": origin[0], "lon0": origin[1], "alt0": origin[2]},
        "size_m": [spec.width_m, spec.height_m],
        "units": "east/north metres in the local frame (LocalFrame aeqd at lat0/lon0)",
        "paths": L.paths, "capture_paths": cap,
        "buildings": [{"id": b["id"], "number": b["number"], "height_m": b["height"], "repeated": b["repeated"],
                       "boxes": [{"cx": bx[0], "cy": bx[1], "w": bx[2], "d": bx[3], "angle_deg": bx[4],
                                  "corners": box_corners(*bx).round(3).tolist()} for bx in b["boxes"]],
                       "style": {k: v for k, v in b["style"].items()}} for b in L.buildings],
        "walkway": L.walkway, "repeated_building_ids": [b["id"] for b in L.buildings if b["repeated"]],
        "plazas": P.plazas, "landmarks": P.landmarks,
        "trees": [[round(t[0], 2), round(t[1], 2), TREE_KINDS[t[2]]] for t in P.trees],
        "lamps": [[round(x, 2), round(y, 2)] for x, y in P.lamps],
        "benches": [[round(x, 2), round(y, 2)] for x, y in P.benches],
        "bins": [[round(x, 2), round(y, 2)] for x, y in P.bins],
        "blocks": [{"i": b["i"], "j": b["j"], "type": b["type"], "box": [round(v, 2) for v in b["box"]]}
                   for b in L.blocks],
    }


def build_world(preset: str = "tiny", seed: int = 0, origin=(31.2620, 34.8010, 280.0),
                tree_sprites: str = "unique") -> World:
    """Generate the campus for (preset, seed). Deterministic. ``tree_sprites``: unique (every tree its own
    billboard) or shared (the ten billboards of synth version 1, pixel-identical trees)."""
    if preset not in PRESETS:
        raise KeyError(preset)
    if tree_sprites not in ("unique", "shared"):
        raise ValueError(f"tree_sprites must be unique or shared, got {tree_sprites!r}")
    spec = PRESETS[preset]
    rng = np.random.default_rng([seed, 7001])          # layout, then props
    L = make_layout(spec, rng)
    footprints = [(box_corners(*bx), bd["height"]) for bd in L.buildings for bx in bd["boxes"]]
    site = Site(footprints, L.paths, L.walkway)
    props = place_props(L, site, rng)
    sprites, objects, people, cars = make_sprites(np.random.default_rng([seed, 7002]), props,
                                                  tree_seed=seed if tree_sprites == "unique" else None)
    walkway = L.walkway if L.walkway["x1"] - L.walkway["x0"] > 6 else None
    # landmark footprints join `footprints` here: the ground's aprons and flower-bed test see them
    seg, atlas, ceilings = build_walls(np.random.default_rng([seed, 7003]), L.buildings, props.landmarks,
                                       walkway, footprints)
    ground = ground_texture(np.random.default_rng([seed, 7004]), L, site, props.plazas)
    skies = {c: T.make_sky(np.random.default_rng([seed, 7005, i]), c)
             for i, c in enumerate(("day", "overcast", "dusk", "night"))}
    cap = capture_paths(L.paths, spec.capture_ring)
    return World(preset=preset, seed=int(seed), width_m=spec.width_m, height_m=spec.height_m, origin=tuple(origin),
                 desc=_describe(spec, seed, origin, L, props, cap), seg=seg, atlas=atlas, ground=ground,
                 ground_box=ground_box(L), light=light_map(L, props.lamps, walkway), ceilings=ceilings,
                 skies=skies, sprites=sprites, objects=objects, people=people, cars=cars,
                 footprints=list(footprints), paths=cap, walkway=walkway,
                 repeated_ids=[b["id"] for b in L.buildings if b["repeated"]],
                 roads=[p for p in L.paths if p["kind"] == "road"])
