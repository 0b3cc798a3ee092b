"""Figures for the HTML reports, rendered with matplotlib's Agg backend straight to PNG bytes.

Every function returns PNG bytes (``data_uri`` turns them into an ``<img src>`` for a self-contained page).
Maps are drawn in the localizer's east/north frame, metres, equal aspect, with the training photos as a
grey backdrop so a reader sees where the model had data.
"""
from __future__ import annotations

import base64
import io

import numpy as np

from campusgps.evaluation.metrics import ACC_THRESHOLDS_M, error_cdf

SERIES_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
TRAIN_COLOR = "#c9ccd1"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _png(fig, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def data_uri(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(png).decode("ascii")


def _xlim_for(series: dict[str, np.ndarray]) -> float:
    allv = np.concatenate([np.asarray(v, float)[np.isfinite(v)] for v in series.values()] or [np.zeros(1)])
    if allv.size == 0:
        return 50.0
    return float(max(55.0, min(np.percentile(allv, 98) * 1.1, allv.max())))


def cdf_plot(series: dict[str, np.ndarray], title: str = "Error CDF", styles: dict | None = None,
             size=(5.6, 3.6)) -> bytes:
    """Overlaid cumulative error distributions. ``styles[name]`` may set ``color``/``linestyle``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=size)
    xmax = _xlim_for(series)
    for i, (name, errs) in enumerate(series.items()):
        st = {"color": SERIES_COLORS[i % len(SERIES_COLORS)], "linewidth": 1.8, **((styles or {}).get(name, {}))}
        x, y = error_cdf(errs, max_m=xmax, points=400)
        med = np.nanmedian(errs) if np.isfinite(errs).any() else float("nan")
        ax.plot(x, y, label=f"{name} (median {med:.1f} m)", **st)
    for t in ACC_THRESHOLDS_M:
        if t <= xmax:
            ax.axvline(t, color="#888", linewidth=0.6, linestyle=":")
            ax.text(t, 0.01, f" {t} m", fontsize=7, color="#666", rotation=90, va="bottom")
    ax.set_xlim(0, xmax)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("error (m)")
    ax.set_ylabel("fraction of photos with error ≤ x")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8, frameon=True)
    return _png(fig)


def histogram(errors: np.ndarray, title: str = "Error histogram", size=(5.6, 3.6)) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=size)
    e = np.asarray(errors, float)
    e = e[np.isfinite(e)]
    if e.size:
        hi = _xlim_for({"e": e})
        clipped = np.clip(e, 0, hi)
        ax.hist(clipped, bins=min(40, max(8, e.size // 3)), range=(0, hi), color="#4c78a8", edgecolor="white")
        med = float(np.median(e))
        ax.axvline(med, color="#d62728", linewidth=1.4, label=f"median {med:.1f} m")
        if (e > hi).any():
            ax.text(0.98, 0.80, f"{int((e > hi).sum())} beyond {hi:.0f} m (in last bin)", transform=ax.transAxes,
                    ha="right", va="top", fontsize=8, color="#555")
        ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    ax.set_xlabel("error (m)")
    ax.set_ylabel("photos")
    ax.set_title(title)
    return _png(fig)


def _backdrop(ax, train_en: np.ndarray | None):
    if train_en is not None and len(train_en):
        ax.scatter(train_en[:, 0], train_en[:, 1], s=6, c=TRAIN_COLOR, marker="o", linewidths=0,
                   label="training photos", zorder=1)


def _frame_axes(ax, pts: list[np.ndarray]):
    allp = np.concatenate([p[np.isfinite(p).all(axis=1)] for p in pts if p is not None and len(p)] or
                          [np.zeros((1, 2))])
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    pad = max(5.0, 0.05 * float((hi - lo).max()))
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(lo[1] - pad, hi[1] + pad)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")


def error_map(pos_en: np.ndarray, errors: np.ndarray, train_en: np.ndarray | None = None,
              title: str = "Error by position", size=(5.6, 4.8)) -> bytes:
    """Each test photo at its (true or labelled) position, coloured by its error."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=size)
    _backdrop(ax, train_en)
    e = np.asarray(errors, float)
    ok = np.isfinite(e) & np.isfinite(pos_en).all(axis=1)
    vmax = max(10.0, float(np.percentile(e[ok], 95))) if ok.any() else 10.0
    sc = ax.scatter(pos_en[ok, 0], pos_en[ok, 1], c=np.clip(e[ok], 0, vmax), cmap="plasma_r", vmin=0, vmax=vmax,
                    s=22, edgecolors="#333", linewidths=0.3, zorder=3, label="test photos")
    cb = fig.colorbar(sc, ax=ax, shrink=0.85)
    cb.set_label(f"error (m), clipped at {vmax:.0f}")
    _frame_axes(ax, [pos_en[ok], train_en])
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7, markerscale=1.2, framealpha=0.85)
    return _png(fig)


def displacement_map(from_en: np.ndarray, to_en: np.ndarray, errors: np.ndarray,
                     train_en: np.ndarray | None = None, title: str = "Truth → prediction",
                     size=(5.6, 4.8)) -> bytes:
    """An arrow per test photo from where it was taken to where the model put it, coloured by error."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=size)
    _backdrop(ax, train_en)
    e = np.asarray(errors, float)
    ok = np.isfinite(e) & np.isfinite(from_en).all(axis=1) & np.isfinite(to_en).all(axis=1)
    vmax = max(10.0, float(np.percentile(e[ok], 95))) if ok.any() else 10.0
    if ok.any():
        d = to_en[ok] - from_en[ok]
        q = ax.quiver(from_en[ok, 0], from_en[ok, 1], d[:, 0], d[:, 1], np.clip(e[ok], 0, vmax), cmap="plasma_r",
                      angles="xy", scale_units="xy", scale=1, width=0.004, headwidth=4, headlength=5, zorder=3,
                      clim=(0, vmax))
        ax.scatter(from_en[ok, 0], from_en[ok, 1], s=8, c="#222", zorder=4, label="true position")
        cb = fig.colorbar(q, ax=ax, shrink=0.85)
        cb.set_label(f"error (m), clipped at {vmax:.0f}")
    _frame_axes(ax, [from_en[ok], to_en[ok], train_en])
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.85)
    return _png(fig)


def case_map(train_en: np.ndarray | None, label_en, pred_en, truth_en=None, neighbors_en=None,
             size=(3.0, 2.7)) -> bytes:
    """Small map of one case: training photos (grey), label (blue), prediction (red), truth (green)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=size)
    _backdrop(ax, train_en)
    pts = [train_en] if train_en is not None else []
    if neighbors_en is not None and len(neighbors_en):
        nb = np.asarray(neighbors_en, float)
        ax.scatter(nb[:, 0], nb[:, 1], s=26, facecolors="none", edgecolors="#ff7f0e", linewidths=1.0,
                   zorder=3, label="matched refs")
        pts.append(nb)
    for p, st in ((label_en, dict(c="#1f77b4", marker="o", s=45, label="label")),
                  (pred_en, dict(c="#d62728", marker="X", s=55, label="prediction")),
                  (truth_en, dict(c="#2ca02c", marker="*", s=70, label="truth"))):
        if p is not None and np.isfinite(p).all():
            ax.scatter([p[0]], [p[1]], zorder=5, edgecolors="white", linewidths=0.6, **st)
            pts.append(np.asarray(p, float)[None])
    if label_en is not None and pred_en is not None and np.isfinite(pred_en).all():
        ax.plot([label_en[0], pred_en[0]], [label_en[1], pred_en[1]], color="#555", linewidth=0.8,
                linestyle="--", zorder=4)
    _frame_axes(ax, pts)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("east (m)", fontsize=7)
    ax.set_ylabel("north (m)", fontsize=7)
    return _png(fig, dpi=100)  # no legend: the page's caption explains the colours


