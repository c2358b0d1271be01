"""Generative face model: vertices (or albedo) as mean + two linear bases.

    out[b, v, c] = mean[v, c] + sum_k basis1[v, c, k] coef1[b, k] + sum_k basis2[v, c, k] coef2[b, k]

The bases are large (35,709 x 3 x 144 floats = 62 MB for a BFM-sized model) and the batch small, so both
kernels are organised to read each basis row once per call and reuse it for every batch element from cache
(a (b, v, c)-parallel loop would stream the whole basis from memory B times).
"""
import taichi as ti

CHUNK = 128  # vertices per partial sum of the backward pass
BLOCK_K = 16  # backward register tile: coefficients ...
BLOCK_B = 4  # ... times batch elements per thread
nd = ti.types.ndarray


@ti.kernel
def linear_combine_fwd(mean: nd(dtype=ti.f32, ndim=2),                # (V 3) f32
                       basis1: nd(dtype=ti.f32, ndim=3),              # (V 3 K1) f32
                       coef1: nd(dtype=ti.f32, ndim=2),               # (B K1) f32
                       basis2: nd(dtype=ti.f32, ndim=3),              # (V 3 K2) f32
                       coef2: nd(dtype=ti.f32, ndim=2),               # (B K2) f32
                       out: nd(dtype=ti.f32, ndim=3)):                # (B V 3) f32 output
    B = out.shape[0]
    for v, c in ti.ndrange(out.shape[1], 3):
        for b in range(B):
            acc = mean[v, c]
            for k in range(basis1.shape[2]):
                acc += basis1[v, c, k] * coef1[b, k]
            for k in range(basis2.shape[2]):
                acc += basis2[v, c, k] * coef2[b, k]
            out[b, v, c] = acc


@ti.kernel
def linear_combine_bwd(basis: nd(dtype=ti.f32, ndim=3),               # (V 3 K) f32
                       grad_out: nd(dtype=ti.f32, ndim=3),            # (B V 3) f32
                       partial: nd(dtype=ti.f32, ndim=3)):            # (chunks B K) f32 output
    """partial[ch, b, k] = sum over the vertices v of chunk ch of sum_c basis[v, c, k] * grad_out[b, v, c].

    The caller sums over chunks (grad_coef = partial.sum(0)): no atomics, deterministic. Register-blocked:
    each thread owns a BLOCK_B x BLOCK_K tile of (b, k) for one chunk of CHUNK vertices and keeps its
    BLOCK_B * BLOCK_K sums in registers, so every basis value it loads feeds BLOCK_B multiply-adds and
    nothing is written to memory inside the vertex loop (accumulating into `partial` in memory is 5-10x slower).
    """
    V = grad_out.shape[1]
    B = grad_out.shape[0]
    K = basis.shape[2]
    n_kb = (K + BLOCK_K - 1) // BLOCK_K
    n_bb = (B + BLOCK_B - 1) // BLOCK_B
    for ch, kb, bb in ti.ndrange(partial.shape[0], n_kb, n_bb):
        k0 = kb * BLOCK_K
        b0 = bb * BLOCK_B
        acc = ti.Matrix.zero(ti.f32, BLOCK_B, BLOCK_K)
        for v in range(ch * CHUNK, ti.min(V, (ch + 1) * CHUNK)):
            for c in ti.static(range(3)):
                g = ti.Vector.zero(ti.f32, BLOCK_B)
                for j in ti.static(range(BLOCK_B)):
                    if b0 + j < B:
                        g[j] = grad_out[b0 + j, v, c]
                row = ti.Vector.zero(ti.f32, BLOCK_K)
                if k0 + BLOCK_K <= K:
                    for kk in ti.static(range(BLOCK_K)):
                        row[kk] = basis[v, c, k0 + kk]
                else:
                    for kk in ti.static(range(BLOCK_K)):
                        if k0 + kk < K:
                            row[kk] = basis[v, c, k0 + kk]
                for j in ti.static(range(BLOCK_B)):
                    for kk in ti.static(range(BLOCK_K)):
                        acc[j, kk] += g[j] * row[kk]
        for j in ti.static(range(BLOCK_B)):
            for kk in ti.static(range(BLOCK_K)):
                if k0 + kk < K and b0 + j < B:
                    partial[ch, b0 + j, k0 + kk] = acc[j, kk]
