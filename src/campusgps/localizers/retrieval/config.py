"""``RetrievalConfig``: the options of method ``retrieval`` (and, extended, ``hybrid``)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RetrievalConfig:
    backbone: str = field(default="efficientnet-lite0", metadata={
        "help": "backbone for global descriptors: efficientnet-lite0/1/2, tiny-cnn, or onnx:PATH (an ONNX image "
                "model; settings in PATH.json)"})
    backbone_opt: list[str] = field(default_factory=list, metadata={"help": "onnx:PATH backbone setting overriding "
                                    "PATH.json, e.g. input_size=224", "metavar": "KEY=VALUE", "repeat": True})
    device: str = field(default="auto", metadata={"help": "auto|cpu|cuda"})
    gem_p: float = field(default=3.0, metadata={"help": "GeM pooling exponent (1 = average pooling)"})
    whiten: str = field(default="auto", metadata={"help": "PCA-whitening: auto (chosen on val), on, off",
                                                     "choices": ["auto", "on", "off"]})
    pca_dim: int = field(default=256, metadata={"help": "dimensions kept by PCA-whitening"})
    finetune: str = field(default="auto", metadata={
        "help": "geo-aligned projection head: auto (trained, kept only if val improves), on, off",
        "choices": ["auto", "on", "off"]})
    ft_loss: str = field(default="ms", metadata={"help": "ms (multi-similarity, hard negatives), pairwise "
                                                         "(seed's cosine-vs-distance MSE) or both",
                                                 "choices": ["ms", "pairwise", "both"]})
    ft_steps: int = field(default=300, metadata={"help": "fine-tuning steps"})
    ft_pos_m: float = field(default=8.0, metadata={"help": "pairs closer than this are positives"})
    ft_neg_m: float = field(default=30.0, metadata={"help": "pairs farther than this are negatives"})
    k: int = field(default=0, metadata={"help": "neighbours used for the position (0: chosen on val)"})
    tau: float = field(default=0.0, metadata={"help": "similarity temperature for weights (0: chosen on val)"})
    bandwidth_m: float = field(default=0.0, metadata={"help": "fusion kernel bandwidth in m (0: chosen on val)"})
    fusion: str = field(default="mode", metadata={"help": "mode|median|mean|top1",
                                                    "choices": ["mode", "median", "mean", "top1"]})
    radius_target: float = field(default=0.9, metadata={"help": "fraction of val truths inside radius_m"})
    ood_percentile: float = field(default=2.0, metadata={"help": "held-out percentile of the out-of-area scores "
                                                                 "(retrieval/ood.py) below which a photo is flagged"})
    ood_margin: float = field(default=0.0, metadata={"help": "margin below that percentile"})
    add_val_to_index: bool = field(default=True, metadata={"help": "add validation photos to the index after "
                                                                  "calibration"})
    thumbnails: bool = field(default=True, metadata={"help": "keep ~128 px JPEG thumbnails of references"})
    thumb_px: int = field(default=128, metadata={"help": "thumbnail size in pixels (longer side)"})
    tta: bool = field(default=False, metadata={"help": "photometric test-time augmentation of query descriptors"})
    night_views: int = field(default=2, metadata={
        "help": "extra low-light descriptors indexed per reference (0: none, 1: + night, 2: + night and dusk); "
                "a reference hit several times counts once, at its best similarity"})
    night_query_lum: float = field(default=0.0, metadata={
        "help": "search the low-light views only for queries darker than this mean luminance (0-255); "
                "0: for every query"})
    index: str = field(default="auto", metadata={
        "help": "reference index: auto (flat, exact, up to 50,000 references; ivfpq above), flat, ivfpq "
                "(compressed, approximate) or hnsw", "choices": ["auto", "flat", "ivfpq", "hnsw"]})
    batch_size: int = field(default=32, metadata={"help": "images per backbone batch"})
    seed: int = field(default=0, metadata={"help": "random seed (held-out slice, projection head)"})
