"""Calibrated confidence, an adaptive radius and alternative places, from a method's own evidence.

Every localizer can describe an answer by a few numbers it already has (for the hybrid: inliers of the best
spot, inliers of the best *other* place, how many verified spots agree, retrieval similarity and margin,
keypoints, brightness, ...). :class:`ConfidenceModel` turns such an evidence vector into

* ``confidence``: the probability that the photo was taken within ``right_m`` (20 m) of the answer, from a
  logistic regression on standardised features (scikit-learn, regularisation chosen by grouped
  cross-validation). The model is a handful of floats (feature names, means, scales, coefficients) kept in
  the bundle's JSON metadata: inspectable, never pickled.
* ``radius_m``: split-conformal calibration within confidence bins. The held-out photos are cut into bins of
  confidence (each with enough photos); within a bin the radius is the finite-sample corrected ``target``
  quantile of the errors (or, with a raw per-photo radius, of error / raw radius). Coverage then holds per
  bin and the radius shrinks where the evidence is strong. Radii never grow with confidence.
* ``alternatives``: up to ``k`` further places (>= ``min_sep_m`` from the answer and from each other) from
  the method's candidate positions, each with a probability from a second small logistic model (its
  evidence relative to the answer's, the answer's confidence), fitted on the same held-out photos.

The models are fitted on held-out *mapping* photos (each searched with its own spot left out), never on
queries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

RIGHT_M = 20.0
ALT_FEATURES = ("log_weight_ratio", "rank", "answer_logit")


def _logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


@dataclass
class Logistic:
    """p = sigmoid(intercept + coef . (x - mean) / scale); plain floats, JSON-serialisable."""

    names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    info: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, X, y, names, groups=None, Cs=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0)) -> "Logistic":
        """Standardise, then an L2 logistic regression whose strength is picked by (grouped) 5-fold log loss."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import log_loss
        from sklearn.model_selection import GroupKFold, StratifiedKFold

        X = np.nan_to_num(np.asarray(X, dtype=np.float64).reshape(len(y), -1))
        y = np.asarray(y, dtype=bool)
        mean = X.mean(0)
        scale = X.std(0)
        scale[scale < 1e-9] = 1.0
        Z = (X - mean) / scale
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        info = {"n": int(len(y)), "n_positive": n_pos}
        if min(n_pos, n_neg) < 2:  # one class only: the base rate with add-one smoothing
            p = (n_pos + 1) / (len(y) + 2)
            return cls(list(names), mean, scale, np.zeros(X.shape[1]), float(_logit(p)), {**info, "C": None})
        folds = min(5, n_pos, n_neg)
        if groups is not None and len(np.unique(groups)) >= folds:
            cv = list(GroupKFold(n_splits=folds).split(Z, y, groups))
        else:
            cv = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=0).split(Z, y))
        cv = [(a, b) for a, b in cv if 0 < y[a].sum() < len(a)]
        C, best = 1.0, np.inf
        for c in (Cs if len(cv) >= 2 else ()):
            loss = 0.0
            for a, b in cv:
                m = LogisticRegression(C=c, max_iter=2000).fit(Z[a], y[a])
                loss += log_loss(y[b], m.predict_proba(Z[b])[:, 1], labels=[False, True]) * len(b)
            if loss < best - 1e-9:
                C, best = float(c), loss
        m = LogisticRegression(C=C, max_iter=2000).fit(Z, y)
        return cls(list(names), mean, scale, m.coef_.ravel().astype(np.float64), float(m.intercept_[0]),
                   {**info, "C": C})

    def logit(self, X) -> np.ndarray:
        X = np.nan_to_num(np.asarray(X, dtype=np.float64).reshape(-1, len(self.names)))
        return self.intercept + ((X - self.mean) / self.scale) @ self.coef

    def predict(self, X) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logit(X)))

    def to_dict(self) -> dict:
        return {"names": list(self.names), "mean": [float(v) for v in self.mean],
                "scale": [float(v) for v in self.scale], "coef": [float(v) for v in self.coef],
                "intercept": float(self.intercept), "info": self.info}

    @classmethod
    def from_dict(cls, d: dict) -> "Logistic":
        return cls(list(d["names"]), np.asarray(d["mean"], np.float64), np.asarray(d["scale"], np.float64),
                   np.asarray(d["coef"], np.float64), float(d["intercept"]), dict(d.get("info", {})))


def conformal_quantile(scores, target: float) -> float:
    """Split-conformal ``target`` quantile: the ceil((n+1) target)-th smallest score (max when n is small)."""
    s = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
    if not len(s):
        return float("nan")
    k = min(len(s), int(math.ceil((len(s) + 1) * target)))
    return float(s[k - 1])


