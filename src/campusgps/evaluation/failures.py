"""Why the wrong answers are wrong: every answer more than ``RIGHT_M`` from where the photo was taken gets one
cause, read from the answer's own evidence (the neighbours a retrieval or hybrid model reports with it).

* ``unmapped``: no mapping photo lies within ``RIGHT_M`` of the photo's position: the map has a hole there.
* ``not_found``: a mapping photo is near, but none of the answer's neighbours is: the search (the global
  descriptor's shortlist) missed the place.
* ``not_verified``: a right neighbour is there, but local-feature verification did not confirm any right one
  (hybrid only: dark, blurred or occluded photos, or a view from much further away).
* ``outvoted``: a right neighbour was there (and verified, for the hybrid), but the answer went elsewhere:
  a look-alike place had more evidence.

Positions are the localizer's local frame; "right" uses the neighbours' own positions (their labels). A
hybrid reports its 10 neighbours with the most inliers, so ``not_found`` there means "not among the ten with
the most evidence". Models that report no neighbours (regression) get no breakdown. Out of fold
(``evaluate --cross-fit``), "unmapped" is judged against the full model's references, so a place only the
left-out location group covers counts as ``not_found``.
"""
from __future__ import annotations

import numpy as np

RIGHT_M = 20.0
CAUSES = {
    "unmapped": ("no mapping photo within {r:g} m of where the photo was taken",
                 "photograph that place and add it to the map"),
    "not_found": ("a mapping photo is near, but none of the answer's neighbours",
                  "more mapping photos of the place from more directions; a stronger backbone"),
    "not_verified": ("a right neighbour was found but none was verified by local features",
                     "usually dark, blurred or occluded photos: see the by-condition table"),
    "outvoted": ("a right neighbour was there, but a look-alike place had more evidence",
                 "check the alternatives (alt1/alt2) and the confidence: these answers should be unsure"),
}


def _near(points: np.ndarray, p: np.ndarray, right_m: float) -> np.ndarray:
    return np.hypot(points[:, 0] - p[0], points[:, 1] - p[1]) <= right_m


def failure_causes(pos_en, err, neighbors, ref_en=None, right_m: float = RIGHT_M) -> list[str]:
    """One cause per photo (``CAUSES`` keys; "" for right answers, unreadable photos and unknown positions)."""
    pos_en, err = np.asarray(pos_en, float), np.asarray(err, float)
    refs = None if ref_en is None else np.asarray(ref_en, float).reshape(-1, 2)
    out = []
    for p, e, nbs in zip(pos_en, err, neighbors):
        if not (np.isfinite(e) and e > right_m and np.isfinite(p).all()):
            out.append("")
            continue
        if refs is not None and len(refs) and not _near(refs, p, right_m).any():
            out.append("unmapped")
            continue
        nbs = [d for d in nbs or [] if np.isfinite([d.get("east", np.nan), d.get("north", np.nan)]).all()]
        if not nbs:
            out.append("not_found")
            continue
        right = _near(np.array([[d["east"], d["north"]] for d in nbs], float), p, right_m)
        verifies = any("inliers" in d for d in nbs)
        if not right.any():
            out.append("not_found")
        elif verifies and not any(d.get("verified", False) for d, r in zip(nbs, right) if r):
            out.append("not_verified")
        else:
            out.append("outvoted")
    return out


