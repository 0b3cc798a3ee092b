"""HTML pages: one self-contained file each (inline CSS, images as base64 data URIs, no scripts, no CDN).

``render_report(EvalResult)`` is evaluate's report.html. ``page()``, ``table_html()`` and the CSS are shared
with compare.html and audit.html so the three look alike.
"""
from __future__ import annotations

import html
import time

import numpy as np

from campusgps.evaluation import plots
from campusgps.evaluation.metrics import ACC_THRESHOLDS_M, PERCENTILES

CSS = """
:root { --fg:#1d2330; --muted:#5b6472; --line:#dde1e7; --bg:#f6f7f9; --card:#fff; --accent:#1f5fbf;
        --good:#1a7f37; --bad:#b42318; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
       color:var(--fg); background:var(--bg); }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 8px; }
p.sub { color: var(--muted); margin: 0 0 18px; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin: 16px 0 6px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px 14px; min-width:150px;
        flex: 1 1 150px; }
.card .v { font-size: 22px; font-weight: 650; }
.card .k { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; background: var(--card); border:1px solid var(--line); margin: 6px 0 10px;
        font-variant-numeric: tabular-nums; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { background: #eef1f5; font-weight: 600; font-size: 12.5px; }
td:first-child, th:first-child { text-align: left; }
td.l, th.l { text-align: left; white-space: normal; }
tr:hover td { background: #f8fafc; }
.figs { display:flex; flex-wrap:wrap; gap:14px; }
.figs figure { margin:0; background:var(--card); border:1px solid var(--line); border-radius:8px; padding:8px;
               flex: 1 1 520px; max-width: 100%; }
.figs img { width:100%; height:auto; display:block; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; }
.gallery { display:grid; grid-template-columns: repeat(auto-fill, minmax(350px, 1fr)); gap: 12px; }
.case { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px; }
.case .pair { display:flex; gap:8px; }
.case .pair div { flex:1; min-width:0; }
.case img { width:100%; height:auto; border-radius:4px; display:block; background:#eee; }
.case .cap { font-size:12px; color:var(--muted); margin-top:3px; }
.case .meta { font-size:12.5px; margin-top:6px; }
.case .meta b.bad { color: var(--bad); }
.none { display:flex; align-items:center; justify-content:center; height:100%; min-height:90px; color:var(--muted);
        background:#f0f1f3; border-radius:4px; font-size:12px; text-align:center; padding:6px; }
.note { color: var(--muted); font-size: 12.5px; }
.bad { color: var(--bad); font-weight: 600; }
.good { color: var(--good); }
code { background:#eef1f5; padding:1px 4px; border-radius:3px; font-size: 12.5px; }
.scroll { overflow-x: auto; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""

e = html.escape


def page(title: str, body: str, subtitle: str = "") -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>"
            f"<h1>{e(title)}</h1>" + (f"<p class=\"sub\">{subtitle}</p>" if subtitle else "") + body +
            f"<footer>campusgps · generated {stamp} · self-contained page (no network needed)</footer>"
            f"</main></body></html>\n")


def fmt_m(v, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{float(v):,.{nd}f} m"


def fmt_pct(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{100 * float(v):.1f} %"


def fmt_num(v, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{float(v):.{nd}f}"


def table_html(header: list[str], rows: list[list[str]], left_cols: int = 1, cls: str = "") -> str:
    """Rows are already-escaped HTML cell contents."""
    th = "".join(f"<th{' class=l' if i < left_cols else ''}>{h}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{' class=l' if i < left_cols else ''}>{c}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<div class=\"scroll\"><table class=\"{cls}\"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>"


def img_tag(png_or_jpeg: bytes | None, alt: str, mime: str = "image/png", width: int | None = None) -> str:
    if not png_or_jpeg:
        return f"<div class=\"none\">{e(alt)}: not available</div>"
    w = f" width=\"{width}\"" if width else ""
    return f"<img src=\"{plots.data_uri(png_or_jpeg, mime)}\" alt=\"{e(alt)}\"{w}>"


def figure(png: bytes, alt: str, caption: str) -> str:
    return f"<figure>{img_tag(png, alt)}<figcaption>{caption}</figcaption></figure>"


def _interval_note(iv: dict | None) -> str:
    """The median's bootstrap interval under its card ("" for metrics written before it existed)."""
    if not iv:
        return ""
    tip = "bootstrap over these photos: another draw of as many photos could give any median in this range"
    return (f"<div class=\"k\" style=\"font-weight:normal\" title=\"{tip}\">"
            f"{iv['level']:.0%} interval {iv['lo_m']:.1f}–{iv['hi_m']:.1f} m</div>")


