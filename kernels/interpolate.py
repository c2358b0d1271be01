"""Barycentric interpolation of vertex attributes at rasterized pixels, and its adjoint.

attr has a leading dimension of 1 (shared by the batch) or B. Pixels with triangle id 0 get zeros.
"""
import taichi as ti

nd = ti.types.ndarray


@ti.kernel
def interpolate_fwd(attr: nd(dtype=ti.f32, ndim=3), rast: nd(dtype=ti.f32, ndim=4), tris: nd(dtype=ti.i32, ndim=2),
                    out: nd(dtype=ti.f32, ndim=4)):
    shared = attr.shape[0] == 1
    for i, j in ti.ndrange(out.shape[1], out.shape[2]):
        for b in range(out.shape[0]):  # batch innermost: no integer div/mod per element
            tid = ti.cast(rast[b, i, j, 3], ti.i32)
            ba = 0 if shared else b
            if tid > 0:
                t = tid - 1
                u, v = rast[b, i, j, 0], rast[b, i, j, 1]
                w0 = 1.0 - u - v
                v0, v1, v2 = tris[t, 0], tris[t, 1], tris[t, 2]
                for ch in range(out.shape[3]):
                    out[b, i, j, ch] = w0 * attr[ba, v0, ch] + u * attr[ba, v1, ch] + v * attr[ba, v2, ch]
            else:
                for ch in range(out.shape[3]):
                    out[b, i, j, ch] = 0.0


@ti.kernel
def interpolate_bwd(attr: nd(dtype=ti.f32, ndim=3), rast: nd(dtype=ti.f32, ndim=4), tris: nd(dtype=ti.i32, ndim=2),
                    grad_out: nd(dtype=ti.f32, ndim=4), grad_attr: nd(dtype=ti.f32, ndim=3),
                    grad_rast: nd(dtype=ti.f32, ndim=4), want_attr: ti.i32):
    """grad_attr (zeroed) += scattered bary * grad_out; grad_rast[..., 0:2] = d out / d (u, v); [..., 2:4] = 0."""
    shared = attr.shape[0] == 1
    for i, j in ti.ndrange(grad_out.shape[1], grad_out.shape[2]):
        for b in range(grad_out.shape[0]):  # batch innermost: no integer div/mod per element
            tid = ti.cast(rast[b, i, j, 3], ti.i32)
            gu, gv = 0.0, 0.0
            if tid > 0:
                t = tid - 1
                ba = 0 if shared else b
                u, v = rast[b, i, j, 0], rast[b, i, j, 1]
                w0 = 1.0 - u - v
                v0, v1, v2 = tris[t, 0], tris[t, 1], tris[t, 2]
                for ch in range(grad_out.shape[3]):
                    g = grad_out[b, i, j, ch]
                    a0 = attr[ba, v0, ch]
                    gu += g * (attr[ba, v1, ch] - a0)
                    gv += g * (attr[ba, v2, ch] - a0)
                    if want_attr != 0:
                        ti.atomic_add(grad_attr[ba, v0, ch], w0 * g)
                        ti.atomic_add(grad_attr[ba, v1, ch], u * g)
                        ti.atomic_add(grad_attr[ba, v2, ch], v * g)
            grad_rast[b, i, j, 0] = gu
            grad_rast[b, i, j, 1] = gv
            grad_rast[b, i, j, 2] = 0.0
            grad_rast[b, i, j, 3] = 0.0
