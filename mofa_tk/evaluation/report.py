"""The report of `mofa eval`: report.md / results.json and the summary plot."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ..io.annotations import ANNOTATION_FORMATS
from ..io.images import write_json
from .landmarks import INNER49, describe_points, nme68

__all__ = ["write_report", "summary_plot", "fmt_pct", "fmt_sec", "timestamp"]


def fmt_pct(x, digits=2, missing="–") -> str:
    return missing if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}"


def fmt_sec(x) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.1f}"


def write_report(run: dict, out_dir) -> dict:
    """Write report.md and results.json for an evaluation run into `out_dir` (created if needed).

    run: {"meta": {command, date, version, backend, landmarks_mode, fit options, folder, ...},
          "models": [{"tag", "name", "source", "points" (iBUG indices), "albedo", "rows" [per-image dicts
          with "index", "image", "annotation_format", "annotation_note", "status", "reason" and the metric
          keys of `evaluate_image`], "contact_sheet" (file name or None)}],
          "synthetic": optional {"models": [{"tag", "name", "rows", "summary", "face_vertices", ...}], ...}}
    NME values are fractions in the JSON and percentages in the Markdown. Returns {"report": Path,
    "json": Path}.
    """

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = run.get("meta", {})
    L = ["# mofa_tk evaluation report", ""]
    if meta.get("command"):
        L += ["Command:", "", "```", meta["command"], "```", ""]
    info = [f"{k}: {meta[k]}" for k in ("date", "mofa_tk", "backend", "torch_threads", "cpu_count", "folder",
                                        "landmarks_mode", "fit_options",
                                        "images_found", "limit") if k in meta]
    L += [f"- {x}" for x in info] + [""]
    models = run.get("models", [])
    if models:
        L += ["## Summary (2D landmarks)", "",
              "NME in % of the annotated outer-eye-corner distance (68-point) or of the eye-centre distance "
              "(5-point); `det` = the detector's landmarks (the fit's input in detect mode) on the same points; "
              "`inner49` = iBUG 17-67 without 60/64, the points every model has; time = fit time per image "
              "(landmark detection excluded).", "",
              "| model | images | fitted | failed (reasons) | NME68 mean / median | NME68 inner49 mean | "
              "NME68 det mean | NME5 mean / median | NME5 det mean | fit time mean s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for m in models:
            s = m["summary"]
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(s["failures"].items())) or "–"
            L.append(f"| {m['tag']} | {s['images']} | {s['fitted']} | {s['failed'] + s['skipped']} ({reasons}) | "
                     f"{fmt_pct(s['nme']['mean'])} / {fmt_pct(s['nme']['median'])} (n={s['nme']['n']}) | "
                     f"{fmt_pct(s['nme_inner']['mean'])} | {fmt_pct(s['nme_detector']['mean'])} | "
                     f"{fmt_pct(s['nme5']['mean'])} / {fmt_pct(s['nme5']['median'])} (n={s['nme5']['n']}) | "
                     f"{fmt_pct(s['nme5_detector']['mean'])} | {fmt_sec(s['fit_time']['mean'])} |")
        L += ["", "Landmarks evaluated and albedo per model:", ""]
        for m in models:
            L.append(f"- **{m['tag']}** ({m['name']}): {describe_points(m['points'])}; {m['albedo']}")
        L += ["", "## By annotation format", "",
              "| model | format | images | fitted | NME68 mean / median | NME68 bbox mean | NME68 det mean | "
              "NME5 mean | 3D err mean (fit / mean face) |", "|---|---|---|---|---|---|---|---|---|"]
        for m in models:
            for fmt, b in m["summary"]["by_format"].items():
                L.append(f"| {m['tag']} | {fmt} | {b['images']} | {b['fitted']} | {fmt_pct(b['nme']['mean'])} / "
                         f"{fmt_pct(b['nme']['median'])} | {fmt_pct(b['nme_bbox']['mean'])} | "
                         f"{fmt_pct(b['nme_detector']['mean'])} | {fmt_pct(b['nme5']['mean'])} | "
                         f"{fmt_pct(b['err3d']['mean'])} / {fmt_pct(b['err3d_mean_face']['mean'])} |")
        L += ["", "Formats: " + "; ".join(f"`{k}` = {v}" for k, v in ANNOTATION_FORMATS.items()) + ".", ""]
        if any(m["summary"]["err3d"]["n"] for m in models):
            L += ["## 3D landmarks (AFLW2000-3D pt3d_68)", "",
                  "Fitted mesh's landmark vertices vs pt3d_68 after similarity alignment, mean error in % of the "
                  "3D outer-eye-corner distance; baseline = the model's mean face (zero code). 'model points' = "
                  "every landmark the model has (alignment and error on those); 'inner49' = iBUG 17-67 without "
                  "60/64 (alignment and error on those, the same points for every model). 'landmark stage' = the "
                  "mesh after the landmark stage, before the photometric stage.", "",
                  "| model | images | model points: fit mean / median | landmark stage | mean face mean / median | "
                  "inner49: fit mean / median | landmark stage | mean face mean / median |",
                  "|---|---|---|---|---|---|---|---|"]
            for m in models:
                s = m["summary"]
                L.append(f"| {m['tag']} | {s['err3d']['n']} | {fmt_pct(s['err3d']['mean'])} / "
                         f"{fmt_pct(s['err3d']['median'])} | {fmt_pct(s['err3d_landmarks']['mean'])} / "
                         f"{fmt_pct(s['err3d_landmarks']['median'])} | {fmt_pct(s['err3d_mean_face']['mean'])} / "
                         f"{fmt_pct(s['err3d_mean_face']['median'])} | {fmt_pct(s['err3d_inner']['mean'])} / "
                         f"{fmt_pct(s['err3d_inner']['median'])} | {fmt_pct(s['err3d_inner_landmarks']['mean'])} / "
                         f"{fmt_pct(s['err3d_inner_landmarks']['median'])} | "
                         f"{fmt_pct(s['err3d_inner_mean_face']['mean'])} / "
                         f"{fmt_pct(s['err3d_inner_mean_face']['median'])} |")
            L.append("")
        if any(m["summary"]["scan_median"]["n"] for m in models):
            now = meta.get("scan_protocol") == "now"
            L += ["## 3D scans (NoW protocol)" if now else "## 3D scans (NoW-style)", "",
                  ("NoW's protocol: scan points in NoW's face crop, distance to the fitted surface after a similarity "
                   "on NoW's 7 landmarks and an ICP refining rotation, translation and scale" if now else
                   "Scan points within 1.1 outer-eye distances of the scan's nose tip, distance to the fitted "
                   "surface after a similarity on the 68 landmarks and rigid ICP") +
                  " (mofa_tk.evaluation.scan); in the scan's units (mm for NoW / REALY scans). Means over the "
                  "photos with a scan.", "",
                  "| model | scans | fit: median / mean / std | landmark stage: median | mean face: median | "
                  "fit median / outer-eye distance |", "|---|---|---|---|---|---|"]
            for m in models:
                s = m["summary"]
                if not s["scan_median"]["n"]:
                    continue
                L.append(f"| {m['tag']} | {s['scan_median']['n']} | {s['scan_median']['mean']:.3g} / "
                         f"{s['scan_mean']['mean']:.3g} / {s['scan_std']['mean']:.3g} | "
                         f"{s['scan_median_landmarks']['mean']:.3g} | {s['scan_median_mean_face']['mean']:.3g} | "
                         f"{fmt_pct(s['scan_median_eyes']['mean'])} |")
            L.append("")
        for m in models:
            L += [f"## Per image: {m['tag']}", ""]
            if m.get("contact_sheet"):
                L += [f"Contact sheet: `{m['contact_sheet']}` (tile numbers = # below).", ""]
            L += ["| # | image | annotation | status | NME68 | NME68 det | NME5 | 3D err (mean face) | fit s |",
                  "|---|---|---|---|---|---|---|---|---|"]
            for r in m["rows"]:
                status = "ok" if r["status"] == "ok" else f"{r['status']}: {r.get('reason') or ''}"
                if r["status"] == "ok" and r.get("reason"):
                    status += f" ({r['reason']})"
                ann = r.get("annotation_format") or "–"
                if r.get("annotation_note"):
                    ann += f" (note: {r['annotation_note']})"
                e3 = "–" if not np.isfinite(r.get("err3d", np.nan)) else \
                    f"{fmt_pct(r['err3d'])} ({fmt_pct(r['err3d_mean_face'])})"
                L.append(f"| {r['index']} | {r['image']} | {ann.replace('|', '/')} | {status.replace('|', '/')} | "
                         f"{fmt_pct(r.get('nme'))} | {fmt_pct(r.get('nme_detector'))} | {fmt_pct(r.get('nme5'))} | {e3} | "
                         f"{fmt_sec(r.get('fit_time'))} |")
            L.append("")
    syn = run.get("synthetic")
    if syn:
        L += ["## Synthetic ground truth (3D)", "", syn.get("description", ""), "",
              "| model | samples | fitted | RMSE fit mean / median mm | RMSE mean face mean / median mm | "
              "RMSE all vertices fit / mean face mm | landmark stage only mm | fit time s |",
              "|---|---|---|---|---|---|---|---|"]
        for m in syn["models"]:
            s = m["summary"]
            L.append(f"| {m['tag']} | {s['samples']} | {s['fitted']} | {s['rmse']['mean']:.2f} / "
                     f"{s['rmse']['median']:.2f} | {s['rmse_mean_face']['mean']:.2f} / "
                     f"{s['rmse_mean_face']['median']:.2f} | {s['rmse_all']['mean']:.2f} / "
                     f"{s['rmse_all_mean_face']['mean']:.2f} | "
                     f"{s['rmse_landmarks_only']['mean']:.2f} | {fmt_sec(s['fit_time']['mean'])} |")
        L += ["", "Face region per model: " + "; ".join(
            f"{m['tag']}: {m['face_vertices']} of {m['n_vertices']} vertices" for m in syn["models"]), ""]
    report = out / "report.md"
    report.write_text("\n".join(L) + "\n", encoding="utf-8")
    js = out / "results.json"
    clean = {"meta": meta,
             "models": [{k: v for k, v in m.items()} for m in models],
             "synthetic": syn}
    for m in clean["models"]:
        m["rows"] = [{k: v for k, v in r.items() if k != "result"} for r in m["rows"]]
    write_json(js, clean)
    return {"report": report, "json": js}


def summary_plot(run, path) -> Path | None:
    """Plot the summary of an evaluation run (no photos in it) as a PNG; needs matplotlib (else None).

    run: the dict given to `write_report`, or the path of a results.json it wrote.
    Panels, for what the run holds: cumulative distribution of the 68-point NME on the inner 49 points
    (fitted: solid per model; the detector's landmarks, the fits' input in detect mode: dotted); AFLW2000-3D 3D landmark error on the inner49 points (fit vs
    mean face) per model; synthetic point-to-point RMSE (fit, landmark stage only, mean face) per model.
    Returns the written path, or None when matplotlib is missing or there is nothing to plot.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if isinstance(run, (str, os.PathLike)):
        run = json.loads(Path(run).read_text(encoding="utf-8"))

    def vals(rows, key):
        return np.array([r[key] for r in rows if r.get("status") == "ok" and r.get(key) is not None
                         and np.isfinite(r[key])], np.float64)

    models = run.get("models") or []
    syn = (run.get("synthetic") or {}).get("models") or []
    panels = []
    if any(len(vals(m["rows"], "nme_inner")) for m in models):
        panels.append("nme")
    if any(len(vals(m["rows"], "err3d_inner")) for m in models):
        panels.append("3d")
    if syn:
        panels.append("syn")
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, kind in zip(axes[0], panels):
        if kind == "nme":
            def cdf(v, **kw):
                v = np.sort(v) * 100
                ax.step(np.r_[0.0, v], np.r_[0.0, np.arange(1, len(v) + 1) / len(v)], where="post", **kw)

            for c, m in zip(colors, models):
                v = vals(m["rows"], "nme_inner")
                if len(v):
                    cdf(v, color=c, label=f"{m['tag']} fit (n={len(v)})")
            d = []
            for r in (models[0]["rows"] if models else []):
                v = r.get("nme_detector_inner")
                if v is None and r.get("landmarks_detected") is not None and r.get("annotation_format") in \
                        ("pts68", "aflw2000_3d", "300w_lp", "ljson68"):  # results.json of an older run
                    v = nme68(np.asarray(r["landmarks_detected"], np.float64),
                              np.asarray(r["landmarks_annotation"], np.float64), INNER49)
                if v is not None and np.isfinite(v):
                    d.append(v)
            d = np.asarray(d)
            if len(d):
                cdf(d, color="k", ls=":", label="detector (the fits' input)")
            ax.set_xlabel("NME, inner 49 points, % of outer-eye-corner distance")
            ax.set_ylabel("fraction of photos with 68-point annotations")
            ax.set_xlim(0, 20)
            ax.set_title("2D landmarks vs annotation")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
        elif kind == "3d":
            tags = [m["tag"] for m in models]
            fit_ = [np.mean(vals(m["rows"], "err3d_inner")) * 100 if len(vals(m["rows"], "err3d_inner")) else np.nan
                    for m in models]
            base = [np.mean(vals(m["rows"], "err3d_inner_mean_face")) * 100
                    if len(vals(m["rows"], "err3d_inner_mean_face")) else np.nan for m in models]
            x = np.arange(len(tags))
            ax.bar(x - 0.2, fit_, 0.4, label="fitted mesh")
            ax.bar(x + 0.2, base, 0.4, label="mean face")
            ax.set_xticks(x, tags, fontsize=8)
            ax.set_ylabel("mean 3D error, % of 3D outer-eye-corner dist.")
            ax.set_title("AFLW2000-3D pt3d_68 (inner 49 points)")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3, axis="y")
        else:
            tags = [m["tag"] for m in syn]
            x = np.arange(len(tags))
            for k, (key, lab) in enumerate((("rmse", "fit"), ("rmse_landmarks_only", "landmark stage only"),
                                            ("rmse_mean_face", "mean face"))):
                ax.bar(x + (k - 1) * 0.27, [m["summary"][key]["mean"] for m in syn], 0.27, label=lab)
            ax.set_xticks(x, tags, fontsize=8)
            ax.set_ylabel("point-to-point RMSE, mm (rigid alignment)")
            ax.set_title("synthetic faces, face region")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def timestamp() -> str:
    """Local time as "YYYY-MM-DD HH:MM:SS" (the date line of the report)."""
    return time.strftime("%Y-%m-%d %H:%M:%S")