def _reference_labels_note(rl: dict | None) -> str:
    """One sentence on the mapping labels' own error (metrics.json ``reference_labels``; "" when unknown)."""
    if not rl:
        return ""
    vt = rl.get("vs_truth")
    if vt:
        return (f"The mapping photos' labels, the positions this model learned and answers from, are themselves "
                f"{vt['median_m']:.1f} m from the truth at the median ({vt['n']} photos, P90 {vt['p90_m']:.1f} m): an "
                f"answer built from them rarely gets much closer than that; better mapping GPS lowers this floor.")
    if "claimed_accuracy_median_m" in rl:
        return (f"The phones reported the mapping photos' GPS accurate to {rl['claimed_accuracy_median_m']:.1f} m at "
                f"the median ({rl['n_claimed']} of {rl['n']} photos say): answers built from those positions share "
                f"that error.")
    return ""


def cards(items: list[tuple[str, str]]) -> str:
    return "<div class=\"cards\">" + "".join(
        f"<div class=\"card\"><div class=\"v\">{v}</div><div class=\"k\">{k}</div></div>" for k, v in items) + "</div>"


SUMMARY_ROWS = ([("n", "photos located", "n")] + [("mean_m", "mean error", "m"), ("median_m", "median error", "m")] +
                [(f"p{p}_m", f"P{p} error", "m") for p in PERCENTILES] + [("max_m", "max error", "m")] +
                [(f"acc_{t}m", f"within {t} m", "pct") for t in ACC_THRESHOLDS_M])


def _fmt(kind, v):
    return fmt_m(v) if kind == "m" else fmt_pct(v) if kind == "pct" else ("–" if v is None else str(v))


def summary_table(metrics: dict) -> str:
    cols = [("vs labels (EXIF GPS)", metrics)]
    if "vs_truth" in metrics:
        cols.append(("vs true position", metrics["vs_truth"]))
    base = metrics.get("baseline", {})
    bcol = base.get("vs_truth") or base.get("vs_labels")
    if bcol:
        cols.append(("mean-position baseline" + (" (vs truth)" if "vs_truth" in base else ""), bcol))
    rows = [[e(label)] + [_fmt(kind, c.get(key)) for _, c in cols] for key, label, kind in SUMMARY_ROWS]
    cov = [metrics.get("radius_coverage", {})] + ([metrics["vs_truth"].get("radius_coverage", {})]
                                                  if "vs_truth" in metrics else [])
    rows.append(["truth inside radius_m"] + [fmt_pct(c.get("coverage")) for c in cov] +
                ["–"] * (len(cols) - len(cov)))
    rows.append(["median radius_m"] + [fmt_m(c.get("median_radius_m")) for c in cov] + ["–"] * (len(cols) - len(cov)))
    return table_html(["metric"] + [e(n) for n, _ in cols], rows)


def group_table(groups: dict, has_truth: bool) -> str:
    hdr = ["group", "n", "median", "P90", "within 20 m"]
    if has_truth:
        hdr += ["median vs truth", "P90 vs truth", "within 20 m vs truth"]
    hdr += ["truth in radius" if has_truth else "label in radius"]
    rows = []
    for name, d in groups.items():
        b = d.get("bounds_m")
        r = [e(name) + (f" <span class=note>(E {b[0]:.0f}…{b[1]:.0f}, N {b[2]:.0f}…{b[3]:.0f} m)</span>" if b else ""),
             str(d.get("n")), fmt_m(d.get("median_m")), fmt_m(d.get("p90_m")), fmt_pct(d.get("acc_20m"))]
        if has_truth:
            t = d.get("vs_truth", {})
            r += [fmt_m(t.get("median_m")), fmt_m(t.get("p90_m")), fmt_pct(t.get("acc_20m"))]
        r.append(fmt_pct(d.get("vs_truth", {}).get("radius_coverage") if has_truth else d.get("radius_coverage")))
        rows.append(r)
    return table_html(hdr, rows)


def robustness_table(rob: dict) -> str:
    rows = []
    for r in rob["rows"]:
        ratio = r.get("ratio")
        cls = "bad" if ratio is not None and ratio >= 1.5 else ("good" if ratio is not None and ratio <= 1.1 else "")
        rows.append([e(r["name"]), e(r["description"]), fmt_m(r.get("median_m")), fmt_m(r.get("mean_m")),
                     fmt_m(r.get("p90_m")), fmt_pct(r.get("acc_20m")),
                     f"<span class=\"{cls}\">{'–' if ratio is None else f'{ratio:.2f}×'}</span>"])
    return table_html(["perturbation", "what", "median", "mean", "P90", "within 20 m", "median / clean"], rows,
                      left_cols=2)


