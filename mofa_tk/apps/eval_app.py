"""`mofa eval`: fit every photo of a folder and write an evaluation report (docs/evaluation.md).

    mofa eval FOLDER [FOLDER ...] [--model builtin|PATH ...] [--out DIR] [--limit N] [--landmarks detect|annotation]
                     [--iters N] [--synthetic N] ...

For each photo (recursive search; .jpg .jpeg .png .ppm .pgm .bmp .tif .tiff .webp) and each model (repeat
--model to evaluate several; landmarks are detected once per photo), the fit's 2D landmarks are compared
with the annotation beside the photo (68-point .pts, AFLW2000-3D .mat pt3d_68, 300W-LP .mat pt2d, menpo
.ljson, 5-point .txt; see `mofa_tk.io.annotations`), AFLW2000-3D photos also get the 3D landmark error against
pt3d_68, and the fit time is recorded. A photo that cannot be read, has no detectable face or makes the fit
fail is listed with its reason; the run goes on. `--synthetic N` adds N synthetic faces per model (3D
point-to-point RMSE against the true mesh). Writes to --out (default ./mofa_eval_out): report.md,
results.json, contact_sheet_<model>.png (overlays of the fits: they show the photos, keep them out of
version control) and summary.png (plots of the numbers only; needs matplotlib). Returns 0 when the run completes (individual failures included), 2 on bad arguments or
unreadable model files, 130 when interrupted (the report then holds what was done).
`examples/evaluate.py` calls `main`.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import mofa_tk
from mofa_tk import evaluation as ev
from mofa_tk import landmarks as mlm
from mofa_tk.apps.errors import one_line as _one_line
from mofa_tk.apps.errors import run_reporting_errors
from mofa_tk.apps.options import (ANCHOR_HELP, DENSE_HELP, DEPTH_HELP, PHOTOMETRIC_HELP, REG_HELP,
                                  landmark_term_weights, parse_reg)
from mofa_tk.errors import InputError
from mofa_tk.evaluation.report import fmt_pct, fmt_sec
from mofa_tk.fitting.pipeline import fit
from mofa_tk.io import images as mio
from mofa_tk.io.files import output_folder_problem
from mofa_tk.io.meshes import find_scan
from mofa_tk.progress import progress_bar

DEFAULT_OUT = "mofa_eval_out"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mofa eval",
        description="Fit every photo of a folder with one or more face models and write an evaluation report "
                    "(report.md, results.json, contact_sheet_<model>.png) with landmark NME against the "
                    "annotations beside the photos, 3D errors and fit times.")
    p.add_argument("folder", nargs="*", default=[],
                   help="folder(s) of photos, searched recursively (or image files); optional with --synthetic")
    p.add_argument("--model", action="append", default=None, metavar="builtin|PATH",
                   help="model to fit: 'builtin' or a file/folder for mofa_tk.load_model (SFM .bin, ICT .npz or "
                        "FaceXModel folder, BFM .mat, ...); repeat to evaluate several (default: builtin)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"output folder (default ./{DEFAULT_OUT}; report files in it are replaced)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate only the first N photos (sorted)")
    p.add_argument("--landmarks", choices=("detect", "68", "annotation"), default="detect",
                   help="fit from detected landmarks (default: MediaPipe's 68 iBUG points and its dense mesh; NME "
                        "vs annotation is then a real measurement), '68': detected, the 68 points only, or "
                        "from the 68-point annotation (photos without one are skipped; NME is then the fit's "
                        "residual)")
    p.add_argument("--dense-weight", type=float, default=None, metavar="W", help=DENSE_HELP)
    p.add_argument("--depth-weight", type=float, default=None, metavar="W", help=DEPTH_HELP)
    p.add_argument("--scan-protocol", choices=("landmarks68", "now"), default="landmarks68",
                   help="scan metric for photos with a scan beside them: 'landmarks68' (default: similarity on the "
                        "68 landmarks, rigid ICP, region around the nose tip) or 'now' (NoW's 7 landmarks, crop "
                        "and scaled ICP; docs/evaluation.md)")
    p.add_argument("--iters", type=int, default=None, metavar="N",
                   help="maximum photometric iterations per fit (default: fit's default, 30 for lm)")
    p.add_argument("--optimizer", choices=("lm", "adam"), default="lm", help="photometric optimiser (default lm)")
    p.add_argument("--size", type=int, default=224, metavar="PX", help="crop / render resolution (default 224)")
    p.add_argument("--reg", action="append", default=None, metavar="BLOCK=WEIGHT", help=REG_HELP)
    p.add_argument("--photometric", choices=("appearance", "all"), default="appearance", help=PHOTOMETRIC_HELP)
    p.add_argument("--photometric-anchor", type=float, default=0.0, metavar="W", help=ANCHOR_HELP)
    p.add_argument("--no-recursive", action="store_true", help="do not search sub-folders")
    p.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="also fit N synthetic faces per model (random identity, expression, pose, light) and "
                        "report the 3D point-to-point RMSE in mm (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic faces (default 0)")
    p.add_argument("--tile", type=int, default=160, metavar="PX", help="contact-sheet tile size (default 160)")
    p.add_argument("--columns", type=int, default=12, metavar="N", help="contact-sheet tiles per row (default 12)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch intra-op threads (torch.set_num_threads; default: torch's choice). On a machine "
                        "shared with other jobs, 1 avoids idle-spinning threads (docs/evaluation.md)")
    p.add_argument("--backend", default=None, choices=("auto", "cpu", "cuda", "vulkan"),
                   help="Taichi backend (default: $MOFA_TK_BACKEND, else auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary table")
    return p


class _Fail(Exception):
    pass


def _unique_tags(tags):
    seen, out = {}, []
    for t in tags:
        n = seen.get(t, 0)
        seen[t] = n + 1
        out.append(t if n == 0 else f"{t}_{n + 1}")
    return out


def _print_summary(run, console):

    if run["models"]:
        t = Table(title="mofa eval: 2D landmarks (NME in %)")
        for c in ("model", "images", "fitted", "failed", "NME68 mean", "NME68 median", "NME68 det", "NME5 mean",
                  "fit s"):
            t.add_column(c)
        for m in run["models"]:
            s = m["summary"]
            t.add_row(m["tag"], str(s["images"]), str(s["fitted"]), str(s["failed"] + s["skipped"]),
                      fmt_pct(s["nme"]["mean"]), fmt_pct(s["nme"]["median"]), fmt_pct(s["nme_detector"]["mean"]),
                      fmt_pct(s["nme5"]["mean"]), fmt_sec(s["fit_time"]["mean"]))
        console.print(t)
    syn = run.get("synthetic")
    if syn:
        t = Table(title="mofa eval: synthetic 3D (point-to-point RMSE, mm, rigid alignment)")
        for c in ("model", "samples", "fit mean", "mean face", "landmarks only"):
            t.add_column(c)
        for m in syn["models"]:
            s = m["summary"]
            t.add_row(m["tag"], str(s["samples"]), f"{s['rmse']['mean']:.2f}", f"{s['rmse_mean_face']['mean']:.2f}",
                      f"{s['rmse_landmarks_only']['mean']:.2f}")
        console.print(t)


def run(args, argv) -> int:

    console = Console(stderr=True, quiet=args.quiet)
    if not args.folder and not args.synthetic:
        raise _Fail("give a FOLDER of photos (and/or --synthetic N)")
    if args.limit is not None and args.limit < 1:
        raise _Fail(f"--limit: expected an integer >= 1, got {args.limit}")
    if args.iters is not None and args.iters < 0:
        raise _Fail(f"--iters: expected an integer >= 0, got {args.iters}")
    if args.synthetic < 0:
        raise _Fail(f"--synthetic: expected an integer >= 0, got {args.synthetic}")
    if not 32 <= args.size <= 4096:
        raise _Fail(f"--size: expected 32..4096 pixels, got {args.size}")
    if not 32 <= args.tile <= 1024 or args.columns < 1:
        raise _Fail(f"--tile / --columns: expected 32..1024 px and >= 1, got {args.tile} / {args.columns}")
    out_dir = Path(args.out)
    problem = output_folder_problem(out_dir)
    if problem:
        raise _Fail(f"--out {out_dir}: {problem}")

    images = []
    root = None
    if args.folder:
        for f in args.folder:
            images += [p for p in ev.scan_images(f, recursive=not args.no_recursive) if p not in images]
        if not images:
            raise _Fail(f"no photos ({', '.join(ev.IMAGE_EXTENSIONS)}) found in {' '.join(args.folder)}")
        # image names in the report are relative to the folder given (or to the common parent of several)
        dirs = [Path(f) if Path(f).is_dir() else Path(f).parent for f in args.folder]
        root = Path(os.path.commonpath([os.path.abspath(d) for d in dirs]))
        n_found = len(images)
        if args.limit is not None:
            images = images[:args.limit]
        if args.landmarks in ("detect", "68"):
            mlm._mediapipe()  # LandmarkDetectorUnavailableError (clear message) before any work

    if args.threads is not None:
        if args.threads < 1:
            raise _Fail(f"--threads: expected an integer >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    backend = mofa_tk.init(args.backend)
    specs = args.model or ["builtin"]
    loaded = []
    for spec in specs:
        try:
            loaded.append(ev.load_eval_model(spec))
        except FileNotFoundError as exc:
            raise _Fail(f"--model {spec}: {exc}") from None
    tags = _unique_tags([t for t, _ in loaded])
    models = [(tag, m) for tag, (_, m) in zip(tags, loaded)]

    fit_kwargs = {"size": args.size, "optimizer": args.optimizer}
    reg = parse_reg(args.reg)
    if reg is not None:
        fit_kwargs["reg_weights"] = reg
    fit_kwargs["photometric"] = args.photometric
    fit_kwargs["photometric_anchor"] = args.photometric_anchor
    if args.landmarks == "annotation":
        # annotated jaw points lie on the face's outline (300-W convention): sliding contour (fit's docstring)
        fit_kwargs["contour"] = True
    fit_kwargs.update(landmark_term_weights(args))
    if args.iters is not None:
        fit_kwargs["iters"] = args.iters
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    prefix = "mofa eval" if prog == "mofa" else (f"python {os.path.relpath(sys.argv[0])}" if prog.endswith(".py")
                                                 else "mofa eval")
    command = f"{prefix} {shlex.join(argv)}"
    meta = {"command": command, "date": ev.timestamp(), "mofa_tk": mofa_tk.__version__, "backend": backend,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "landmarks_mode": args.landmarks, "scan_protocol": args.scan_protocol,
            "fit_options": {k: v for k, v in fit_kwargs.items()} | ({} if args.iters is not None
                                                                     else {"iters": "default"}),
            "partial": False}
    if args.folder:
        meta.update(folder=" ".join(str(f) for f in args.folder), images_found=n_found, limit=args.limit)
    run_ = {"meta": meta, "models": [], "synthetic": None}
    per_model = {tag: {"tag": tag, "name": m.name, "source": str(m.source),
                       "points": list(ev.model_landmark_points(m)), "albedo": ev.albedo_note(m), "rows": [],
                       "tiles": [], "captions": []} for tag, m in models}
    status = 0

    def finish_models(final: bool):
        run_["models"] = []
        for tag, _ in models:
            pm = per_model[tag]
            entry = {k: v for k, v in pm.items() if k not in ("tiles", "captions")}
            entry["summary"] = ev.summarize(pm["rows"])
            if final and pm["tiles"]:
                name = f"contact_sheet_{tag}.png"
                out_dir.mkdir(parents=True, exist_ok=True)
                ev.contact_sheet(pm["tiles"], pm["captions"], out_dir / name, columns=args.columns,
                                 title=f"{tag}: fitted render over the photo (green = target landmarks, "
                                       f"red = fitted); caption: # and NME68 / NME5 in %")
                entry["contact_sheet"] = name
            run_["models"].append(entry)
        ev.write_report(run_, out_dir)

    progress = progress_bar("[bold]eval[/] {task.description}", enabled=not args.quiet, remaining=True)
    try:
        with progress:
            if images:
                task = progress.add_task("photos", total=len(images) * len(models))
                for i, path in enumerate(images, 1):
                    try:
                        rel = str(Path(os.path.abspath(path)).relative_to(root))
                    except ValueError:
                        rel = path.name
                    ann, note = ev.find_annotation(path)
                    scan, scan_note = find_scan(path)
                    note = "; ".join(n for n in (note, scan_note) if n) or None
                    base = {"index": i, "image": rel, "annotation_format": ann.format if ann else None,
                            "annotation_note": note}
                    img, reason, start_lm, detected, det_time = None, None, None, None, float("nan")
                    start_mesh = None
                    try:
                        img = mio.load_image(path)
                    except (InputError, OSError) as exc:
                        reason = f"unreadable image: {_one_line(exc)}"
                    skipped = False
                    if img is not None:
                        if args.landmarks in ("detect", "68"):
                            progress.update(task, description=f"{rel} (detect)")
                            t0 = time.perf_counter()
                            try:
                                det, det_mesh = mlm.detect(img.rgb, name=rel, return_mesh=True)
                                det_time = time.perf_counter() - t0
                                start_lm, detected = det, det.astype(np.float64) / img.scale
                                start_mesh = det_mesh if args.landmarks == "detect" else None
                            except mlm.NoFaceFoundError as exc:
                                reason = f"no face found: {_one_line(exc)}"
                            except Exception as exc:  # a detector crash must not end the run
                                reason = f"landmark detection failed: {type(exc).__name__}: {_one_line(exc)}"
                        elif ann is None or ann.n_points != 68:
                            reason, skipped = "no 68-point annotation to fit from (--landmarks annotation)", True
                        else:
                            start_lm = (ann.points * img.scale).astype(np.float32)
                    for tag, model in models:
                        pm = per_model[tag]
                        progress.update(task, description=f"{rel} [{tag}]")
                        if reason is not None:
                            row = {"status": "skipped" if skipped else "failed", "reason": reason}
                        else:
                            row = ev.evaluate_image(fit, img.rgb, model, pm["points"], annotation=ann,
                                                    landmarks=start_lm, detected=detected, scale=img.scale,
                                                    fit_kwargs=fit_kwargs, scan=scan, mesh=start_mesh,
                                                    scan_protocol=args.scan_protocol)
                        row = {**base, **row, "detect_time": det_time,
                               "landmarks_detected": detected, "landmarks_annotation":
                                   (ann.points if ann is not None else None)}
                        res = row.pop("result", None)
                        try:
                            if res is not None:
                                tile = ev.overlay_tile(res, img.rgb, size=args.tile)
                                cap = f"{i} {fmt_pct(row.get('nme'), 1, '')}"
                                if np.isfinite(row.get("nme5", np.nan)) and not np.isfinite(row.get("nme", np.nan)):
                                    cap = f"{i} 5pt {fmt_pct(row.get('nme5'), 1, '')}"
                            else:
                                tile = ev.failure_tile(img.rgb if img is not None else None, size=args.tile)
                                cap = f"{i} failed"
                        except Exception as exc:  # a drawing problem must not end the run
                            tile, cap = ev.failure_tile(None, size=args.tile), f"{i} (no tile)"
                            row["reason"] = (row.get("reason") or "") + f" [tile: {type(exc).__name__}: {exc}]"
                        del res
                        pm["rows"].append(row)
                        pm["tiles"].append(tile)
                        pm["captions"].append(cap)
                        progress.advance(task)
                    finish_models(final=False)  # the report is current after every photo
            if args.synthetic:
                syn_models = []
                for tag, model in models:
                    task = progress.add_task(f"synthetic [{tag}]", total=args.synthetic)
                    region = ev.face_region(model)
                    # a synthetic face's landmarks are its fixed landmark vertices, projected: no sliding jaw
                    rows = ev.evaluate_synthetic(model, args.synthetic, seed=args.seed,
                                                 fit_kwargs={**fit_kwargs, "contour": False},
                                                 region=region, progress=lambda _i, t=task: progress.advance(t))
                    syn_models.append({"tag": tag, "name": model.name, "rows": rows,
                                       "summary": ev.summarize_synthetic(rows), "face_vertices": int(region.sum()),
                                       "n_vertices": int(model.n_vertices)})
                run_["synthetic"] = {
                    "seed": args.seed, "models": syn_models,
                    "description": (
                        f"{args.synthetic} random faces per model (seed {args.seed}; identity N(0,1), 1-3 "
                        f"blendshapes U(0.2, 0.7) or expression N(0, 0.5), yaw +-35, pitch +-15, roll +-10 deg, random "
                        f"SH light), rendered at 320 x 320 with FaceDecoder over a noisy background; landmarks = "
                        f"true projections + N(0, 1 px); fitted with the same model, true camera intrinsics. RMSE "
                        f"= point-to-point after rigid alignment (fitted or mean face onto the true mesh) over the "
                        f"face region (frontal-visible vertices within {ev.FACE_RADIUS_MM:.0f} mm of the nose tip); "
                        f"'landmark stage only' = the same fit stopped before the photometric stage.")}
    except KeyboardInterrupt:
        meta["partial"] = True
        status = 130
        console.print("[yellow]interrupted: writing the report of what was done[/]")
    finish_models(final=True)
    plot = ev.summary_plot(run_, out_dir / "summary.png")
    if not args.quiet:
        _print_summary(run_, console)
    print(f"wrote {(out_dir / 'report.md').resolve()}")
    print(f"wrote {(out_dir / 'results.json').resolve()}")
    for m in run_["models"]:
        if m.get("contact_sheet"):
            print(f"wrote {(out_dir / m['contact_sheet']).resolve()}")
    if plot is not None:
        print(f"wrote {plot.resolve()}")
    return status


def main(argv=None) -> int:
    """Entry point of `mofa eval` (returns the exit status: 0 ok, 2 bad input, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return run_reporting_errors(lambda: run(args, argv), _Fail)


if __name__ == "__main__":
    sys.exit(main())
