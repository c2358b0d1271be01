"""A vectorised pure-PyTorch rasterizer, interpolator and antialiaser: the reference the benchmarks compare with.

Same conventions and outputs as mofa_tk.rasterize / interpolate / antialias (checked by the benchmarks), written
the way a PyTorch user would: enumerate (triangle, pixel) candidate pairs inside each triangle's bounding box,
test coverage with tensor ops, resolve the z-buffer with scatter_reduce, and let autograd differentiate the
barycentrics of the winners. Not used by the package itself.
"""
import torch


def _pixel_pairs(pos, tris, H, W):
    """All (batch, triangle, pixel) candidates inside screen bounding boxes of triangles with w > 0."""
    B = pos.shape[0]
    p = pos[:, tris.long()]  # (B, T, 3, 4)
    w = p[..., 3]
    ok = (w > 0).all(-1)
    ndc = p[..., :2] / torch.where(ok[..., None], w, torch.ones_like(w))[..., None]
    jlo = torch.ceil((ndc[..., 0].amin(-1) + 1) * 0.5 * W - 0.5).clamp(0, W)
    jhi = torch.floor((ndc[..., 0].amax(-1) + 1) * 0.5 * W - 0.5).clamp(-1, W - 1)
    ilo = torch.ceil((ndc[..., 1].amin(-1) + 1) * 0.5 * H - 0.5).clamp(0, H)
    ihi = torch.floor((ndc[..., 1].amax(-1) + 1) * 0.5 * H - 0.5).clamp(-1, H - 1)
    nw = (jhi - jlo + 1).clamp(min=0) * ok
    nh = (ihi - ilo + 1).clamp(min=0) * ok
    count = (nw * nh).long().reshape(-1)
    slot = torch.repeat_interleave(torch.arange(count.numel(), device=pos.device), count)
    start = torch.cumsum(count, 0) - count
    local = torch.arange(slot.numel(), device=pos.device) - start[slot]
    nw_s = nw.reshape(-1).long()[slot]
    i = ilo.reshape(-1).long()[slot] + local // nw_s
    j = jlo.reshape(-1).long()[slot] + local % nw_s
    T = tris.shape[0]
    return slot // T, slot % T, i, j


def _bary(pos, tris, b, t, i, j, H, W):
    """Perspective-correct barycentrics (N, 3) and depth z/w (N,) of triangle t at pixel (i, j) of batch b."""
    tv = tris.long()[t]
    p = pos[b[:, None], tv]  # (N, 3, 4)
    sx = 2 * (j + 0.5) / W - 1
    sy = 2 * (i + 0.5) / H - 1
    a = p[..., 0] - sx[:, None] * p[..., 3]
    c = p[..., 1] - sy[:, None] * p[..., 3]
    n = torch.cross(a, c, dim=-1)
    tot = n.sum(-1)
    bc = n / torch.where(tot == 0, torch.ones_like(tot), tot)[:, None]
    wz = (bc * p[..., 3]).sum(-1)
    depth = (bc * p[..., 2]).sum(-1) / torch.where(wz == 0, torch.ones_like(wz), wz)
    covered = (tot != 0) & (bc >= 0).all(-1) & (wz > 0) & (depth >= -1) & (depth <= 1)
    return bc, depth, covered