def _gallery(res, worst: int) -> tuple[str, int]:
    t = res.table
    key = "error_vs_truth_m" if res.has_truth else "error_m"
    err = t[key].to_numpy(float)
    order = [i for i in np.argsort(-np.nan_to_num(err, nan=-1.0)) if np.isfinite(err[i])][:worst]
    refs = res.refs
    cases = []
    for i in order:
        try:
            photo = plots.thumbnail(res.dataset.load_image(int(i), max_side=400))
        except Exception:
            photo = None
        nb = res.neighbors[i] if i < len(res.neighbors) else []
        ref_img, ref_cap = None, ""
        pos_cols = ("truth_east_m", "truth_north_m") if res.has_truth else ("label_east_m", "label_north_m")
        here = np.array([t[pos_cols[0]].iat[i], t[pos_cols[1]].iat[i]], float)
        if nb and refs is not None and nb[0].get("id") not in (None, ""):
            ref_img = refs.thumbnail(nb[0]["id"])
            if "east" in nb[0] and np.isfinite(here).all():
                d = float(np.hypot(nb[0]["east"] - here[0], nb[0]["north"] - here[1]))
                ref_cap = f"model's top match, taken {d:,.0f} m away"
            else:
                ref_cap = "model's top match"
        if ref_img is None and refs is not None and refs.has_images():
            pe = np.array([t["pred_east_m"].iat[i], t["pred_north_m"].iat[i]], float)
            j = refs.nearest(pe, 1)
            if j:
                ref_img = refs.thumbnail(refs.ids[j[0]])
                d = float(np.hypot(*(refs.en[j[0]] - here))) if np.isfinite(here).all() else float("nan")
                ref_cap = f"training photo nearest the prediction, {d:,.0f} m from the truth"
        tone = "bad" if err[i] > 20 else ""
        meta = [f"<b class=\"{tone}\">{fmt_m(err[i])}</b> off" + (" (vs truth)" if res.has_truth else " (vs label)")]
        if res.has_truth:
            meta.append(f"{fmt_m(t['error_m'].iat[i])} from its label")
        meta.append(f"radius {fmt_m(t['radius_m'].iat[i])}")
        for c in ("condition", "area"):
            if str(t[c].iat[i]):
                meta.append(f"{c} {e(str(t[c].iat[i]))}")
        flags = str(t["flags"].iat[i])
        if flags:
            meta.append(f"flags {e(flags)}")
        name = str(t["file"].iat[i]).replace("\\", "/").rsplit("/", 1)[-1]
        cases.append(
            "<div class=\"case\"><div class=\"pair\">"
            f"<div>{img_tag(photo, 'photo', 'image/jpeg')}<div class=\"cap\">query: {e(name)}</div></div>"
            f"<div>{img_tag(ref_img, 'confused with', 'image/jpeg')}<div class=\"cap\">{e(ref_cap) or 'no reference photo known'}</div></div>"
            f"</div><div class=\"meta\">{' · '.join(meta)}</div></div>")
    return "<div class=\"gallery\">" + "".join(cases) + "</div>", len(order)


def _cross_fit_note(m: dict) -> list[str]:
    """The report's sentence on out-of-fold scores (``evaluate --cross-fit``), or nothing."""
    cf = m.get("cross_fit")
    if not cf:
        return []
    return [f"<b>Out of fold</b>: every photo was scored by the method refitted {cf['folds']} times, each time "
            f"without that photo's location group ({cf['location_groups']} groups, {cf['group_radius_m']:g} m); "
            f"the model file itself was not used for these scores."]