def thumbnail(image, max_side: int = 200, quality: int = 80) -> bytes:
    """JPEG bytes of an RGB array / PIL image / JPEG bytes, at most ``max_side`` pixels."""
    from PIL import Image

    if isinstance(image, (bytes, bytearray)):
        im = Image.open(io.BytesIO(image))
        im.load()
    elif isinstance(image, np.ndarray):
        im = Image.fromarray(image)
    else:
        im = image
    im = im.convert("RGB")
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _val(d: dict, k: str) -> float:
    v = d.get(k)
    return float("nan") if v is None else float(v)


def reliability_diagram(table: list[dict], ece: float | None = None, title: str = "Reliability",
                        size=(5.6, 3.9)) -> bytes:
    """Confidence vs how often the answer was right (within 20 m), from metrics.json's ``reliability`` bins:
    bars show the fraction right per bin, dots the bin's mean confidence against it; the diagonal is perfect
    calibration. Each bar is labelled with its number of photos."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=size)
    ax.plot([0, 1], [0, 1], color="#444", linestyle="--", linewidth=1, label="perfect calibration", zorder=3)
    lo = np.array([_val(b, "lo") for b in table])
    hi = np.array([_val(b, "hi") for b in table])
    fr = np.array([_val(b, "fraction_right") for b in table])
    mc = np.array([_val(b, "mean_confidence") for b in table])
    ok = np.isfinite(fr)
    ax.bar(lo[ok], fr[ok], width=(hi - lo)[ok], align="edge", color="#4c78a8", alpha=0.75, edgecolor="white",
           label="fraction right (≤ 20 m)")
    ax.scatter(mc[ok], fr[ok], color="#d62728", zorder=4, s=22, label="bin's mean confidence")
    for b, l, h in zip(table, lo, hi):  # photos per bin, at the foot of each bar
        ax.text((l + h) / 2, 0.015, f"n={b.get('n', 0)}", ha="center", va="bottom", fontsize=7.5, color="#111",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (predicted probability of ≤ 20 m)")
    ax.set_ylabel("fraction of answers within 20 m")
    ax.set_title(title + (f" (ECE {ece:.3f})" if ece is not None else ""))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=7.5, frameon=False)
    return _png(fig)


def risk_coverage_plot(curves: dict[str, list[dict]], title: str = "Risk–coverage", size=(5.6, 3.9)) -> bytes:
    """Error of the most confident answers as more of them are kept: per series (``name -> risk_coverage
    rows``) the median (solid) and P90 (dashed) error against the fraction of answers kept."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=size)
    ymax = 10.0
    for i, (name, rows) in enumerate(curves.items()):
        x = np.array([_val(r, "coverage") for r in rows])
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        for key, style, lab in (("p50_m", "-", "median"), ("p90_m", "--", "P90")):
            y = np.array([_val(r, key) for r in rows])
            if np.isfinite(y).any():
                ax.plot(x, y, linestyle=style, marker="o", markersize=3, color=color, linewidth=1.6,
                        label=f"{name}: {lab} error" if len(curves) > 1 else f"{lab} error")
                ymax = max(ymax, float(np.nanmax(y)))
    ax.axhline(20, color="#888", linewidth=0.7, linestyle=":")
    ax.text(0.01, 20, " 20 m", fontsize=7, color="#666", va="bottom")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, ymax * 1.08)
    ax.set_xlabel("fraction of answers kept (most confident first)")
    ax.set_ylabel("error of the kept answers (m)")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=7.5, frameon=False)
    return _png(fig)
