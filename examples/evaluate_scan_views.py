"""Fit rendered views of a real 3D scan and score each fit against the scan (docs/evaluation.md "Scan renders").

    python examples/evaluate_scan_views.py SCAN.obj LANDMARKS [--model builtin|PATH ...] [--scale S]
        [--views YAW,PITCH ...] [--depth-weight W ...] [--size PX] [--out FILE.json]

SCAN: a triangle mesh (.obj / .ply), x to the subject's left, y up, z towards the camera; LANDMARKS: its iBUG
landmarks in 3D, 68, the 51 inner ones or NoW's 7 (.npy, menpo .ljson or MeshLab .pp); --scale: scan units -> mm (1000 for metres).
Each --depth-weight W is one setting of the fit (default: 0 and the fit's default). Prints, per model and
setting, the scan-to-mesh median (mm) of each view's fit, their mean, and the model's mean face.
Example (the FLAME fitting scan in ../shared/data):

    python examples/evaluate_scan_views.py ../shared/data/groundtruth_3d/flame_fitting_scan/scan.obj \\
        ../shared/data/groundtruth_3d/flame_fitting_scan/scan_lmks.npy --scale 1000 \\
        --model builtin --model ../shared/data/models/eos_sfm/sfm_shape_3448.bin
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import mofa_tk
from mofa_tk.errors import InputError, MofaError
from mofa_tk.evaluation.runner import load_eval_model
from mofa_tk.evaluation.scan_views import SCAN_VIEWS, evaluate_scan_views, render_scan_views, scan_face_model
from mofa_tk.fitting.pipeline import DEPTH_WEIGHT
from mofa_tk.io.files import write_text
from mofa_tk.io.meshes import ibug68_landmarks, read_landmarks_3d, read_mesh


def _view(text: str):
    try:
        yaw, pitch = (float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YAW,PITCH in degrees, got {text!r}") from None
    return yaw, pitch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("scan"), p.add_argument("landmarks")
    p.add_argument("--model", action="append", help="builtin or a model file (repeatable; default builtin)")
    p.add_argument("--scale", type=float, default=1.0, help="scan units -> mm (default 1)")
    p.add_argument("--views", type=_view, nargs="+", default=list(SCAN_VIEWS), metavar="YAW,PITCH")
    p.add_argument("--depth-weight", type=float, nargs="+", default=None, metavar="W")
    p.add_argument("--size", type=int, default=512, help="render size, px (default 512)")
    p.add_argument("--out", help="also write the rows as JSON to this file")
    p.add_argument("--backend", default="cpu", choices=("auto", "cpu", "cuda", "vulkan"))
    args = p.parse_args(argv)
    try:
        if not args.scale > 0:
            raise InputError(f"--scale: expected a positive number, got {args.scale}")
        if args.size < 128:
            raise InputError(f"--size: expected at least 128 px (MediaPipe needs a visible face), got {args.size}")
        verts, tris = read_mesh(args.scan)
        lm = ibug68_landmarks(read_landmarks_3d(args.landmarks), args.landmarks) * args.scale
        verts = np.asarray(verts, np.float64) * args.scale
        from mofa_tk.landmarks import detect
        mofa_tk.init(args.backend)
        models = [load_eval_model(spec) for spec in (args.model or ["builtin"])]
        weights = args.depth_weight if args.depth_weight is not None else [0.0, DEPTH_WEIGHT]
        settings = [(f"depth {w:g}", {"depth_weight": w}) for w in weights]
        images = render_scan_views(scan_face_model(verts, tris, lm), args.views, args.size)
        rows = evaluate_scan_views(models, verts, lm, images, settings, detect=detect,
                                   progress=lambda s: print(f"  {s}", file=sys.stderr, flush=True))
    except (MofaError, FileNotFoundError) as exc:   # bad files, no face, MediaPipe missing, ...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'model':20s} {'setting':12s} " + " ".join(f"{y:+.0f}/{q:+.0f}".rjust(8) for y, q in args.views)
          + "     mean  mean face  gain")
    for tag, _ in models:
        for name, _ in settings:
            r = [x for x in rows if x["model"] == tag and x["setting"] == name]
            m, base = float(np.mean([x["median"] for x in r])), r[0]["mean_face"]
            print(f"{tag[:20]:20s} {name:12s} " + " ".join(f"{x['median']:8.3f}" for x in r)
                  + f" {m:8.3f} {base:10.3f} {100 * (1 - m / base):+5.1f}%")
    if args.out:
        write_text(args.out, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
