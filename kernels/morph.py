"""Generative face model: vertices (or albedo) as mean + two linear bases.

    out[b, v, c] = mean[v, c] + sum_k basis1[v, c, k] coef1[b, k] + sum_k basis2[v, c, k] coef2[b, k]

The bases are large (35,709 x 3 x 144 floats = 62 MB for a BFM-sized model) and the batch small, so both
kernels are organised to read each basis row once per call and reuse it for every batch element from cache
(a (b, v, c)-parallel loop would stream the whole basis from memory B times).
"""
import taichi as ti

CHUNK = 256
nd = ti.types.ndarray


@ti.kernel
def linear_combine_fwd(mean: nd(dtype=ti.f32, ndim=2), basis1: nd(dtype=ti.f32, ndim=3), coef1: nd(dtype=ti.f32, ndim=2),
                       basis2: nd(dtype=ti.f32, ndim=3), coef2: nd(dtype=ti.f32, ndim=2), out: nd(dtype=ti.f32, ndim=3)):
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
def linear_combine_bwd(basis: nd(dtype=ti.f32, ndim=3), grad_out: nd(dtype=ti.f32, ndim=3),
                       partial: nd(dtype=ti.f32, ndim=3)):
    """partial[ch, b, k] = sum over the vertices v of chunk ch of sum_c basis[v, c, k] * grad_out[b, v, c].

    The caller sums over chunks (grad_coef = partial.sum(0)): no atomics, deterministic.
    """
    V = grad_out.shape[1]
    B = grad_out.shape[0]
    K = basis.shape[2]
    for ch, b in ti.ndrange(partial.shape[0], B):
        for k in range(K):
            partial[ch, b, k] = 0.0
        for v in range(ch * CHUNK, ti.min(V, (ch + 1) * CHUNK)):
            for c in ti.static(range(3)):
                g = grad_out[b, v, c]
                for k in range(K):
                    partial[ch, b, k] += basis[v, c, k] * g
