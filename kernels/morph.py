"""Generative face model: vertices (or albedo) as mean + two linear bases.

    out[b, v, c] = mean[v, c] + sum_k basis1[v, c, k] coef1[b, k] + sum_k basis2[v, c, k] coef2[b, k]

The adjoint is a reduction over vertices; it is split into chunks of vertices so it has B*chunks*K
parallel tasks (enough for a GPU) and each chunk adds its partial sum with one atomic per (b, k).
"""
import taichi as ti

CHUNK = 256
nd = ti.types.ndarray


@ti.kernel
def linear_combine_fwd(mean: nd(dtype=ti.f32, ndim=2), basis1: nd(dtype=ti.f32, ndim=3), coef1: nd(dtype=ti.f32, ndim=2),
                       basis2: nd(dtype=ti.f32, ndim=3), coef2: nd(dtype=ti.f32, ndim=2), out: nd(dtype=ti.f32, ndim=3)):
    for b, v, c in ti.ndrange(out.shape[0], out.shape[1], 3):
        acc = mean[v, c]
        for k in range(basis1.shape[2]):
            acc += basis1[v, c, k] * coef1[b, k]
        for k in range(basis2.shape[2]):
            acc += basis2[v, c, k] * coef2[b, k]
        out[b, v, c] = acc


@ti.kernel
def linear_combine_bwd(basis: nd(dtype=ti.f32, ndim=3), grad_out: nd(dtype=ti.f32, ndim=3),
                       grad_coef: nd(dtype=ti.f32, ndim=2)):
    """grad_coef[b, k] += sum_{v, c} basis[v, c, k] * grad_out[b, v, c]  (grad_coef must start at zero)."""
    V = grad_out.shape[1]
    n_chunks = (V + CHUNK - 1) // CHUNK
    for b, ch, k in ti.ndrange(grad_out.shape[0], n_chunks, basis.shape[2]):
        acc = 0.0
        for v in range(ch * CHUNK, ti.min(V, (ch + 1) * CHUNK)):
            for c in ti.static(range(3)):
                acc += basis[v, c, k] * grad_out[b, v, c]
        ti.atomic_add(grad_coef[b, k], acc)
