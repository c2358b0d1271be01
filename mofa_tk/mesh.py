"""`Mesh`: a triangle list validated once, with the per-mesh tables the ops derive from it.

Every op that takes `tris` accepts a `Mesh` or a plain integer tensor / array. A `Mesh` is checked when it is
made (integer dtype, shape (T, 3), indices >= 0) and keeps, per device, its int32 triangles, antialias's triangle
neighbours and vertex_normals' vertex -> face-corner adjacency, each built on first use.

A plain tensor is turned into a `Mesh` through `as_mesh`, which keeps the last few in a small LRU cache keyed
on everything that defines the triangles a view shows: data pointer (storage and offset), shape, strides, dtype,
device and in-place version. Two views of one buffer with different strides are different meshes; an in-place
edit makes a new version and so a new `Mesh`. An entry holds its tensor, so the address cannot be reused by
another tensor while the entry lives. Arrays that are not tensors are converted on every call.

Example::

    mesh = mofa_tk.Mesh(model.triangles, model.n_vertices)
    rast = mofa_tk.rasterize(pos_clip, mesh, (224, 224))   # no per-call conversion or cache lookup
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from .errors import InputError

__all__ = ["Mesh", "as_mesh", "vertex_face_adjacency", "triangle_neighbours", "boundary_vertices"]


def _triangles_from(tris, name: str) -> torch.Tensor:
    """`tris` as a (T, 3) int64 CPU tensor; InputError for non-integer dtypes or a wrong shape."""
    if isinstance(tris, torch.Tensor):
        t = tris.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(tris))
        except Exception as exc:
            raise InputError(f"{name}: expected an integer tensor or array of shape (T, 3), got "
                             f"{type(tris).__name__} ({exc})") from None
    if t.is_complex() or t.is_floating_point() or t.dtype == torch.bool:
        raise InputError(f"{name}: expected integer vertex indices (int32 or int64), got dtype {t.dtype}")
    if t.ndim != 2 or t.shape[1] != 3:
        raise InputError(f"{name}: expected shape (T, 3), got {tuple(t.shape)}")
    return t.to(device="cpu", dtype=torch.int64)


def vertex_face_adjacency(tris: torch.Tensor, n_verts: int):
    """CSR vertex -> face-corner adjacency of a mesh.

    Args:
        tris: (T, 3) integer vertex indices.
        n_verts: V, the number of vertices.
    Returns:
        (vf_start (V + 1,) int32, vf_corner (3 T,) int32): the corners of vertex v are
        vf_corner[vf_start[v]:vf_start[v + 1]], each coded 3 f + k (corner k of face f), in increasing order,
        the fixed summation order of `vertex_normals` (no atomics, deterministic).
    """
    flat = tris.reshape(-1).to(torch.int64)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=n_verts)
    start = torch.zeros(n_verts + 1, dtype=torch.int64, device=flat.device)
    start[1:] = torch.cumsum(counts, 0)
    return start.to(torch.int32), order.to(torch.int32)


def triangle_neighbours(tris: torch.Tensor) -> torch.Tensor:
    """Edge neighbours of every triangle.

    Args:
        tris: (T, 3) integer vertex indices.
    Returns:
        (T, 3) int32: the triangle sharing edge (tris[t, k], tris[t, (k + 1) % 3]) with t, or -1 on a boundary.
        For an edge shared by more than two triangles (non-manifold), one of the others is chosen.
    """
    t = tris.detach().cpu().numpy().astype(np.int64)
    T = t.shape[0]
    a = t.reshape(-1)
    b = t[:, [1, 2, 0]].reshape(-1)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo * (int(t.max(initial=0)) + 1) + hi
    order = np.argsort(key, kind="stable")
    sk = key[order]
    nbr = np.full(3 * T, -1, np.int64)
    same_next = np.nonzero(sk[1:] == sk[:-1])[0]
    e0, e1 = order[same_next], order[same_next + 1]
    nbr[e0] = e1 // 3
    nbr[e1] = e0 // 3
    return torch.from_numpy(nbr.reshape(T, 3).astype(np.int32))


def boundary_vertices(tris, n_vertices: int) -> torch.Tensor:
    """Vertices on an open edge of the mesh (an edge used by exactly one triangle).

    Args:
        tris: (T, 3) integer vertex indices.
        n_vertices: V.
    Returns:
        (V,) bool. On an open face mesh these outline the face; their projected colour sample mixes the face
        with whatever lies beyond it, so `mofa_loss` leaves them out of the dense photometric term by default.
    """
    t = torch.as_tensor(tris).long().cpu()
    e = torch.cat([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]]).sort(1).values
    edges, counts = torch.unique(e, dim=0, return_counts=True)
    out = torch.zeros(int(n_vertices), dtype=torch.bool)
    out[edges[counts == 1].reshape(-1)] = True
    return out


class Mesh:
    """Triangles of a mesh, validated once, and the tables derived from them (built on first use, per device).

    Args:
        triangles: (T, 3) integer vertex indices (int32 or int64; floats, bools and other shapes raise
            InputError). Copied: later edits of the caller's tensor do not reach the Mesh.
        n_vertices: V; indices must lie in [0, V). Default: largest index + 1.
        name: the argument name used in error messages.

    Attributes:
        triangles: (T, 3) int32 CPU tensor.
        n_vertices: V.
        n_triangles: T.
    """

    def __init__(self, triangles, n_vertices: int | None = None, *, name: str = "tris"):
        t = _triangles_from(triangles, name)
        self.name = name
        self.lo, self.hi = (int(t.min()), int(t.max())) if t.numel() else (0, -1)
        V = self.hi + 1 if n_vertices is None else int(n_vertices)
        self.check_vertices(V)
        if self.hi >= 2 ** 31 - 1:
            raise InputError(f"{name}: vertex index {self.hi} does not fit in int32")
        self.n_vertices = V
        self.triangles = t.to(torch.int32).contiguous()
        self.n_triangles = int(t.shape[0])
        self._tables: dict = {}

    def __repr__(self) -> str:
        return f"Mesh(n_vertices={self.n_vertices}, n_triangles={self.n_triangles})"

    def check_vertices(self, n_vertices: int) -> None:
        """InputError unless every index lies in [0, n_vertices) (the V of the positions an op was given)."""
        if self.lo < 0 or self.hi >= n_vertices:
            raise InputError(f"{self.name}: indices must lie in [0, {n_vertices}), got values in "
                             f"[{self.lo}, {self.hi}]")

    def _table(self, key, device, build):
        k = (key, str(device))
        hit = self._tables.get(k)
        if hit is None:
            hit = build()
            self._tables[k] = hit
        return hit

    def on(self, device) -> torch.Tensor:
        """(T, 3) int32 contiguous triangles on `device`."""
        return self._table("tris", device, lambda: self.triangles.to(device).contiguous())

    def neighbours(self, device) -> torch.Tensor:
        """(T, 3) int32 edge neighbours on `device` (`triangle_neighbours`)."""
        return self._table("nbr", device, lambda: triangle_neighbours(self.triangles).to(device))

    def adjacency(self, device, n_vertices: int | None = None):
        """(vf_start (V + 1,), vf_corner (3 T,)) int32 on `device` (`vertex_face_adjacency`) for V = n_vertices
        (default `self.n_vertices`; positions may carry unused vertices after the last indexed one)."""
        V = self.n_vertices if n_vertices is None else int(n_vertices)
        return self._table(("adj", V), device, lambda: tuple(
            a.to(device) for a in vertex_face_adjacency(self.triangles, V)))

    @property
    def boundary(self) -> torch.Tensor:
        """(V,) bool CPU: vertices on an open edge (`boundary_vertices`)."""
        return self._table("boundary", "cpu", lambda: boundary_vertices(self.triangles, self.n_vertices))

    def incident_faces(self, idx: torch.Tensor):
        """Faces around a subset of vertices, padded to a rectangle.

        Args:
            idx: (n,) int64 vertex indices, distinct.
        Returns:
            (t0, t1, t2, valid): (n, d) int64 corner indices of the faces incident to each vertex (d the
            largest count; padding repeats face 0) and (n, d) bool marking the real faces, in face order.
        """
        tris = self.triangles.long()
        T, V = tris.shape[0], self.n_vertices
        inc = torch.cat([torch.stack([tris[:, k], torch.arange(T)], 1) for k in range(3)])
        pos = torch.full((V,), -1, dtype=torch.long)
        pos[idx] = torch.arange(len(idx))
        inc = inc[pos[inc[:, 0]] >= 0]
        inc = inc[torch.argsort(inc[:, 0] * (T + 1) + inc[:, 1])]
        rows = pos[inc[:, 0]]
        counts = torch.bincount(rows, minlength=len(idx))
        d = max(int(counts.max()) if len(counts) else 0, 1)
        start = torch.cumsum(counts, 0) - counts
        col = torch.arange(len(inc)) - start[rows]
        faces = torch.full((len(idx), d), -1, dtype=torch.long)
        faces[rows, col] = inc[:, 1]
        valid = faces >= 0
        f = faces.clamp(min=0)
        return tris[f, 0], tris[f, 1], tris[f, 2], valid


class _MeshCache:
    """LRU of the `Mesh` made for a caller's triangle tensor, keyed on the full description of the view."""

    def __init__(self, size: int = 8):
        self.size = size
        self._entries: OrderedDict = OrderedDict()

    @staticmethod
    def key(t: torch.Tensor):
        return (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype, t._version, str(t.device))

    def get(self, t: torch.Tensor, name: str) -> Mesh:
        k = self.key(t)
        hit = self._entries.get(k)
        if hit is not None:
            self._entries.move_to_end(k)
            return hit[0]
        mesh = Mesh(t, name=name)
        self._entries[k] = (mesh, t)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return mesh

    def __len__(self) -> int:
        return len(self._entries)


_CACHE = _MeshCache(8)


def as_mesh(tris, n_vertices: int, name: str = "tris") -> Mesh:
    """`tris` as a `Mesh` whose indices lie in [0, n_vertices).

    Args:
        tris: a `Mesh`, or (T, 3) integer vertex indices (tensor, array or nested lists).
        n_vertices: V of the positions the op was given.
        name: the argument name used in error messages.
    Returns:
        The `Mesh` itself, the cached `Mesh` of this tensor view, or a new one for a non-tensor.
    """
    if isinstance(tris, Mesh):
        mesh = tris
    elif isinstance(tris, torch.Tensor):
        mesh = _CACHE.get(tris, name)
    else:
        mesh = Mesh(tris, name=name)
    mesh.check_vertices(n_vertices)
    return mesh