def torch_rasterize(pos, tris, resolution):
    """Reference of mofa_tk.rasterize for triangles with w > 0: (B, H, W, 4), differentiable by autograd."""
    H, W = resolution
    B = pos.shape[0]
    with torch.no_grad():
        b, t, i, j = _pixel_pairs(pos, tris, H, W)
        _, depth, covered = _bary(pos, tris, b, t, i, j, H, W)
        b, t, i, j, depth = b[covered], t[covered], i[covered], j[covered], depth[covered]
        pix = (b * H + i) * W + j
        zbuf = torch.full((B * H * W,), float("inf"), device=pos.device)
        zbuf.scatter_reduce_(0, pix, depth, reduce="amin")
        front = depth == zbuf[pix]
        idbuf = torch.full((B * H * W,), 2 ** 62, dtype=torch.long, device=pos.device)
        idbuf.scatter_reduce_(0, pix[front], t[front], reduce="amin")
        hit = idbuf < 2 ** 62
        pix_hit = torch.nonzero(hit).squeeze(1)
        t_hit = idbuf[pix_hit]
        b_hit = pix_hit // (H * W)
        i_hit = (pix_hit // W) % H
        j_hit = pix_hit % W
    bc, depth, _ = _bary(pos, tris, b_hit, t_hit, i_hit, j_hit, H, W)
    vals = torch.stack([bc[:, 1], bc[:, 2], depth, (t_hit + 1).to(pos.dtype)], -1)
    rast = torch.zeros(B * H * W, 4, device=pos.device, dtype=pos.dtype).index_put((pix_hit,), vals)
    return rast.reshape(B, H, W, 4)


def torch_interpolate(attr, rast, tris):
    """Reference of mofa_tk.interpolate: attr (B, V, C) or (V, C) -> (B, H, W, C)."""
    if attr.ndim == 2:
        attr = attr[None].expand(rast.shape[0], -1, -1)
    tid = rast[..., 3].long()
    tv = tris.long()[(tid - 1).clamp(min=0)]  # (B, H, W, 3)
    B = rast.shape[0]
    bidx = torch.arange(B, device=rast.device)[:, None, None, None]
    a = attr[bidx, tv]  # (B, H, W, 3, C)
    u, v = rast[..., 0:1], rast[..., 1:2]
    out = (1 - u - v) * a[..., 0, :] + u * a[..., 1, :] + v * a[..., 2, :]
    return out * (tid > 0)[..., None]


def _screen(p, H, W):
    ok = p[..., 3] > 0
    w = torch.where(ok, p[..., 3], torch.ones_like(p[..., 3]))
    return torch.stack([(p[..., 0] / w + 1) * 0.5 * W, (p[..., 1] / w + 1) * 0.5 * H], -1), ok


def _edge(A, Bv, P):
    return (Bv[..., 0] - A[..., 0]) * (P[..., 1] - A[..., 1]) - (Bv[..., 1] - A[..., 1]) * (P[..., 0] - A[..., 0])


def _exit_silhouette(pos, tris, nbr, b, tid, Pf, Po, H, W, vertical):
    """Vectorised twin of kernels/antialias.py::_exit_silhouette for N candidate (batch, triangle) pairs."""
    t = (tid - 1).clamp(min=0)
    q, okw = _screen(pos[b[:, None], tris.long()[t]], H, W)  # (N, 3, 2)
    area = _edge(q[:, 0], q[:, 1], q[:, 2])
    sig = torch.where(area > 0, 1.0, -1.0)
    tcs, efs, eos = [], [], []
    for k in range(3):
        A, Bv = q[:, k], q[:, (k + 1) % 3]
        ef, eo = _edge(A, Bv, Pf), _edge(A, Bv, Po)
        ok = (ef * sig >= 0) & (eo * sig < 0)
        den = torch.where(ok, ef - eo, torch.ones_like(ef))
        tcs.append(torch.where(ok, ef / den, torch.full_like(ef, 2.0)))
    tc_all = torch.stack(tcs, 1)
    tc, kk = tc_all.min(1)
    has = tc < 2.0
    A = q[torch.arange(q.shape[0], device=q.device), kk]
    Bv = q[torch.arange(q.shape[0], device=q.device), (kk + 1) % 3]
    steep = (Bv[:, 1] - A[:, 1]).abs() >= (Bv[:, 0] - A[:, 0]).abs()
    nb = nbr.long()[t, kk]
    qn, okn = _screen(pos[b[:, None], tris.long()[nb.clamp(min=0)]], H, W)
    area_nb = _edge(qn[:, 0], qn[:, 1], qn[:, 2])
    silhouette = (nb < 0) | ~okn.all(-1) | (area_nb * area <= 0)
    found = (tid > 0) & okw.all(-1) & (area != 0) & has & (steep == (not vertical)) & silhouette
    return found, tc


def torch_antialias(color, rast, pos, tris, nbr):
    """Reference of mofa_tk.antialias (same algorithm, tensor ops, autograd for the backward)."""
    B, H, W, C = color.shape
    out = color.reshape(-1, C)
    ids = rast[..., 3].long()
    depth = rast[..., 2]
    dev = color.device
    for vertical in (False, True):
        if vertical:
            i0, j0 = torch.meshgrid(torch.arange(H - 1, device=dev), torch.arange(W, device=dev), indexing="ij")
            i1, j1 = i0 + 1, j0
        else:
            i0, j0 = torch.meshgrid(torch.arange(H, device=dev), torch.arange(W - 1, device=dev), indexing="ij")
            i1, j1 = i0, j0 + 1
        bb = torch.arange(B, device=dev)[:, None, None].expand(B, *i0.shape).reshape(-1)
        i0, j0, i1, j1 = (x.reshape(1, -1).expand(B, -1).reshape(-1) for x in (i0, j0, i1, j1))
        id0, id1 = ids[bb, i0, j0], ids[bb, i1, j1]
        m = id0 != id1
        bb, i0, j0, i1, j1, id0, id1 = bb[m], i0[m], j0[m], i1[m], j1[m], id0[m], id1[m]
        P0 = torch.stack([j0 + 0.5, i0 + 0.5], -1).float()
        P1 = torch.stack([j1 + 0.5, i1 + 0.5], -1).float()
        f0, t0 = _exit_silhouette(pos, tris, nbr, bb, id0, P0, P1, H, W, vertical)
        f1, t1 = _exit_silhouette(pos, tris, nbr, bb, id1, P1, P0, H, W, vertical)
        use0 = f0 & (~f1 | (depth[bb, i0, j0] <= depth[bb, i1, j1]))
        use1 = f1 & ~use0
        tc = torch.where(use0, t0, t1)
        f_is_1 = use1
        spill = tc > 0.5
        target_is_1 = torch.where(spill, ~f_is_1, f_is_1)
        alpha = torch.where(spill, tc - 0.5, 0.5 - tc)
        act = use0 | use1
        pix0 = (bb * H + i0) * W + j0
        pix1 = (bb * H + i1) * W + j1
        tgt = torch.where(target_is_1, pix1, pix0)[act]
        src = torch.where(target_is_1, pix0, pix1)[act]
        flat = color.reshape(-1, C)
        out = out.index_add(0, tgt, alpha[act, None] * (flat[src] - flat[tgt]))
    return out.reshape(B, H, W, C)