def _allocate_levels(scores: list[np.ndarray], target: float, min_level: float) -> list[float]:
    """Per-bin coverage levels: every bin at least ``min_level``; raised, cheapest log-radius first, until
    the pooled coverage reaches ``target``. Confident bins (small, tight errors) keep a tight circle, unsure
    bins (whose errors are spread out anyway) take the extra coverage."""
    n = sum(len(s) for s in scores)
    levels = [min_level] * len(scores)

    def q(b, lv):
        return max(conformal_quantile(scores[b], lv), 1e-6)

    def covered(b, lv):
        return int(np.sum(scores[b] <= q(b, lv)))

    steps = np.round(np.arange(min_level, 1.0001, 0.01), 4)
    while sum(covered(b, lv) for b, lv in enumerate(levels)) < target * n:
        best, cost = None, np.inf
        for b, lv in enumerate(levels):
            nxt = [x for x in steps if x > lv + 1e-9 and covered(b, x) > covered(b, lv)]
            if not nxt:
                continue
            gain = covered(b, nxt[0]) - covered(b, lv)
            c = (np.log(q(b, nxt[0])) - np.log(q(b, lv))) / gain
            if c < cost:
                best, cost = (b, nxt[0]), c
        if best is None:
            break
        levels[best[0]] = float(best[1])
    return levels


