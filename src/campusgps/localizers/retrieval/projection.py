"""Descriptor projection: L2(GeM) -> [centre, PCA-whiten] -> L2 -> [geo-aligned head] -> L2.

``Projection`` applies it with numpy at prediction time; ``finetune_head`` trains the linear head (torch) on
cached descriptors so that photos taken close together are similar and look-alikes far apart are not.
"""
from __future__ import annotations

import numpy as np

from campusgps.localizers.retrieval.descriptors import l2n


class Projection:
    """L2(GeM) -> [centre, PCA-whiten] -> L2 -> [head] -> L2, all numpy at prediction time."""

    def __init__(self, mean=None, P=None, W=None, b=None):
        self.mean, self.P, self.W, self.b = mean, P, W, b

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        x = l2n(raw)
        if self.P is not None:
            x = l2n((x - self.mean) @ self.P)
        elif self.mean is not None:  # centring only: sharper cosine contrast, same dimensions
            x = l2n(x - self.mean)
        if self.W is not None:
            x = l2n(x @ self.W + self.b)
        return np.ascontiguousarray(x, dtype=np.float32)

    def tensors(self) -> dict:
        out = {}
        for k in ("mean", "P", "W", "b"):
            v = getattr(self, k)
            if v is not None:
                out[f"proj_{k}"] = np.asarray(v, dtype=np.float32)
        return out

    @classmethod
    def from_tensors(cls, t: dict) -> "Projection":
        return cls(*(t.get(f"proj_{k}") for k in ("mean", "P", "W", "b")))


def _multi_similarity(torch, s, dd, eye, pos_m: float, neg_m: float):
    """Multi-similarity loss with hard mining (Wang et al., CVPR 2019): negatives more similar than the
    hardest positive, positives less similar than the hardest negative."""
    alpha, beta, lam = 2.0, 40.0, 0.5
    posm = (dd < pos_m) & ~eye
    negm = dd > neg_m
    big = torch.tensor(1e4)
    min_pos = torch.where(posm, s, big).min(1, keepdim=True).values
    max_neg = torch.where(negm, s, -big).max(1, keepdim=True).values
    negh = negm & (s + 0.1 > min_pos)
    posh = posm & (s - 0.1 < max_neg)
    lp = torch.log1p((torch.exp(-alpha * (s - lam)) * posh).sum(1)) / alpha
    ln = torch.log1p((torch.exp(beta * (s - lam)) * negh).sum(1)) / beta
    has = posm.any(1)
    return (lp + ln)[has].mean() if has.any() else None


def finetune_head(raw: np.ndarray, en: np.ndarray, base: Projection, cfg) -> tuple[np.ndarray, np.ndarray]:
    """Linear head initialised at identity on ``base``'s space, trained with geo-aligned losses
    (``cfg.ft_loss``: ms, pairwise or both; ``ft_steps``, ``ft_pos_m``, ``ft_neg_m``, ``seed``)."""
    import torch

    torch.manual_seed(cfg.seed)
    x0 = torch.from_numpy(base(raw))  # start from the current descriptor space
    d = x0.shape[1]
    W = torch.nn.Parameter(torch.eye(d))
    b = torch.nn.Parameter(torch.zeros(d))
    pos = torch.from_numpy(en.astype(np.float32))
    dist = torch.cdist(pos, pos)
    opt = torch.optim.AdamW([W, b], lr=1e-3, weight_decay=1e-4)
    n = len(x0)
    g = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.ft_steps):
        bs = min(n, 256)
        sel = torch.randperm(n, generator=g)[:bs]
        z = torch.nn.functional.normalize(x0[sel] @ W + b, dim=1)
        s = z @ z.T
        dd = dist[sel][:, sel]
        eye = torch.eye(bs, dtype=torch.bool)
        loss = torch.zeros(())
        if cfg.ft_loss in ("ms", "both"):
            ms = _multi_similarity(torch, s, dd, eye, cfg.ft_pos_m, cfg.ft_neg_m)
            if ms is not None:
                loss = loss + ms
        if cfg.ft_loss in ("pairwise", "both"):
            target = torch.exp(-dd / max(cfg.ft_pos_m, 1e-3))
            loss = loss + ((s - target) ** 2)[~eye].mean()
        loss = loss + 1e-3 * ((W - torch.eye(d)) ** 2).sum()  # stay near the start
        opt.zero_grad()
        loss.backward()
        opt.step()
    return W.detach().numpy().astype(np.float32), b.detach().numpy().astype(np.float32)
