"""Image loading with validation, and writers for fitting results (OBJ with vertex colours, PNG, JSON).

`load_image(path)` is what `mofa fit` uses: every problem with the file comes back as an `ImageFileError`
(an `InputError`) whose message names the file and says what is wrong, so the command line can print one
line instead of a traceback:

* missing file, a folder, an empty file, or a file no image plugin can decode ("not an image");
* an image smaller than `MIN_SIDE` (32) pixels on a side, or larger than `MAX_PIXELS` (100 megapixels:
  the decoded float copy alone would need 1.2 GB);
* unsupported layouts (more than 4 channels, complex or boolean data).

Handled, not refused: grey (H, W) and grey + alpha are repeated to RGB; RGBA is composited over black (the
crop's padding colour) when it has transparent pixels, otherwise the alpha channel is dropped; 16-bit and
float images are scaled to [0, 1]; multi-frame files (GIF, TIFF stacks) use their first frame; images whose
longer side exceeds `WORK_MAX_SIDE` (4096) are downscaled (area-averaged) to a working copy, and the scale
is returned so that results can be mapped back to the file's pixel grid.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image

from ..errors import InputError
from .files import atomic_write, write_text

__all__ = ["IMAGE_EXTENSIONS", "scan_images", "ImageFileError", "LoadedImage", "load_image", "to_rgb", "write_obj", "write_png", "write_json",
           "MIN_SIDE", "MAX_PIXELS", "WORK_MAX_SIDE"]

#: Smallest accepted image side in pixels (a face needs more than this to be fitted).
MIN_SIDE = 32
#: Largest accepted image, in pixels (W x H).
MAX_PIXELS = 100_000_000
#: Longer side above which `load_image` returns a downscaled working copy.
WORK_MAX_SIDE = 4096


class ImageFileError(InputError):
    """An image file is missing, unreadable, or unsuitable; the message names the file and the problem."""


@dataclass
class LoadedImage:
    """An image ready for fitting.

    rgb:           (H, W, 3) float32 in [0, 1], the working copy (downscaled when the file was huge)
    path:          the file (None for arrays)
    original_size: (H0, W0) of the file
    scale:         working pixels per file pixel (1.0 unless downscaled)
    notes:         what was converted (e.g. "grey -> RGB", "RGBA composited over black", "downscaled 1/2")
    """

    rgb: np.ndarray
    path: str | None
    original_size: tuple
    scale: float = 1.0
    notes: list = field(default_factory=list)

    @property
    def size(self) -> tuple:
        """(H, W) of the working copy."""
        return tuple(self.rgb.shape[:2])


def _bad(path, msg):
    raise ImageFileError(f"{path}: {msg}")


#: Pillow modes whose 3 or 4 channels are not RGB(A): decoded by Pillow's conversion to RGB, not read as RGB(A).
_NON_RGB_MODES = ("CMYK", "YCbCr", "LAB", "HSV")


def _header(path: Path):
    """((W, H), Pillow mode) from the file header without decoding the pixels, or (None, None) if unknown."""
    try:
        Image.MAX_IMAGE_PIXELS = None  # we apply our own limit below, with a clear message
        with Image.open(path) as im:
            return im.size, im.mode
    except Exception:
        return None, None


def to_rgb(a: np.ndarray, name: str = "image", notes: list | None = None, *, alpha: str = "composite") -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] from an image array: the one converter behind image files
    (`load_image`) and in-memory images (`landmarks.detect`, `fit`, `crop_face`).

    a: (H, W) grey, (H, W, 1), (H, W, 2) grey + alpha, (H, W, 3) RGB or (H, W, 4) RGBA; uint8, uint16, other
       integer types with values in [0, 255], bool is refused, float must lie in [0, 1].
    alpha: "composite" (image files): dropped when fully opaque, else the colour is composited over black
       (premultiplied); "drop" (arrays passed to the landmark detector and the fit): always dropped.
    `notes` (a list) receives a short description of each conversion. Raises InputError naming `name`.
    """
    notes = [] if notes is None else notes
    a = np.asarray(a)
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise InputError(f"{name}: unsupported pixel dtype {a.dtype} (expected uint8, uint16 or float)")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"{name}: unsupported layout {a.shape} (expected H x W grey, grey+alpha, RGB or RGBA)")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise InputError(f"{name}: empty image of shape {a.shape}")
    if np.issubdtype(a.dtype, np.integer):
        if a.dtype == np.uint16:
            x = a.astype(np.float32) / 65535.0
        else:
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi > 255:
                raise InputError(f"{name}: {a.dtype} pixel values in [{lo}, {hi}] (expected 0..255)")
            x = a.astype(np.float32) / 255.0
    else:
        x = a.astype(np.float32)
        if not np.isfinite(x).all():
            raise InputError(f"{name}: contains {int((~np.isfinite(x)).sum())} NaN/Inf pixel value(s)")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InputError(f"{name}: float pixel values in [{lo:.4g}, {hi:.4g}]; float images must lie in "
                             "[0, 1] (divide uint8 data by 255)")
        x = np.clip(x, 0.0, 1.0)
    C = x.shape[2]
    if C in (2, 4):
        kind = "grey+alpha" if C == 2 else "RGBA"
        a_ch = x[..., -1:]
        x = x[..., :-1]
        if alpha == "drop":
            notes.append(f"{kind}: alpha dropped")
        elif float(a_ch.min()) < 1.0:
            x = x * a_ch
            notes.append(f"{kind} composited over black")
        else:
            notes.append(f"{kind}: opaque alpha dropped")
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
        notes.append("grey -> RGB")
    return np.ascontiguousarray(x, dtype=np.float32)


