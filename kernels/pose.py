"""Rigid pose, perspective projection and clip-space transform of vertices.

`affine_*` applies a per-batch affine map  out[b, v, r] = sum_c M[b, r, c] x[b, v, c] + M[b, r, 3]
(R = 3 rows for a rigid transform, R = 4 for the clip-space projection matrix).
`project_*` is the pinhole projection in OpenGL camera space (camera looks along -z):
    depth = -z,  u = cx + fx * x / depth,  v = cy - fy * y / depth   (pixels, v down).
"""
import taichi as ti

CHUNK = 256
nd = ti.types.ndarray


@ti.kernel
def affine_fwd(M: nd(dtype=ti.f32, ndim=3),                           # (B R 4) f32 affine rows
               x: nd(dtype=ti.f32, ndim=3),                           # (B V 3) f32 points
               out: nd(dtype=ti.f32, ndim=3)):                        # (B V R) f32 output
    for v in range(out.shape[1]):
        for b in range(out.shape[0]):  # batch innermost: no integer div/mod per element
            x0, x1, x2 = x[b, v, 0], x[b, v, 1], x[b, v, 2]
            for r in range(out.shape[2]):
                out[b, v, r] = M[b, r, 0] * x0 + M[b, r, 1] * x1 + M[b, r, 2] * x2 + M[b, r, 3]


@ti.kernel
def affine_bwd(M: nd(dtype=ti.f32, ndim=3),                           # (B R 4) f32
               x: nd(dtype=ti.f32, ndim=3),                           # (B V 3) f32
               grad_out: nd(dtype=ti.f32, ndim=3),                    # (B V R) f32
               grad_x: nd(dtype=ti.f32, ndim=3),                      # (B V 3) f32 output
               partial: nd(dtype=ti.f32, ndim=4)):                    # (chunks B R 4) f32 output: per-chunk d loss / d M
    """grad_x = M[:, :, :3]^T grad_out;  partial[ch, b, r, c] = sum over the vertices v of chunk ch of
    grad_out[b, v, r] [x, 1][b, v, c]. The caller sums over chunks (grad_M = partial.sum(0)): no atomics."""
    R = grad_out.shape[2]
    for v in range(x.shape[1]):
        for b in range(x.shape[0]):  # batch innermost: no integer div/mod per element
            for c in ti.static(range(3)):
                acc = 0.0
                for r in range(R):
                    acc += M[b, r, c] * grad_out[b, v, r]
                grad_x[b, v, c] = acc
    V = x.shape[1]
    for ch, r in ti.ndrange(partial.shape[0], R):
        for b in range(x.shape[0]):  # batch innermost: no integer div/mod per element
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            for v in range(ch * CHUNK, ti.min(V, (ch + 1) * CHUNK)):
                g = grad_out[b, v, r]
                s0 += g * x[b, v, 0]
                s1 += g * x[b, v, 1]
                s2 += g * x[b, v, 2]
                s3 += g
            partial[ch, b, r, 0] = s0
            partial[ch, b, r, 1] = s1
            partial[ch, b, r, 2] = s2
            partial[ch, b, r, 3] = s3


@ti.kernel
def project_fwd(x: nd(dtype=ti.f32, ndim=3),                          # (B V 3) f32 camera space, mm
                intr: nd(dtype=ti.f32, ndim=2),                       # (B 4) f32 fx, fy, cx, cy (pixels)
                pix: nd(dtype=ti.f32, ndim=3),                        # (B V 2) f32 output pixels
                depth: nd(dtype=ti.f32, ndim=2)):                     # (B V) f32 output depth, mm
    """intr[b] = (fx, fy, cx, cy)."""
    for v in range(x.shape[1]):
        for b in range(x.shape[0]):  # batch innermost: no integer div/mod per element
            d = -x[b, v, 2]
            pix[b, v, 0] = intr[b, 2] + intr[b, 0] * x[b, v, 0] / d
            pix[b, v, 1] = intr[b, 3] - intr[b, 1] * x[b, v, 1] / d
            depth[b, v] = d


@ti.kernel
def project_bwd(x: nd(dtype=ti.f32, ndim=3),                          # (B V 3) f32
                intr: nd(dtype=ti.f32, ndim=2),                       # (B 4) f32
                grad_pix: nd(dtype=ti.f32, ndim=3),                   # (B V 2) f32
                grad_depth: nd(dtype=ti.f32, ndim=2),                 # (B V) f32
                grad_x: nd(dtype=ti.f32, ndim=3)):                    # (B V 3) f32 output
    for v in range(x.shape[1]):
        for b in range(x.shape[0]):  # batch innermost: no integer div/mod per element
            d = -x[b, v, 2]
            gu = grad_pix[b, v, 0]
            gv = grad_pix[b, v, 1]
            fx = intr[b, 0]
            fy = intr[b, 1]
            grad_x[b, v, 0] = gu * fx / d
            grad_x[b, v, 1] = -gv * fy / d
            # d(u)/d(z) = fx * x / d^2 (since d = -z), d(v)/d(z) = -fy * y / d^2, d(depth)/d(z) = -1
            grad_x[b, v, 2] = gu * fx * x[b, v, 0] / (d * d) - gv * fy * x[b, v, 1] / (d * d) - grad_depth[b, v]
