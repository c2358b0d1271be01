"""mofa_tk.Mesh: validation, derived tables against brute-force NumPy, and the per-view cache of as_mesh."""
import numpy as np
import pytest
import torch

from mofa_tk import InputError, Mesh
from mofa_tk.mesh import as_mesh


def _mesh(rng, V=20, T=30):
    """T distinct triangles with three distinct corners each (every edge joins two different vertices)."""
    tris = {tuple(rng.choice(V, 3, replace=False)) for _ in range(4 * T)}
    return np.array(sorted(tris)[:T]), V


def test_validation_errors_name_the_argument():
    for bad, what in ((torch.tensor([[0.0, 1.0, 2.0]]), "integer"), (np.array([[0, 1, 2]], bool), "integer"),
                      (torch.zeros(4, 2, dtype=torch.int32), "shape"), (torch.tensor([[0, -1, 2]]), r"\[0, 3\)"),
                      ("abc", "integer")):
        with pytest.raises(InputError, match="tris: .*" + what):
            Mesh(bad, 3)
    with pytest.raises(InputError, match=r"faces: indices must lie in \[0, 2\)"):
        Mesh([[0, 1, 2]], 2, name="faces")
    m = Mesh(np.array([[0, 1, 5]], np.int64))
    assert m.n_vertices == 6 and m.triangles.dtype == torch.int32 and m.n_triangles == 1


def test_tables_match_brute_force():
    rng = np.random.default_rng(0)
    t, V = _mesh(rng)
    m = Mesh(t, V)
    # neighbours: the other triangle sharing each directed edge's undirected edge (or -1)
    nbr = m.neighbours("cpu").numpy()
    for f in range(len(t)):
        for k in range(3):
            e = {t[f, k], t[f, (k + 1) % 3]}
            others = [g for g in range(len(t)) if g != f and any({t[g, j], t[g, (j + 1) % 3]} == e for j in range(3))]
            assert (nbr[f, k] == -1) == (not others) and (nbr[f, k] == -1 or nbr[f, k] in others)
    # adjacency: corners of each vertex in increasing order
    start, corner = (a.numpy() for a in m.adjacency("cpu", V + 2))
    assert len(start) == V + 3
    for v in range(V + 2):
        expect = [3 * f + k for f in range(len(t)) for k in range(3) if t[f, k] == v]
        assert list(corner[start[v]:start[v + 1]]) == expect
    # boundary: vertices of an edge used once
    count = {}
    for f in range(len(t)):
        for k in range(3):
            e = tuple(sorted((t[f, k], t[f, (k + 1) % 3])))
            count[e] = count.get(e, 0) + 1
    expect = np.zeros(V, bool)
    for e, c in count.items():
        if c == 1:
            expect[list(e)] = True
    assert np.array_equal(m.boundary.numpy(), expect)
    # incident faces of a few vertices
    idx = torch.tensor([0, 3, 7])
    t0, t1, t2, valid = m.incident_faces(idx)
    for r, v in enumerate(idx.tolist()):
        faces = [tuple(t[f]) for f in range(len(t)) if v in t[f]]
        got = [(int(a), int(b), int(c)) for a, b, c, ok in zip(t0[r], t1[r], t2[r], valid[r]) if ok]
        assert got == faces


def test_as_mesh_caches_per_view():
    big = torch.arange(36, dtype=torch.int32).reshape(6, 6) % 9
    a, b, c = big[:, 0::2], big[:, :3], big[:, 3:]
    ma, mb, mc = as_mesh(a, 9), as_mesh(b, 9), as_mesh(c, 9)
    assert len({id(ma), id(mb), id(mc)}) == 3
    for view, m in ((a, ma), (b, mb), (c, mc)):
        assert torch.equal(m.triangles, view.contiguous())
        assert as_mesh(view, 9) is m                            # the same view hits its entry
    big[0, 0] = 8                                               # in-place edit: new version, new Mesh
    assert as_mesh(b, 9) is not mb and int(as_mesh(b, 9).triangles[0, 0]) == 8
    m = Mesh(b, 9)
    assert as_mesh(m, 9) is m
    with pytest.raises(InputError, match=r"\[0, 5\)"):
        as_mesh(m, 5)