def fit_binned_radius(conf, errors, target: float = 0.9, raw_radius=None, min_per_bin: int = 30,
                      max_bins: int = 5, min_bin_target: float | None = None) -> dict:
    """Conformal radius within confidence bins (equal counts, each >= ``min_per_bin`` photos).

    Each bin gets the split-conformal ``target`` quantile of its errors; with ``min_bin_target`` the bins'
    levels are allocated instead (:func:`_allocate_levels`: pooled coverage ``target``, every bin >=
    ``min_bin_target``), which makes the confident bins' circles smaller.
    Returns ``{"edges": inner bin edges over confidence, "values": per-bin radius (m) or scale of the raw
    radius, "scaled": bool, "target", "levels", "n_per_bin"}``. Without a raw radius, values are made
    non-increasing in confidence (a more confident bin never gets a larger circle)."""
    c = np.asarray(conf, dtype=np.float64).ravel()
    e = np.asarray(errors, dtype=np.float64).ravel()
    raw = None if raw_radius is None else np.asarray(raw_radius, dtype=np.float64).ravel()
    ok = np.isfinite(c) & np.isfinite(e)
    if raw is not None:
        ok &= np.isfinite(raw) & (raw > 0)
    c, e = c[ok], e[ok]
    score = e if raw is None else e / raw[ok]
    nb = int(max(1, min(max_bins, len(c) // max(min_per_bin, 1))))
    edges = np.quantile(c, np.linspace(0, 1, nb + 1)[1:-1]) if nb > 1 and len(c) else np.zeros(0)
    edges = np.unique(edges)
    which = np.digitize(c, edges)
    parts = [score[which == b] for b in range(len(edges) + 1)]
    levels = [float(target)] * len(parts)
    if min_bin_target is not None and min_bin_target < target and all(len(p) for p in parts):
        levels = _allocate_levels(parts, target, min_bin_target)
    v = np.asarray([conformal_quantile(p, lv) if len(p) else np.nan for p, lv in zip(parts, levels)])
    overall = conformal_quantile(score, target) if len(score) else 1.0
    v = np.where(np.isfinite(v), v, overall)
    if raw is None:
        v = np.maximum.accumulate(v[::-1])[::-1]  # non-increasing with confidence
    return {"edges": [float(x) for x in edges], "values": [float(x) for x in v], "scaled": raw is not None,
            "target": float(target), "levels": [float(x) for x in levels], "n_per_bin": [len(p) for p in parts]}


def binned_radius(spec: dict, conf, raw_radius=None) -> np.ndarray:
    c = np.asarray(conf, dtype=np.float64).ravel()
    v = np.asarray(spec["values"], dtype=np.float64)
    r = v[np.digitize(np.nan_to_num(c, nan=0.0), np.asarray(spec["edges"], dtype=np.float64))]
    if spec.get("scaled"):
        raw = np.ones_like(c) if raw_radius is None else np.asarray(raw_radius, dtype=np.float64).ravel()
        r = r * raw
    return r


def place_candidates(points, weights, answer, k: int = 2, min_sep_m: float = 30.0,
                     bandwidth_m: float = 10.0) -> list[tuple[np.ndarray, float]]:
    """Up to ``k`` places other than ``answer``: candidate positions (east/north) ranked by their weighted
    kernel density, each >= ``min_sep_m`` from the answer and from every place already chosen. Returns
    ``[(position (2,), summed weight of the candidates within min_sep_m / 2)]``."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    w = np.clip(np.nan_to_num(np.asarray(weights, dtype=np.float64).ravel()), 0, None)
    if not len(pts) or w.sum() <= 0:
        return []
    d2 = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    dens = (np.exp(-0.5 * d2 / bandwidth_m ** 2) * w[None]).sum(1)
    chosen: list[np.ndarray] = [np.asarray(answer, dtype=np.float64).reshape(2)]
    out = []
    for i in np.argsort(-dens, kind="stable"):
        if w[i] <= 0 or len(out) >= k:
            continue
        if min(np.hypot(*(pts[i] - c)) for c in chosen) < min_sep_m:
            continue
        near = np.hypot(*(pts - pts[i]).T) <= min_sep_m / 2
        pos = (pts[near] * w[near, None]).sum(0) / w[near].sum()
        if min(np.hypot(*(pos - c)) for c in chosen) < min_sep_m:  # the mean drifted towards a chosen place
            pos = pts[i].copy()
        chosen.append(pos)
        out.append((pos, float(w[near].sum())))
    return out


def alt_features(place_weight: float, answer_weight: float, rank: int, answer_conf: float) -> list[float]:
    return [math.log((place_weight + 1e-3) / (answer_weight + 1e-3)), float(rank), float(_logit(answer_conf))]


class ConfidenceModel:
    """Confidence + binned conformal radius + alternative probabilities (see module docstring)."""

    def __init__(self, conf: Logistic, radius: dict, alt: Logistic | None = None, info: dict | None = None):
        self.conf, self.radius_spec, self.alt, self.info = conf, radius, alt, dict(info or {})

    @property
    def names(self) -> list[str]:
        return self.conf.names

    @classmethod
    def fit(cls, X, errors, names, groups=None, raw_radius=None, target: float = 0.9,
            alt_rows=None, right_m: float = RIGHT_M, min_per_bin: int = 30, label_right_m: float | None = None,
            max_bins: int = 5, min_bin_target: float | None = None) -> "ConfidenceModel":
        """``X`` (N, F) evidence of N held-out answers, ``errors`` their errors (m). ``alt_rows``: list of
        (answer index, place weight, answer weight, rank, error of the place) for the candidate places.
        ``label_right_m``: the held-out photo counts as right within this distance of its *label* (default
        ``right_m``; larger when the labels are noisy GPS fixes while confidence is about the true position).
        ``max_bins``/``min_bin_target``: see :func:`fit_binned_radius`."""
        errors = np.asarray(errors, dtype=np.float64).ravel()
        lab_m = right_m if label_right_m is None else float(label_right_m)
        conf = Logistic.fit(X, errors <= lab_m, names, groups=groups)
        p = conf.predict(X)
        radius = fit_binned_radius(p, errors, target=target, raw_radius=raw_radius, min_per_bin=min_per_bin,
                                   max_bins=max_bins, min_bin_target=min_bin_target)
        alt = None
        if alt_rows:
            A = np.array([alt_features(pw, aw, rk, p[i]) for i, pw, aw, rk, _ in alt_rows])
            y = np.array([err <= lab_m for *_, err in alt_rows])
            g = None if groups is None else np.asarray(groups)[[r[0] for r in alt_rows]]
            alt = Logistic.fit(A, y, ALT_FEATURES, groups=g)
        info = {"n_held_out": int(len(errors)), "fraction_right": float((errors <= right_m).mean()),
                "right_m": right_m, "label_right_m": lab_m, "held_out_auc": _auc(p, errors <= right_m),
                "held_out_coverage": float(np.mean(errors <= cls._radius_of(radius, p, raw_radius))),
                "n_alt_rows": len(alt_rows or [])}
        return cls(conf, radius, alt, info)

    @staticmethod
    def _radius_of(spec, p, raw):
        return binned_radius(spec, p, raw)

    def confidence(self, X) -> np.ndarray:
        return self.conf.predict(X)

    def radius(self, confidence, raw_radius=None) -> np.ndarray:
        return binned_radius(self.radius_spec, confidence, raw_radius)

    def alternatives(self, places: list[tuple[np.ndarray, float]], answer_weight: float, answer_conf: float,
                     radius_m: float | None = None) -> list[dict]:
        """``places`` from :func:`place_candidates` -> ``[{"east","north","radius_m","probability"}]``; the
        probabilities of the answer and its alternatives never sum to more than 1."""
        out = []
        for rank, (pos, w) in enumerate(places, start=1):
            if self.alt is not None:
                p = float(self.alt.predict([alt_features(w, answer_weight, rank, answer_conf)])[0])
            else:
                p = (1 - answer_conf) * w / (w + answer_weight + 1e-9)
            out.append({"east": float(pos[0]), "north": float(pos[1]), "probability": p})
        total = sum(a["probability"] for a in out)
        room = max(0.0, 1.0 - float(answer_conf))
        if total > room and total > 0:
            for a in out:
                a["probability"] *= room / total
        r = float(self.radius([0.0])[0]) if radius_m is None else float(radius_m)
        for a in out:
            a["probability"] = round(a["probability"], 4)
            a["radius_m"] = r
        return out

    def to_dict(self) -> dict:
        return {"version": 1, "confidence": self.conf.to_dict(), "radius": self.radius_spec,
                "alternatives": self.alt.to_dict() if self.alt is not None else None, "info": self.info}

    @classmethod
    def from_dict(cls, d: dict | None) -> "ConfidenceModel | None":
        if not d:
            return None
        if d.get("version") != 1:
            raise ValueError(f"confidence model version {d.get('version')!r} is not 1")
        alt = Logistic.from_dict(d["alternatives"]) if d.get("alternatives") else None
        return cls(Logistic.from_dict(d["confidence"]), dict(d["radius"]), alt, d.get("info"))


def _auc(scores, y) -> float | None:
    from campusgps.evaluation.confidence import roc_auc

    a = roc_auc(scores, y)
    return None if a is None else float(a)