def failure_summary(causes: list[str], err, conditions=None, against: str = "labels",
                    right_m: float = RIGHT_M, confidence=None) -> dict:
    """metrics.json's ``failures`` block: how many answers are wrong and the count of each cause, overall and
    per condition; with ``confidence``, the median confidence of each cause's answers and of the right ones
    (does the model know when it is wrong?)."""
    causes = np.asarray(causes, dtype=object)
    err = np.asarray(err, float)
    located = np.isfinite(err)
    wrong = located & (err > right_m)

    def block(sel: np.ndarray) -> dict:
        return {"n": int((located & sel).sum()), "n_wrong": int((wrong & sel).sum()),
                **{c: int(((causes == c) & sel).sum()) for c in CAUSES}}

    out = {"right_m": right_m, "against": against, **block(np.ones(len(err), bool))}
    conf = None if confidence is None else np.asarray(confidence, float)
    if conf is not None and np.isfinite(conf).any():
        groups = {"right": located & ~wrong, **{c: causes == c for c in CAUSES}}
        out["median_confidence"] = {k: (float(np.median(conf[g & np.isfinite(conf)]))
                                        if (g & np.isfinite(conf)).any() else None) for k, g in groups.items()}
    if conditions is not None:
        conds = np.asarray(conditions, dtype=object).astype(str)
        out["by_condition"] = {c: block(conds == c) for c in sorted(set(conds) - {""})}
    return out


def compare_fields(metrics: dict) -> dict:
    """compare.csv's columns: answers more than ``RIGHT_M`` off and the count of each cause (None for a model
    without the breakdown, e.g. regression)."""
    f = metrics.get("failures") or {}
    return {"wrong": f.get("n_wrong"), **{c: f.get(c) for c in CAUSES}}


def compare_table(names: list[str], metrics: list[dict]) -> str:
    """compare.html's cause table, one row per model that has the breakdown ("" when none has)."""
    from campusgps.evaluation.report import e, table_html

    rows = [[e(n), str(f["n_wrong"]), *[str(f[c]) for c in CAUSES]]
            for n, f in ((n, m.get("failures")) for n, m in zip(names, metrics)) if f]
    if not rows:
        return ""
    return ("<h2>Why the wrong answers are wrong</h2>" +
            table_html(["model", f"> {RIGHT_M:g} m", *[c.replace("_", " ") for c in CAUSES]], rows) +
            f"<p class=\"note\">Each answer more than {RIGHT_M:g} m off gets one cause, read from the neighbours "
            "the model reported: unmapped (no mapping photo near), not found (none of the neighbours is near), "
            "not verified (a near one was found but local features did not confirm it), outvoted (a look-alike "
            "place had more evidence). Models that report no neighbours (regression) are not listed.</p>")


def failure_section(metrics: dict) -> str:
    """report.html's "Why the wrong answers are wrong" section ("" when metrics have no ``failures``)."""
    from campusgps.evaluation.report import e, fmt_pct, table_html

    f = metrics.get("failures")
    if not f or not f.get("n"):
        return ""
    r = f.get("right_m", RIGHT_M)
    against = "true position" if f.get("against") == "truth" else "label"
    head = (f"<h2>Why the wrong answers are wrong</h2><p class=\"note\">{f['n_wrong']} of {f['n']} answers are more "
            f"than {r:g} m from the {against}. Each gets one cause, read from the evidence the model reported with "
            f"it (its neighbours and whether local features verified them).</p>")
    if not f["n_wrong"]:
        return head
    mc = f.get("median_confidence")
    rows = [[e(c.replace("_", " ")), e(what.format(r=r)), e(helps), str(f[c]), fmt_pct(f[c] / f["n_wrong"])] +
            ([fmt_pct(mc.get(c))] if mc else []) for c, (what, helps) in CAUSES.items()]
    header = ["cause", "what happened", "what helps", "photos", "share of wrong"] + \
        (["median confidence"] if mc else [])
    parts = [head, table_html(header, rows, left_cols=3)]
    if mc:
        parts.append(f"<p class=\"note\">Median confidence of the right answers: {fmt_pct(mc.get('right'))}. "
                     f"A cause whose answers are about as confident is one the model does not notice.</p>")
    by = f.get("by_condition") or {}
    if len(by) > 1:
        crow = [[e(k), str(b["n"]), fmt_pct(b["n_wrong"] / b["n"] if b["n"] else None),
                 *[str(b[c]) for c in CAUSES]] for k, b in by.items()]
        parts.append("<h3>Causes by condition</h3>" +
                     table_html(["condition", "photos", "wrong", *[c.replace("_", " ") for c in CAUSES]], crow))
    return "".join(parts)
