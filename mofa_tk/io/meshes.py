"""Reading 3D scans: triangle meshes from OBJ and PLY files, and their 3D landmarks (menpo LJSON or .npy)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelFormatError
from .ljson import read_ljson_groups

__all__ = ["read_mesh", "parse_obj", "read_landmarks_3d", "ibug68_landmarks", "find_scan", "Scan", "MESH_EXTENSIONS",
           "NOW7"]

#: NoW's 7 landmarks (in the order of its .pp files) as iBUG indices: outer and inner eye corners, nose bottom,
#: mouth corners.
NOW7 = (36, 39, 42, 45, 33, 48, 54)

#: Scan file extensions `read_mesh` reads.
MESH_EXTENSIONS = (".obj", ".ply")

def _fail(path, msg):
    raise ModelFormatError(f"{path}: {msg}")


def parse_obj(path: Path, want_faces: bool = True):
    """Minimal OBJ reader: 'v x y z' lines -> (V, 3) float64, 'f' lines (v, v/vt, v//vn, v/vt/vn; negative =
    relative) -> list of 0-based polygons, fan-triangulated to (T, 3). Other lines are ignored."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ModelFormatError(f"{path}: cannot read OBJ: {e}") from e
    verts, tris = [], []
    nv = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("v "):
            parts = line.split()
            if len(parts) < 4:
                _fail(path, f"line {lineno}: vertex needs 3 coordinates: {line.strip()!r}")
            try:
                verts.append((float(parts[1]), float(parts[2]), float(parts[3])))
            except ValueError:
                _fail(path, f"line {lineno}: bad vertex coordinates: {line.strip()!r}")
            nv += 1
        elif want_faces and line.startswith("f "):
            toks = line.split()[1:]
            if len(toks) < 3:
                _fail(path, f"line {lineno}: a face needs at least 3 vertices: {line.strip()!r}")
            idx = []
            for t in toks:
                s = t.split("/", 1)[0]
                try:
                    i = int(s)
                except ValueError:
                    _fail(path, f"line {lineno}: bad face index {t!r}")
                if i == 0:
                    _fail(path, f"line {lineno}: OBJ indices are 1-based; 0 is invalid")
                idx.append(i - 1 if i > 0 else nv + i)
            for k in range(1, len(idx) - 1):  # quads (a, b, c, d) -> (a, b, c), (a, c, d)
                tris.append((idx[0], idx[k], idx[k + 1]))
    if not verts:
        _fail(path, "OBJ file has no vertices")
    v = np.asarray(verts, np.float64)
    if not np.all(np.isfinite(v)):
        _fail(path, "OBJ vertices contain NaN or Inf")
    t = np.asarray(tris, np.int64).reshape(-1, 3)
    if want_faces:
        if t.shape[0] == 0:
            _fail(path, "OBJ file has no faces")
        if int(t.min()) < 0 or int(t.max()) >= len(v):
            _fail(path, f"face indices out of range [1, {len(v)}]")
    return v, t


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def read_mesh(path):
    """A triangle mesh from an OBJ or PLY file (ASCII or binary PLY).

    Args:
        path: the file.
    Returns:
        (verts (V, 3) float64 in the file's units, tris (T, 3) int64, 0-based; polygons fan-triangulated).
    Raises FileNotFoundError, or ModelFormatError naming the file when it cannot be read as a mesh.
    """
    p = Path(os.fspath(path))
    if not p.is_file():
        raise FileNotFoundError(f"mesh file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".obj":
        verts, tris = parse_obj(p)
        verts, tris = np.asarray(verts, np.float64), np.asarray(tris, np.int64).reshape(-1, 3)
    elif suffix == ".ply":
        verts, tris = _read_ply(p)
    else:
        raise ModelFormatError(f"{p}: not a mesh file (expected {', '.join(MESH_EXTENSIONS)})")
    if verts.ndim != 2 or verts.shape[1] != 3 or not len(verts):
        raise ModelFormatError(f"{p}: no vertices")
    if tris.size and (tris.min() < 0 or tris.max() >= len(verts)):
        raise ModelFormatError(f"{p}: face indices outside [0, {len(verts)})")
    return verts, tris


def _read_ply(p: Path):
    data = p.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ModelFormatError(f"{p}: not a PLY file (no 'ply' magic or no end_header)")
    header = data[:end].decode("ascii", errors="replace").splitlines()
    body = data[data.index(b"\n", end) + 1:]
    fmt, elements = None, []
    for line in header:
        w = line.split()
        if not w:
            continue
        if w[0] == "format":
            fmt = w[1]
        elif w[0] == "element":
            elements.append([w[1], int(w[2]), []])
        elif w[0] == "property" and elements:
            elements[-1][2].append(w[1:])
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ModelFormatError(f"{p}: unsupported PLY format {fmt!r}")
    verts = tris = None
    if fmt == "ascii":
        rows = body.decode("ascii", errors="replace").split("\n")
        i = 0
        for name, count, props in elements:
            lines = rows[i:i + count]
            i += count
            if name == "vertex":
                names = [q[-1] for q in props]
                a = np.array([[float(x) for x in ln.split()[:len(names)]] for ln in lines], np.float64)
                verts = a[:, [names.index("x"), names.index("y"), names.index("z")]]
            elif name == "face":
                tris = _fan([[int(x) for x in ln.split()[1:1 + int(ln.split()[0])]] for ln in lines if ln.strip()])
        return _need(p, verts), tris if tris is not None else np.zeros((0, 3), np.int64)
    order = "<" if fmt == "binary_little_endian" else ">"
    off = 0
    for name, count, props in elements:
        if all(q[0] != "list" for q in props):
            dt = np.dtype([(q[1], order + _PLY_TYPES[q[0]]) for q in props])
            a = np.frombuffer(body, dt, count, off)
            off += dt.itemsize * count
            if name == "vertex":
                verts = np.stack([a["x"], a["y"], a["z"]], 1).astype(np.float64)
            continue
        if name != "face" or len(props) != 1:
            raise ModelFormatError(f"{p}: unsupported PLY element {name!r} with list properties")
        _, ctype, itype, _ = props[0]
        cdt, idt = np.dtype(order + _PLY_TYPES[ctype]), np.dtype(order + _PLY_TYPES[itype])
        first = int(np.frombuffer(body, cdt, 1, off)[0]) if count else 3
        rec = np.dtype([("n", cdt), ("v", idt, (first,))])
        a = np.frombuffer(body, rec, count, off)
        if count and not (a["n"] == first).all():
            raise ModelFormatError(f"{p}: PLY faces of mixed sizes are not supported")
        off += rec.itemsize * count
        tris = _fan(a["v"].astype(np.int64))
    return _need(p, verts), tris if tris is not None else np.zeros((0, 3), np.int64)


def _need(p, verts):
    if verts is None:
        raise ModelFormatError(f"{p}: no vertex element")
    return verts


def _fan(polys) -> np.ndarray:
    out = [(q[0], q[k], q[k + 1]) for q in polys for k in range(1, len(q) - 1)]
    return np.asarray(out, np.int64).reshape(-1, 3)


def _read_picked_points(p: Path) -> np.ndarray:
    """The <point x= y= z=> elements of a MeshLab picked-points file, in file order (unchecked ones too)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(p).getroot()
        pts = [[float(e.attrib[k]) for k in ("x", "y", "z")] for e in root.iter("point")]
    except (ET.ParseError, KeyError, ValueError) as exc:
        raise InputError(f"landmark file {str(p)!r}: not a MeshLab picked-points file ({exc})") from None
    if not pts:
        raise InputError(f"landmark file {str(p)!r}: no <point x= y= z=> elements")
    return np.asarray(pts, np.float64)


def read_landmarks_3d(path) -> np.ndarray:
    """3D landmarks of a scan: the first group of 3D points of a menpo LJSON file (a 68-point group in iBUG order,
    `io.ljson`), a (N, 3) .npy, or a MeshLab picked-points .pp (NoW's landmark files), points in file order.

    Returns (N, 3) float64 in the scan's units (NaN for missing points). Raises FileNotFoundError or
    InputError naming the file.
    """
    p = Path(os.fspath(path))
    if not p.is_file():
        raise FileNotFoundError(f"landmark file not found: {p}")
    if p.suffix.lower() == ".npy":
        a = np.asarray(np.load(p, allow_pickle=False), np.float64)
    elif p.suffix.lower() == ".pp":
        a = _read_picked_points(p)
    else:
        a = None
        for q in read_ljson_groups(p):
            if q and all(r is None or (isinstance(r, list) and len(r) == 3) for r in q):
                a = np.array([[np.nan] * 3 if r is None or None in r else r for r in q], np.float64)
                break
        if a is None:
            raise InputError(f"landmark file {str(p)!r}: no group of 3D points")
    if a.ndim != 2 or a.shape[1] != 3:
        raise InputError(f"landmark file {str(p)!r}: expected (N, 3) points, got shape {a.shape}")
    return a


def ibug68_landmarks(landmarks, name: str = "landmarks") -> np.ndarray:
    """(68, 3) iBUG landmarks (NaN where not given) from 68 points, the 51 inner ones (iBUG 17-67, e.g. FLAME's
    ``scan_lmks.npy``), or NoW's 7 (`NOW7`: eye corners, nose bottom, mouth corners; listed from either side
    of the face: the side is told by the nose bottom lying in front of the eye and mouth corners). Raises
    InputError naming `name` for any other count."""
    a = np.asarray(landmarks, np.float64)
    if a.ndim != 2 or a.shape[1] != 3 or a.shape[0] not in (7, 51, 68):
        raise InputError(f"{name}: expected (68, 3), (51, 3) or (7, 3) iBUG / NoW landmarks, got shape {a.shape}")
    if a.shape[0] == 68:
        return a
    out = np.full((68, 3), np.nan)
    if a.shape[0] == 51:
        out[17:] = a
        return out
    # iBUG's 36 is the subject's right outer eye corner: with x from 36 to 45 and y from the mouth up to the
    # eyes, x cross y points out of the face, where the nose bottom is
    eyes, mouth = a[[0, 3]].mean(0), a[[5, 6]].mean(0)
    normal = np.cross(a[3] - a[0], eyes - mouth)
    if (a[4] - a[[0, 1, 2, 3, 5, 6]].mean(0)) @ normal < 0:
        a = a[[3, 2, 1, 0, 4, 6, 5]]                           # listed from the subject's left
    out[list(NOW7)] = a
    return out


@dataclass
class Scan:
    """A 3D scan beside a photo: verts (V, 3) and tris (T, 3) in the scan's units, landmarks (68, 3) iBUG."""

    verts: np.ndarray
    tris: np.ndarray
    landmarks: np.ndarray
    path: Path


def find_scan(image):
    """The scan beside photo `image`: (Scan or None, note or None).

    A scan is NAME.obj or NAME.ply beside NAME.jpg (any photo extension), with its iBUG landmarks in 3D in
    NAME.ljson (menpo), NAME_lmks.npy / NAME.npy, or NAME.pp (MeshLab picked points, NoW's 7): 68 points, the
    51 inner ones or NoW's 7 (`ibug68_landmarks`). A scan that cannot be read gives a note instead.
    """
    image = Path(os.fspath(image))
    mesh = next((image.with_suffix(e) for e in MESH_EXTENSIONS if image.with_suffix(e).is_file()), None)
    if mesh is None:
        return None, None
    cands = [image.with_suffix(".ljson"), image.parent / f"{image.stem}_lmks.npy", image.with_suffix(".npy"),
             image.with_suffix(".pp")]
    lm_path = next((c for c in cands if c.is_file()), None)
    if lm_path is None:
        return None, f"scan {mesh.name}: no 3D landmark file ({', '.join(c.name for c in cands)})"
    try:
        verts, tris = read_mesh(mesh)
        lm = ibug68_landmarks(read_landmarks_3d(lm_path), lm_path.name)
    except (InputError, ModelFormatError, OSError) as exc:
        return None, f"scan {mesh.name}: {' '.join(str(exc).split())}"
    return Scan(verts, tris, lm, mesh), None
