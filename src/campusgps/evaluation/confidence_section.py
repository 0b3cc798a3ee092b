"""How report.html and compare show a model's confidence (the ``confidence`` block of metrics.json).

``confidence_section(metrics, has_truth)`` is report.html's "Confidence" section: headline cards, the
reliability diagram, the risk–coverage curve and the radius coverage per confidence third.
``compare_fields(metrics, has_truth)`` are the confidence columns of compare.csv / compare.html.
Both read the block measured against the truth when there is one, else against the labels.
"""
from __future__ import annotations

from campusgps.evaluation import plots

COMPARE_FIELDS = ["confidence_auc", "confidence_ece", "top3_recall", "radius_auc_wrong"]


def confidence_block(metrics: dict, has_truth: bool) -> dict | None:
    """The block against the truth when known, else against the labels; None for older metrics.json."""
    if has_truth and "confidence" in (metrics.get("vs_truth") or {}):
        return metrics["vs_truth"]["confidence"]
    return metrics.get("confidence")


def compare_fields(metrics: dict, has_truth: bool) -> dict:
    """AUC, ECE, top-3 recall and the radius's AUC for "wrong" (None where the model gives no confidence)."""
    b = confidence_block(metrics, has_truth) or {}
    if not b.get("available"):
        return {k: None for k in COMPARE_FIELDS}
    return {"confidence_auc": b.get("auc"), "confidence_ece": b.get("ece"), "top3_recall": b.get("top3_recall"),
            "radius_auc_wrong": (b.get("radius") or {}).get("auc_wrong")}


def _thirds_table(radius: dict, against: str) -> str:
    from campusgps.evaluation.report import fmt_m, fmt_num, fmt_pct, table_html

    rows = [[t["third"], str(t["n"]), f"{fmt_num(t.get('confidence_lo'))}–{fmt_num(t.get('confidence_hi'))}",
             fmt_pct(t.get("coverage")), fmt_m(t.get("median_radius_m"))] for t in radius.get("coverage_by_third", [])]
    rows.append(["all", str(radius.get("n", 0)), "", fmt_pct(radius.get("coverage")),
                 fmt_m(radius.get("median_radius_m"))])
    return table_html(["confidence third", "n", "confidence", f"{against} inside radius_m", "median radius"], rows)


def confidence_section(metrics: dict, has_truth: bool) -> str:
    """report.html's Confidence section ("" for metrics written before confidence existed)."""
    from campusgps.evaluation.report import cards, figure, fmt_m, fmt_num, fmt_pct

    b = confidence_block(metrics, has_truth)
    if b is None:
        return ""
    against = "true position" if b.get("against") == "truth" else "label"
    if not b.get("available"):
        return ("<h2>Confidence</h2><p class=\"note\">This model gives no confidence (it was trained before "
                "campusgps had a confidence model); retrain it to see how far its answers can be trusted.</p>")
    hc = b.get("high_confidence") or {}
    radius = b.get("radius") or {}
    head = cards([
        ("confidence AUC (≤ 20 m vs not)", fmt_num(b.get("auc"))),
        ("calibration error (ECE, 5 bins)", fmt_num(b.get("ece"), 3)),
        (f"answers with confidence ≥ {hc.get('threshold', 0.8):g}", fmt_pct(hc.get("share"))),
        ("…of which right (≤ 20 m)", fmt_pct(hc.get("fraction_right"))),
        ("answer or an alternative ≤ 20 m", fmt_pct(b.get("top3_recall"))),
        ("radius AUC for wrong answers", fmt_num(radius.get("auc_wrong"))),
    ])
    note = (f"<p class=\"note\">Confidence is the model's probability that a photo was taken within "
            f"{b.get('right_m', 20):g} m of its answer, measured here against the {against} on {b.get('n')} photos "
            f"(mean confidence {fmt_pct(b.get('mean_confidence'))}, right {fmt_pct(b.get('fraction_right'))}). "
            f"AUC 0.5 is a coin, 1 a perfect ranking. Median radius {fmt_m(radius.get('median_radius_m'))} for a "
            f"median error of {fmt_m(radius.get('median_error_m'))}.</p>")
    figs = ("<div class=\"figs\">" +
            figure(plots.reliability_diagram(b.get("reliability") or [], b.get("ece")), "reliability diagram",
                   "Answers grouped by confidence (5 bins): how often each group was right. On the diagonal, "
                   "a confidence of 80 % is right 80 % of the time.") +
            figure(plots.risk_coverage_plot({"model": b.get("risk_coverage") or []}), "risk-coverage curve",
                   "Keep only the most confident answers: their median and P90 error as more are kept. A curve "
                   "that rises to the right means confidence ranks the errors.") + "</div>")
    return ("<h2>Confidence</h2>" + head + note + figs + "<h3>Radius coverage by confidence third</h3>" +
            _thirds_table(radius, "truth" if b.get("against") == "truth" else "label"))