def _downscale(rgb: np.ndarray, k: int) -> np.ndarray:
    """Area-average by an integer factor k (the last partial rows / columns are dropped)."""
    H, W = (rgb.shape[0] // k) * k, (rgb.shape[1] // k) * k
    return rgb[:H, :W].reshape(H // k, k, W // k, k, 3).mean(axis=(1, 3)).astype(np.float32)


def load_image(path, *, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS,
               work_max_side: int = WORK_MAX_SIDE) -> LoadedImage:
    """Read and validate an image file for fitting.

    path: an image file (anything imageio reads: PNG, JPEG, BMP, TIFF, GIF, WebP, ...).
    min_side / max_pixels: limits (see the module docstring); work_max_side: longer side of the working copy.
    Returns a `LoadedImage` (float32 RGB in [0, 1]). Raises ImageFileError (an InputError) naming the file.
    """
    p = Path(os.fspath(path))
    if not p.exists():
        _bad(p, "no such file")
    if p.is_dir():
        _bad(p, "is a directory, not an image file")
    if p.stat().st_size == 0:
        _bad(p, "empty file (0 bytes), not an image")
    hdr, mode = _header(p)
    if hdr is not None and hdr[0] * hdr[1] > max_pixels:
        _bad(p, f"image too large: {hdr[0]} x {hdr[1]} = {hdr[0] * hdr[1] / 1e6:.0f} megapixels "
                f"(limit {max_pixels / 1e6:.0f}); downscale it first")
    notes = []
    try:
        if mode in _NON_RGB_MODES:
            with Image.open(p) as im:
                a = np.asarray(im.convert("RGB"))
            notes.append(f"converted from {mode} to RGB")
        else:
            try:
                a = iio.imread(p, index=0)
            except (TypeError, ValueError, IndexError):
                a = iio.imread(p)
    except Exception as exc:  # imageio raises many exception types for undecodable files
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _bad(p, f"not a readable image ({msg[:160]})")
    a = np.asarray(a)
    if a.ndim == 4 or (a.ndim == 3 and a.shape[-1] not in (1, 2, 3, 4) and a.shape[0] > 1):
        a = a[0]
        notes.append("first frame of a multi-frame file")
    if a.ndim not in (2, 3) or a.shape[0] == 0 or a.shape[1] == 0:
        _bad(p, f"unsupported image layout {a.shape}")
    H0, W0 = a.shape[:2]
    if min(H0, W0) < min_side:
        _bad(p, f"image too small: {W0} x {H0} pixels (a side below {min_side} px cannot hold a face to fit)")
    if H0 * W0 > max_pixels:
        _bad(p, f"image too large: {W0} x {H0} = {H0 * W0 / 1e6:.0f} megapixels (limit {max_pixels / 1e6:.0f})")
    try:
        rgb = to_rgb(a, name=str(p), notes=notes)
    except InputError as exc:
        raise ImageFileError(str(exc)) from None
    scale = 1.0
    if max(H0, W0) > work_max_side:
        k = int(math.ceil(max(H0, W0) / work_max_side))
        rgb = _downscale(rgb, k)
        scale = 1.0 / k
        notes.append(f"downscaled 1/{k} to {rgb.shape[1]} x {rgb.shape[0]} for fitting")
    return LoadedImage(rgb=rgb, path=str(p), original_size=(H0, W0), scale=scale, notes=notes)


# ============================================================================================ writers
def _u8(image) -> np.ndarray:
    a = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image)
    if a.dtype == np.uint8:
        return a
    if not np.isfinite(a).all():
        raise InputError("image: contains NaN/Inf")
    return np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def write_png(path, image) -> None:
    """Write an (H, W, 3) / (H, W) image, float in [0, 1] (clipped) or uint8, as PNG (atomically)."""
    a = _u8(image)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise InputError(f"image: expected (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    atomic_write(path, lambda tmp: iio.imwrite(tmp, a, extension=".png"))


def write_obj(path, verts, triangles, colors=None, *, header: str | None = None, uvs=None,
              texture: str | None = None) -> None:
    """Write a triangle mesh as Wavefront OBJ.

    verts:     (V, 3) positions (written as given, e.g. mm)
    triangles: (T, 3) 0-based vertex indices (written 1-based, counter-clockwise as given)
    colors:    optional (V, 3) RGB in [0, 1] (clipped), written on the vertex lines as `v x y z r g b`
               (the de-facto extension read by MeshLab, Blender and trimesh)
    header:    optional comment lines (without '#')
    uvs:       optional (V, 2) texture coordinates per vertex in mofa_tk's convention (v along the texture's rows
               from the top, as `texture`); written as `vt u (1 - v)` (OBJ's v points up) with faces `f a/a b/b c/c`
    texture:   with uvs, the file name of the texture image: a material file PATH.mtl (`map_Kd texture`) is
               written beside the OBJ and used by it
    The files are written atomically (`io.files.atomic_write`).
    """
    v = np.asarray(verts.detach().cpu().numpy() if hasattr(verts, "detach") else verts, np.float64)
    t = np.asarray(triangles.detach().cpu().numpy() if hasattr(triangles, "detach") else triangles, np.int64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise InputError(f"verts: expected (V, 3), got {v.shape}")
    if t.ndim != 2 or t.shape[1] != 3:
        raise InputError(f"triangles: expected (T, 3), got {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= len(v)):
        raise InputError(f"triangles: indices must lie in [0, {len(v)}), got [{t.min()}, {t.max()}]")
    if not np.isfinite(v).all():
        raise InputError("verts: contain NaN/Inf")
    lines = []
    if header:
        lines += [f"# {ln}" for ln in header.splitlines()]
    if colors is not None:
        c = np.asarray(colors.detach().cpu().numpy() if hasattr(colors, "detach") else colors, np.float64)
        if c.shape != v.shape:
            raise InputError(f"colors: expected {v.shape}, got {c.shape}")
        c = np.clip(np.nan_to_num(c), 0.0, 1.0)
        vl = ["v %.5f %.5f %.5f %.4f %.4f %.4f" % tuple(row) for row in np.concatenate([v, c], 1)]
    else:
        vl = ["v %.5f %.5f %.5f" % tuple(row) for row in v]
    if uvs is None:
        lines += vl
        lines += ["f %d %d %d" % tuple(row) for row in (t + 1)]
        write_text(path, "\n".join(lines) + "\n", encoding="ascii")
        return
    uv = np.asarray(uvs.detach().cpu().numpy() if hasattr(uvs, "detach") else uvs, np.float64)
    if uv.shape != (len(v), 2) or not np.isfinite(uv).all():
        raise InputError(f"uvs: expected finite ({len(v)}, 2) texture coordinates, got shape {uv.shape}")
    path = Path(path)
    if texture is not None:
        mtl = path.with_suffix(".mtl")
        write_text(mtl, "newmtl face\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd %s\n" % texture,
                   encoding="utf-8")
        lines += [f"mtllib {mtl.name}", "usemtl face"]
    lines += vl
    lines += ["vt %.6f %.6f" % (a, 1.0 - b) for a, b in uv]
    lines += ["f %d/%d %d/%d %d/%d" % (a, a, b, b, c, c) for a, b, c in (t + 1)]
    write_text(path, "\n".join(lines) + "\n", encoding="utf-8")


def write_glb(path, verts, triangles, uvs, texture) -> None:
    """Write a UV-textured mesh as binary glTF (.glb, texture embedded as PNG) with trimesh.

    verts (V, 3) (glTF units are metres: pass mm / 1000), triangles (T, 3), uvs (V, 2) in mofa_tk's convention
    (v along the texture's rows from the top, which is glTF's too), texture (S, S, 3) float in [0, 1].
    Raises ImportError when trimesh is missing. Written atomically (`io.files.atomic_write`).
    """
    import trimesh
    from trimesh.visual.material import PBRMaterial
    from trimesh.visual.texture import TextureVisuals

    v = np.asarray(verts.detach().cpu().numpy() if hasattr(verts, "detach") else verts, np.float64)
    t = np.asarray(triangles.detach().cpu().numpy() if hasattr(triangles, "detach") else triangles, np.int64)
    uv = np.asarray(uvs.detach().cpu().numpy() if hasattr(uvs, "detach") else uvs, np.float64)
    img = Image.fromarray((np.clip(np.asarray(texture), 0, 1) * 255 + 0.5).astype(np.uint8))
    # trimesh's uv convention has v up (as OBJ) and flips it for glTF
    mat = PBRMaterial(baseColorTexture=img, metallicFactor=0.0, roughnessFactor=1.0)
    mesh = trimesh.Trimesh(v, t, process=False,
                           visual=TextureVisuals(uv=np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1), material=mat))
    data = mesh.export(file_type="glb")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


def write_json(path, obj) -> None:
    """Write `obj` (dicts / lists / numbers / arrays / tensors; NaN -> null) as indented JSON (atomically)."""
    write_text(path, json.dumps(_jsonable(obj), indent=2) + "\n")


#: File extensions (lower case) that `scan_images` treats as photos.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")


def scan_images(root, recursive: bool = True) -> list:
    """Photos under `root` (a folder, searched recursively unless `recursive` is False, or one image file).

    Returns a list of `Path`s sorted by their path relative to `root`, whose suffix (case-insensitive) is in `IMAGE_EXTENSIONS`; hidden files
    and folders (names starting with '.') are skipped. Raises FileNotFoundError when `root` does not exist
    and InputError when it is a file with another extension.
    """
    p = Path(os.fspath(root))
    if not p.exists():
        raise FileNotFoundError(f"image folder not found: {p}")
    if p.is_file():
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            raise InputError(f"{p}: not a folder and not an image file (extensions {', '.join(IMAGE_EXTENSIONS)})")
        return [p]
    it = p.rglob("*") if recursive else p.glob("*")
    out = []
    for q in it:
        rel = q.relative_to(p).parts
        if any(part.startswith(".") for part in rel):
            continue
        if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS:
            out.append(q)
    return sorted(out, key=lambda q: q.relative_to(p).as_posix())
