"""`mofa fit`: fit a face model to one photo and write mesh.obj, params.json, overlay.png and landmarks.png.

    mofa fit [IMAGE] [--model PATH] [--out DIR] [--landmarks FILE] [--iters N] [--backend NAME] [--seed N]
             [--encoder CKPT] [--reg BLOCK=WEIGHT ...]

With no IMAGE the public-domain astronaut photo that ships with scikit-image (`skimage.data.astronaut()`)
is used, with the built-in model. Bad input (missing file, not an image, too small / too large, unreadable
landmark or model file, no face found) prints one line ``error: ...`` naming the file and the problem and
returns 2; grey and RGBA photos are converted, huge ones are downscaled to a working copy.
`examples/fit_single_image.py` calls `main`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

import mofa_tk
from mofa_tk import landmarks as mlm
from mofa_tk.apps.errors import run_reporting_errors
from mofa_tk.camera import Camera
from mofa_tk.face.uv import model_uvs, unwrap_photo
from mofa_tk.fitting.problem import fit_reg_weights
from mofa_tk.apps.options import (ANCHOR_HELP, DENSE_HELP, DEPTH_HELP, PHOTOMETRIC_HELP, REG_HELP,
                                  landmark_term_weights, parse_reg)
from mofa_tk.evaluation import metrics
from mofa_tk.fitting.pipeline import DENSE_WEIGHT, DEPTH_WEIGHT, fit
from mofa_tk.io import images as mio
from mofa_tk.io.files import output_folder_problem
from mofa_tk.training.autoencoder import load_encoder

OUTPUT_FILES = ("mesh.obj", "mesh_uv.obj", "mesh_uv.mtl", "texture.png", "params.json", "overlay.png",
                "landmarks.png")
TEXTURE_SIZE = 1024  # texels per side of texture.png
DEFAULT_OUT = "mofa_fit_out"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mofa fit",
        description="Fit a 3D morphable face model to one photo (MoFA analysis by synthesis) and write "
                    "mesh.obj (vertex colours), params.json (the semantic code), overlay.png and landmarks.png.")
    p.add_argument("image", nargs="?", default=None,
                   help="photo to fit (default: skimage.data.astronaut(), a public-domain portrait)")
    p.add_argument("--model", default=None, metavar="PATH",
                   help="morphable model file for mofa_tk.load_model (default: the built-in model)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"output folder (default: ./{DEFAULT_OUT}; existing files are replaced, and the command "
                        f"says so)")
    p.add_argument("--landmarks", default=None, metavar="FILE|68",
                   help="68 iBUG landmarks (.pts, .json or .npy, in the photo's pixels) instead of detection; "
                        "'68': detect, but fit MediaPipe's 68 iBUG points only (no dense term; a file named 68: "
                        "./68)")
    p.add_argument("--dense-weight", type=float, default=None, metavar="W", help=DENSE_HELP)
    p.add_argument("--depth-weight", type=float, default=None, metavar="W", help=DEPTH_HELP)
    p.add_argument("--iters", type=int, default=None, metavar="N",
                   help="maximum iterations of the photometric stage (default: 30 for lm, 150 for adam)")
    p.add_argument("--optimizer", choices=("lm", "adam"), default="lm",
                   help="photometric optimiser (default lm: Levenberg-Marquardt, see docs/fitting.md)")
    p.add_argument("--size", type=int, default=224, metavar="PX", help="crop / render resolution (default 224)")
    p.add_argument("--backend", default=None, choices=("auto", "cpu", "cuda", "vulkan"),
                   help="Taichi backend (default: $MOFA_TK_BACKEND, else auto)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of torch / numpy RNGs (the fit itself draws no random numbers; default 0)")
    p.add_argument("--reg", action="append", default=None, metavar="BLOCK=WEIGHT", help=REG_HELP)
    p.add_argument("--photometric", choices=("appearance", "all"), default="appearance", help=PHOTOMETRIC_HELP)
    p.add_argument("--photometric-anchor", type=float, default=0.0, metavar="W", help=ANCHOR_HELP)
    p.add_argument("--encoder", default=None, metavar="CKPT",
                   help="a trained encoder (checkpoint.pt of `mofa train`, or its folder) whose prediction "
                        "initialises the fit; the model defaults to the one it was trained for")
    p.add_argument("--export", action="append", default=None, choices=("glb",),
                   help="also write the UV-textured mesh as mesh.glb (binary glTF, texture embedded; needs trimesh)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary, only the file list")
    return p


# ============================================================================================ drawing
def _disc(img, u, v, r, color):
    H, W = img.shape[:2]
    i0, i1 = max(int(np.floor(v - r)), 0), min(int(np.ceil(v + r)) + 1, H)
    j0, j1 = max(int(np.floor(u - r)), 0), min(int(np.ceil(u + r)) + 1, W)
    if i0 >= i1 or j0 >= j1:
        return
    ii, jj = np.mgrid[i0:i1, j0:j1]
    m = (jj + 0.5 - u) ** 2 + (ii + 0.5 - v) ** 2 <= r * r
    img[i0:i1, j0:j1][m] = color


def _cross(img, u, v, r, color, w):
    for t in np.linspace(-r, r, max(int(4 * r), 3)):
        for a, b in ((u + t, v + t), (u + t, v - t)):
            _disc(img, a, b, w, color)


def _line(img, p, q, color, w):
    n = int(max(abs(q[0] - p[0]), abs(q[1] - p[1])) * 2) + 1
    for t in np.linspace(0, 1, n):
        _disc(img, p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]), w, color)


def face_region(photo: np.ndarray, points: np.ndarray, margin: float = 0.45, min_side: int = 512):
    """Square region of the photo around `points` (their box grown by `margin` of its size on each side,
    clipped to the photo), enlarged (bilinear) so that its side is at least `min_side` pixels.

    Returns (region (h, w, 3) float32, (u0, v0, k)) with region pixel = k * (photo pixel - (u0, v0)).
    """
    H, W = photo.shape[:2]
    p = points[np.isfinite(points).all(1)]
    if not len(p):
        return np.asarray(photo, np.float32), (0.0, 0.0, 1.0)
    lo, hi = p.min(0), p.max(0)
    c, half = (lo + hi) / 2, (hi - lo).max() * (0.5 + margin)
    u0, u1 = int(max(np.floor(c[0] - half), 0)), int(min(np.ceil(c[0] + half), W))
    v0, v1 = int(max(np.floor(c[1] - half), 0)), int(min(np.ceil(c[1] + half), H))
    reg = np.asarray(photo[v0:v1, u0:u1], np.float32)
    k = max(1.0, min_side / max(min(reg.shape[:2]), 1))
    if k > 1.0:
        reg = np.clip(ndimage.zoom(reg, (k, k, 1), order=1, mode="nearest", grid_mode=True), 0, 1)
        k = reg.shape[1] / (u1 - u0)
    return reg.astype(np.float32), (float(u0), float(v0), float(k))


def draw_landmarks(photo: np.ndarray, target: np.ndarray, fitted: np.ndarray, zoom: bool = True) -> np.ndarray:
    """The photo (H, W, 3) float in [0, 1] with the target landmarks (green discs), the fitted ones (red
    crosses) and a yellow line from each target to its fitted point. With `zoom`, only the face region
    (`face_region`), enlarged to at least 512 px, is drawn. Returns a new float32 image."""
    if zoom:
        photo, (u0, v0, k) = face_region(photo, np.concatenate([target, fitted]))
        target = (np.asarray(target, np.float64) - (u0, v0)) * k
        fitted = (np.asarray(fitted, np.float64) - (u0, v0)) * k
    img = np.array(photo, np.float32, copy=True)
    H, W = img.shape[:2]
    pts = np.concatenate([target[np.isfinite(target).all(1)], fitted[np.isfinite(fitted).all(1)]])
    span = float(np.ptp(pts, axis=0).max()) if len(pts) else max(H, W)
    r = max(1.5, span / 90.0)
    w = max(0.6, r / 3.5)
    green, red, yellow = np.array([0.1, 1.0, 0.2]), np.array([1.0, 0.15, 0.1]), np.array([1.0, 0.9, 0.1])
    for t, f in zip(target, fitted):
        if np.isfinite(t).all() and np.isfinite(f).all():
            _line(img, t, f, yellow, w * 0.6)
    for t in target:
        if np.isfinite(t).all():
            _disc(img, t[0], t[1], r, green)
    for f in fitted:
        if np.isfinite(f).all():
            _cross(img, f[0], f[1], r * 1.1, red, w)
    return np.clip(img, 0, 1)


# ============================================================================================ main
class _Fail(Exception):
    pass


def _astronaut():
    try:
        from skimage import data
    except ImportError:
        raise _Fail("no IMAGE given and scikit-image is not installed (its astronaut photo is the default "
                    "input): pass an image path, or pip install scikit-image") from None
    return data.astronaut()


def _encoder_model(config: dict, ckpt):
    """The face model an encoder checkpoint was trained for (its "model" spec and "components")."""
    spec = config.get("model", "builtin")
    if spec in ("builtin", "builtin:default"):
        model = mofa_tk.builtin_model()
    elif spec == "builtin:bfm":
        model = mofa_tk.builtin_model("bfm")
    elif Path(spec).expanduser().exists():
        model = mofa_tk.load_model(spec)
    else:
        raise _Fail(f"--encoder {ckpt}: it was trained with model file {spec!r}, which does not exist here; "
                    f"pass that model with --model")
    if config.get("components"):
        model = model.truncate(*[int(k) for k in config["components"]])
    return model


def run(args) -> int:

    t_all = time.perf_counter()
    t_detect = None
    out_dir = Path(args.out)
    problem = output_folder_problem(out_dir)
    if problem:
        raise _Fail(f"--out {out_dir}: {problem}")
    if args.iters is not None and args.iters < 0:
        raise _Fail(f"--iters: expected an integer >= 0, got {args.iters}")
    if not 32 <= args.size <= 4096:
        raise _Fail(f"--size: expected 32..4096 pixels, got {args.size}")

    # ---- input photo
    if args.image is None:
        notes = []
        rgb = mio.to_rgb(_astronaut(), name="skimage.data.astronaut()", notes=notes)
        img = mio.LoadedImage(rgb=rgb, path=None, original_size=rgb.shape[:2], notes=notes)
        image_name = "skimage.data.astronaut()"
    else:
        img = mio.load_image(args.image)
        image_name = img.path

    torch.manual_seed(args.seed)
    np.random.seed(args.seed % (2 ** 32))
    backend = mofa_tk.init(args.backend)

    # ---- model (and the encoder that initialises the fit)
    encoder = enc_config = None
    if args.encoder is not None:
        encoder, enc_config = load_encoder(args.encoder)
    if args.model is None and encoder is not None:
        model = _encoder_model(enc_config, args.encoder)
    elif args.model is None:
        model = mofa_tk.builtin_model()
    else:
        model = mofa_tk.load_model(args.model)
    if encoder is not None and encoder.code.size != mofa_tk.Code.for_model(model).size:
        raise _Fail(f"--encoder {args.encoder}: its code ({encoder.code}) does not fit the model "
                    f"{model.name} ({mofa_tk.Code.for_model(model)}); it was trained for --model "
                    f"{enc_config.get('model')} with components {enc_config.get('components')}")

    if args.export and "glb" in args.export:
        try:
            import trimesh  # noqa: F401
        except ImportError:
            raise _Fail("--export glb: needs the trimesh package (pip install trimesh)") from None

    # ---- landmarks (file pixels -> working pixels)
    fit_kw = {}
    if args.landmarks is not None and args.landmarks != "68":
        lm_file = mlm.read_landmarks(args.landmarks)
        lm = lm_file * img.scale
        H, W = img.size
        inside = (lm[:, 0] >= -0.5 * W) & (lm[:, 0] <= 1.5 * W) & (lm[:, 1] >= -0.5 * H) & (lm[:, 1] <= 1.5 * H)
        if not inside.all():
            raise _Fail(f"--landmarks {args.landmarks}: {int((~inside).sum())} point(s) lie far outside the "
                        f"{img.original_size[1]} x {img.original_size[0]} image (wrong file for this photo?)")
        lm_source = str(args.landmarks)
        # annotated jaw points lie on the face's outline (300-W convention): sliding contour (fit's docstring)
        fit_kw["contour"] = True
    else:
        t0 = time.perf_counter()
        lm, mesh = mlm.detect(img.rgb, name=image_name, return_mesh=True)
        t_detect = time.perf_counter() - t0
        lm_source = "detected (MediaPipe Face Mesh -> iBUG 68)"
        if args.landmarks != "68":
            fit_kw["mesh_landmarks"] = mesh
            lm_source += " + the 478-point mesh (dense term)"

    fit_kw.update(landmark_term_weights(args))
    reg = parse_reg(args.reg)
    if reg is not None:
        fit_kw["reg_weights"] = reg
    fit_kw["photometric"] = args.photometric
    fit_kw["photometric_anchor"] = args.photometric_anchor
    if encoder is not None:
        # crop the photo the way the training crops were framed, and start from the encoder's code for it
        crop, _, _ = mlm.crop_face(img.rgb, lm, size=args.size, scale=enc_config["crop_scale"])
        fit_kw.update(crop_scale=enc_config["crop_scale"], init_code=encoder.predict_code(crop[None]))
    res = fit(img.rgb, model, landmarks=lm, size=args.size, optimizer=args.optimizer, iters=args.iters,
              progress=not args.quiet, name=image_name, **fit_kw)

    # ---- outputs
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in OUTPUT_FILES}
    replaced = [n for n, p in paths.items() if p.exists()]
    to_file = 1.0 / img.scale
    nme = metrics.landmark_nme(res.landmarks, res.target_landmarks) if np.isfinite(
        res.target_landmarks[[36, 45]]).all() else float("nan")
    header = (f"mofa_tk {mofa_tk.__version__} fit of {image_name}\nmodel {model.name} ({model.source})\n"
              f"model-space vertices in mm (x to the subject's left, y up, z out of the face); "
              f"vertex colours = fitted reflectance (albedo), clipped to [0, 1]")
    mio.write_obj(paths["mesh.obj"], res.verts_model, res.triangles, res.albedo.clamp(0, 1), header=header)
    # the photo's colours in the model's uv layout (hidden parts: the fit's shaded colours)
    uvs, uv_source = model_uvs(model)
    photo_cam = Camera.pinhole(res.camera["image_size"], res.camera["focal"], res.camera["principal"])
    tex, seen = unwrap_photo(res.verts_cam, res.triangles, uvs, img.rgb, photo_cam, fill=res.vertex_colors,
                             size=TEXTURE_SIZE)
    mio.write_png(paths["texture.png"], tex.numpy())
    mio.write_obj(paths["mesh_uv.obj"], res.verts_model, res.triangles,
                  header=f"mofa_tk {mofa_tk.__version__} fit of {image_name}, model-space vertices in mm; texture: "
                         f"the photo's colours in the {uv_source} uv layout", uvs=uvs, texture="texture.png")
    overlay = res.overlay(alpha=0.7)
    mio.write_png(paths["overlay.png"], overlay)
    mio.write_png(paths["landmarks.png"], draw_landmarks(img.rgb, res.target_landmarks, res.landmarks))
    params = {
        "mofa_tk_version": mofa_tk.__version__,
        "image": {"path": img.path, "name": image_name, "size": {"width": img.original_size[1],
                                                                  "height": img.original_size[0]},
                  "working_size": {"width": img.size[1], "height": img.size[0]}, "working_scale": img.scale,
                  "conversions": img.notes},
        "model": {"name": model.name, "source": str(model.source), "n_vertices": model.n_vertices,
                  "n_triangles": model.n_triangles, "code_sizes": {k: int(v.numel()) for k, v in res.blocks.items()}},
        "code": res.params(),
        "code_units": {"rotation": "axis-angle, radians (camera space, OpenGL: x right, y up, z to the viewer)",
                       "translation": "mm, offset from (0, 0, -distance)",
                       "shape/expression/reflectance": "standard deviations of the model's prior",
                       "illumination": "27 SH coefficients, channel-major (9 R, 9 G, 9 B), offset to the "
                                       "white ambient light of irradiance 1"},
        "camera": {"focal_px": [f * to_file for f in res.camera["focal"]],
                   "principal_px": [c * to_file for c in res.camera["principal"]],
                   "distance_mm": res.camera["distance"], "crop_size_px": res.camera["crop_size"],
                   "note": "pinhole camera of the photo implied by the crop (focal 1015 px at 224 in the crop); "
                           "pixels of the image file"},
        "landmarks": {"source": lm_source, "target": res.target_landmarks * to_file,
                      "fitted": res.landmarks * to_file, "nme_inter_ocular": nme,
                      "units": "pixels of the image file, u right, v down, pixel centres at +0.5"},
        "fit": {"optimizer": res.optimizer, "backend": backend, "seed": args.seed,
                "encoder": None if encoder is None else {"checkpoint": str(args.encoder),
                                                         "step": enc_config.get("step"),
                                                         "crop_scale": enc_config["crop_scale"]},
                "init": {k: v["init"] for k, v in res.losses.items() if "init" in v},
                "reg_weights": fit_reg_weights(model, reg), "reg_overrides": reg,
                "photometric": args.photometric, "photometric_anchor": args.photometric_anchor,
                "landmarks": "dense" if "mesh_landmarks" in fit_kw else "68",
                "dense_weight": fit_kw.get("dense_weight", DENSE_WEIGHT) if "mesh_landmarks" in fit_kw else 0.0,
                "depth_weight": fit_kw.get("depth_weight", DEPTH_WEIGHT) if "mesh_landmarks" in fit_kw else 0.0,
                "contour": fit_kw.get("contour", False),
                "losses": {k: {kk: vv for kk, vv in v.items() if kk not in ("history", "times")}
                           for k, v in res.losses.items()},
                "iterations": res.iterations, "converged": res.converged},
        "timings_s": dict(({"detect": t_detect} if t_detect is not None else {}), **res.timings,
                          command=time.perf_counter() - t_all),
        "texture": {"uv_layout": uv_source, "size": TEXTURE_SIZE,
                    "from_photo_fraction": float(seen.float().mean()),
                    "note": "texels whose surface point the photo shows take its colour; hidden ones the fit's "
                            "shaded vertex colours"},
        "files": {n: str(p) for n, p in paths.items()},
    }
    if args.export and "glb" in args.export:
        paths["mesh.glb"] = out_dir / "mesh.glb"
        if paths["mesh.glb"].exists():
            replaced.append("mesh.glb")
        mio.write_glb(paths["mesh.glb"], res.verts_model / 1000.0, res.triangles, uvs, tex.numpy())
        params["files"]["mesh.glb"] = str(paths["mesh.glb"])
    mio.write_json(paths["params.json"], params)

    if replaced:
        print(f"replaced existing file(s) in {out_dir}: {', '.join(replaced)}")
    if not args.quiet:
        iters = ", ".join(f"{k} {v}" for k, v in res.iterations.items())
        print(f"fitted {image_name} ({img.original_size[1]} x {img.original_size[0]}) with {model.name} on "
              f"{backend}: {res.timings['total']:.2f} s, iterations {iters}, "
              f"final loss {res.losses['photometric']['final']:.4g}, landmark NME {nme:.4f}")
        for note in img.notes:
            print(f"note: {note}")
    for n in paths:
        print(f"wrote {paths[n].resolve()}")
    return 0


def main(argv=None) -> int:
    """Entry point of `mofa fit` (returns the exit status: 0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    return run_reporting_errors(lambda: run(args), _Fail)


if __name__ == "__main__":
    sys.exit(main())