def render_report(res, model_name: str = "model", worst: int = 12) -> str:
    m = res.metrics
    t = res.table
    ht = res.has_truth
    main = m.get("vs_truth", m) if ht else m
    against = "true position" if ht else "label"
    refs = res.refs
    train_en = refs.en if refs is not None else None

    base = m["baseline"]
    base_med = (base.get("vs_truth") or base["vs_labels"]).get("median_m")
    parts = [cards([
        (f"median error vs {against}", fmt_m(main.get("median_m")) + _interval_note(main.get("median_interval"))),
        (f"P90 error vs {against}", fmt_m(main.get("p90_m"))),
        ("within 20 m", fmt_pct(main.get("acc_20m"))),
        ("mean-position baseline median", fmt_m(base_med)),
        ("truth inside radius_m", fmt_pct(main.get("radius_coverage", {}).get("coverage"))),
        ("seconds per photo", fmt_num(m.get("seconds_per_image"), 3)),
    ])]
    notes = [f"Baseline: {e(base['source'])}."]
    notes[:0] = _cross_fit_note(m)
    if ht:
        ln = m["vs_truth"].get("label_noise", {})
        notes.append(f"The labels themselves (phone GPS) are {fmt_m(ln.get('median_m'))} from the truth at the median, "
                     f"so errors vs labels include that noise.")
        if m["vs_truth"].get("unmatched"):
            notes.append(f"{m['vs_truth']['unmatched']} photos had no row in the truth CSV.")
    rl_note = _reference_labels_note(m.get("reference_labels"))
    if rl_note:
        notes.append(e(rl_note))
    if m.get("n_unreadable"):
        notes.append(f"<span class=bad>{m['n_unreadable']} photos could not be read</span> and are not in the statistics.")
    parts.append("<h2>Summary</h2>" + summary_table(m) + "<p class=\"note\">" + " ".join(notes) + "</p>")

    # --- distribution ---
    series = {}
    if ht:
        series["vs truth"] = t["error_vs_truth_m"].to_numpy(float)
    series["vs labels"] = t["error_m"].to_numpy(float)
    styles = {}
    pos_cols = ("truth_east_m", "truth_north_m") if ht else ("label_east_m", "label_north_m")
    pos_en = t[list(pos_cols)].to_numpy(float)
    center = np.array([0.0, 0.0])
    if refs is not None and len(refs.en):
        center = refs.en.mean(axis=0)
        series["mean-position baseline"] = np.hypot(*(pos_en - center).T)
        styles["mean-position baseline"] = {"linestyle": "--", "color": "#7f7f7f"}
    err_main = series["vs truth"] if ht else series["vs labels"]
    parts.append("<h2>Error distribution</h2><div class=\"figs\">" +
                 figure(plots.cdf_plot(series, "Error CDF", styles), "error CDF",
                        "Fraction of photos located within x metres. Dotted lines: 5, 10, 20, 50 m.") +
                 figure(plots.histogram(err_main, f"Error vs {against}"), "error histogram",
                        f"How many photos fall at each error (vs {against}).") + "</div>")

    # --- maps ---
    pred_en = t[["pred_east_m", "pred_north_m"]].to_numpy(float)
    parts.append("<h2>Where the errors are</h2><div class=\"figs\">" +
                 figure(plots.error_map(pos_en, err_main, train_en, f"Error by {'true' if ht else 'labelled'} position"),
                        "error map", "Each photo at the position it was taken, coloured by its error; grey: "
                        "training photos. Local frame, metres east/north of the dataset origin.") +
                 figure(plots.displacement_map(pos_en, pred_en, err_main, train_en,
                                               f"{'Truth' if ht else 'Label'} → prediction"),
                        "displacement map", "Each arrow runs from where a photo was taken to where the model put "
                                            "it. Long arrows that share a direction point at a confusing place.")
                 + "</div>")

    # --- confidence (issue 12) ---
    from campusgps.evaluation.confidence_section import confidence_section

    parts.append(confidence_section(m, ht))

    # --- why the wrong answers are wrong (issue 13) ---
    from campusgps.evaluation.failures import failure_section

    parts.append(failure_section(m))

    # --- breakdowns ---
    if m.get("by_condition"):
        parts.append("<h2>By condition</h2>" + group_table(m["by_condition"], ht))
    if m.get("by_area"):
        parts.append(f"<h2>By area</h2><p class=\"note\">Areas: {e(m.get('area_kind', ''))}.</p>" +
                     group_table(m["by_area"], ht))

    # --- robustness ---
    if m.get("robustness"):
        rob = m["robustness"]
        parts.append(f"<h2>Robustness</h2><p class=\"note\">The same {rob['n']} photos (a seeded subset), degraded "
                     f"and located again; errors vs {'true position' if rob.get('against') == 'truth' else 'label'}. "
                     f"The last column is the median error relative to the clean photos (red: 1.5× or worse).</p>"
                     + robustness_table(rob))

    # --- gallery ---
    gal, k = _gallery(res, worst)
    if k:
        parts.append(f"<h2>Worst {k} predictions</h2><p class=\"note\">Left: the photo. Right: the reference it was "
                     f"confused with (the model's top match when it reports one, else the training photo nearest to "
                     f"where it put the photo).</p>" + gal)

    failed = t[t["read_error"] != ""]
    if len(failed):
        rows = [[e(str(f)), e(str(r))] for f, r in zip(failed["file"].head(50), failed["read_error"].head(50))]
        parts.append("<h2>Unreadable photos</h2>" + table_html(["file", "reason"], rows, left_cols=2))

    sub = (f"model <code>{e(model_name)}</code> ({e(str(m.get('method')))}) · dataset <code>{e(m['dataset'])}</code> · "
           f"split <code>{e(m['split'])}</code> · {m['n_images']} photos")
    return page(f"campusgps evaluation: {model_name}", "".join(parts), sub)
