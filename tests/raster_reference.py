"""Brute-force NumPy references for the rasterizer tests (float64, independent of the kernels).

Screen-space method: project vertices (w > 0 only), 2D edge functions give screen barycentrics l_k,
perspective-correct weights are (l_k / w_k) / sum(l / w), depth z/w is linear in screen space.
"""
import numpy as np


def pixel_centres_ndc(H, W):
    jj, ii = np.meshgrid(np.arange(W), np.arange(H))
    return 2 * (jj + 0.5) / W - 1, 2 * (ii + 0.5) / H - 1


def tri_screen_bary(p, sx, sy):
    """p: (3, 4) clip verts (w > 0). Returns screen barycentrics l (3, H, W) (may be negative) or None."""
    x, y = p[:, 0] / p[:, 3], p[:, 1] / p[:, 3]
    area = (x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0])
    if area == 0:
        return None
    l0 = ((x[1] - sx) * (y[2] - sy) - (x[2] - sx) * (y[1] - sy)) / area
    l1 = ((x[2] - sx) * (y[0] - sy) - (x[0] - sx) * (y[2] - sy)) / area
    return np.stack([l0, l1, 1 - l0 - l1])


def rasterize_ref(pos, tris, H, W):
    """pos (B, V, 4) float64 with w > 0. Returns rast (B, H, W, 4) like mofa_tk.rasterize."""
    B = pos.shape[0]
    sx, sy = pixel_centres_ndc(H, W)
    out = np.zeros((B, H, W, 4))
    for b in range(B):
        zbuf = np.full((H, W), np.inf)
        for t, tri in enumerate(tris):
            p = pos[b, tri].astype(np.float64)
            lam = tri_screen_bary(p, sx, sy)
            if lam is None:
                continue
            inside = (lam >= 0).all(0)
            zw = (lam * (p[:, 2] / p[:, 3])[:, None, None]).sum(0)
            inside &= (zw >= -1) & (zw <= 1)
            win = inside & (zw < zbuf)
            if not win.any():
                continue
            pc = lam / p[:, 3][:, None, None]
            pc = pc / pc.sum(0)
            zbuf[win] = zw[win]
            out[b, win, 0] = pc[1][win]
            out[b, win, 1] = pc[2][win]
            out[b, win, 2] = zw[win]
            out[b, win, 3] = t + 1
    return out


def rast_values_for_ids(pos, tris, ids, H, W):
    """u, v, z/w (B, H, W, 3) of the given triangle ids (B, H, W; 0 = none): a smooth function of pos."""
    B = pos.shape[0]
    sx, sy = pixel_centres_ndc(H, W)
    out = np.zeros((B, H, W, 3))
    for b in range(B):
        for t in np.unique(ids[b]):
            if t == 0:
                continue
            m = ids[b] == t
            p = pos[b, tris[int(t) - 1]]
            lam = tri_screen_bary(p, sx[m], sy[m])
            pc = lam / p[:, 3][:, None]
            pc = pc / pc.sum(0)
            out[b, m, 0] = pc[1]
            out[b, m, 1] = pc[2]
            out[b, m, 2] = (lam * (p[:, 2] / p[:, 3])[:, None]).sum(0)
    return out


def random_soup(rng, B, T, overlap=True):
    """B batches of T random triangles (separate vertices) with perspective (w in [1, 3])."""
    centres = rng.uniform(-0.8, 0.8, (B, T, 1, 2))
    offs = rng.normal(0, 0.35 if overlap else 0.1, (B, T, 3, 2))
    ndc = centres + offs
    z_ndc = rng.uniform(-0.9, 0.9, (B, T, 1, 1)) + rng.normal(0, 0.05, (B, T, 3, 1))
    w = rng.uniform(1, 3, (B, T, 3, 1))
    pos = np.concatenate([ndc * w, z_ndc * w, w], -1).reshape(B, 3 * T, 4)
    tris = np.arange(3 * T, dtype=np.int32).reshape(T, 3)
    return pos, tris
