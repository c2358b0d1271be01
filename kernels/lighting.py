"""Vertex normals and spherical-harmonics (SH) Lambertian shading, with hand-written adjoints.

Vertex normals (area weighted):
    s[b, v]  = sum over faces t incident to v of  cross(x1 - x0, x2 - x0)   (x_i = verts[b, tris[t, i]])
    n[b, v]  = s / |s|            (n = 0 where |s| = 0: isolated vertices, or only degenerate faces)
Adjoint: g_s = (g_n - n (n . g_n)) / |s|  (0 where |s| = 0), then per face with e1 = x1 - x0, e2 = x2 - x0,
g_f = g_s[i0] + g_s[i1] + g_s[i2]:  g_e1 = e2 x g_f,  g_e2 = g_f x e1,  g_x1 += g_e1,  g_x2 += g_e2,
g_x0 -= g_e1 + g_e2. Both directions GATHER per vertex over its incident faces (a vertex -> face-corner
adjacency in CSR form, `vf_start` / `vf_corner`, built once per mesh by mofa_tk.shading), recomputing each
face's cross product at each of its three corners: no atomics, so the sums are added in a fixed order and
the results are bit-identical run to run on every backend and thread count.

SH shading (see docs/lighting.md): with the real SH basis Y_k(n), k = 0..8 in the order
    1, y, z, x, xy, yz, 3z^2 - 1, xz, x^2 - y^2      (times normalisation constants c_k)
and the Ramamoorthi-Hanrahan clamped-cosine factors A_l = (pi, 2pi/3, pi/4) for bands l = 0, 1, 2,
    H_k(n) = A_l(k) c_k poly_k(n),   E[b, i, c] = sum_k H_k(n[b, i]) sh[b, k, c],   out = albedo * E.
`sh` is (B, 9, 3): the SH coefficients of the incident radiance per colour channel.
"""
import math

import taichi as ti

CHUNK = 256
nd = ti.types.ndarray

PI = math.pi
# real SH normalisation constants (Condon-Shortley phase NOT included: Y_11 = +C1 x)
C0 = 0.5 / math.sqrt(PI)                 # Y_00            = 0.282095
C1 = math.sqrt(3.0 / (4.0 * PI))         # Y_1m            = 0.488603 * (y, z, x)
C2 = 0.5 * math.sqrt(15.0 / PI)          # Y_2-2, 2-1, 21  = 1.092548 * (xy, yz, xz)
C20 = 0.25 * math.sqrt(5.0 / PI)         # Y_20            = 0.315392 * (3z^2 - 1)
C22 = 0.25 * math.sqrt(15.0 / PI)        # Y_22            = 0.546274 * (x^2 - y^2)
# Ramamoorthi & Hanrahan (2001) clamped-cosine convolution factors
A0 = PI
A1 = 2.0 * PI / 3.0
A2 = PI / 4.0
# folded constants H_k = K_k * poly_k(n)
K0 = A0 * C0
K1 = A1 * C1
K2 = A2 * C2
K20 = A2 * C20
K22 = A2 * C22


# ------------------------------------------------------------------------------------------ normals
@ti.func
def _vec(x: ti.template(), b, v):
    return ti.Vector([x[b, v, 0], x[b, v, 1], x[b, v, 2]])


@ti.func
def _face_edges(verts: ti.template(), tris: ti.template(), b, f):
    """Corner 0 and the edges e1 = x1 - x0, e2 = x2 - x0 of face f in batch element b."""
    x0 = _vec(verts, b, tris[f, 0])
    return x0, _vec(verts, b, tris[f, 1]) - x0, _vec(verts, b, tris[f, 2]) - x0


@ti.kernel
def normals_fwd(verts: nd(dtype=ti.f32, ndim=3),                      # (B V 3) f32
                tris: nd(dtype=ti.i32, ndim=2),                       # (T 3) i32
                vf_start: nd(dtype=ti.i32, ndim=1),                   # (V + 1) i32 CSR offsets
                vf_corner: nd(dtype=ti.i32, ndim=1),                  # (3 T) i32 corners 3 f + k
                acc: nd(dtype=ti.f32, ndim=3),                        # (B V 3) f32 output: unnormalised sums
                out: nd(dtype=ti.f32, ndim=3)):                       # (B V 3) f32 output: unit normals
    """acc[b, v] = sum of cross(e1, e2) over the faces incident to v (gathered in CSR order); out = acc / |acc|
    (0 where |acc| = 0). vf_corner holds 3 f + k for corner k of face f."""
    for v in range(verts.shape[1]):
        for b in range(verts.shape[0]):  # batch innermost: no integer div/mod per element
            s = ti.Vector([0.0, 0.0, 0.0])
            for q in range(vf_start[v], vf_start[v + 1]):
                _, e1, e2 = _face_edges(verts, tris, b, vf_corner[q] // 3)
                s += e1.cross(e2)
            l2 = s.dot(s)
            inv = 0.0
            if l2 > 0.0:
                inv = 1.0 / ti.sqrt(l2)
            for c in ti.static(range(3)):
                acc[b, v, c] = s[c]
                out[b, v, c] = s[c] * inv


@ti.kernel
def normalize_bwd(acc: nd(dtype=ti.f32, ndim=3),                      # (B V 3) f32 unnormalised sums
                  grad_out: nd(dtype=ti.f32, ndim=3),                 # (B V 3) f32 d loss / d normals
                  grad_acc: nd(dtype=ti.f32, ndim=3)):                # (B V 3) f32 output
    """grad_acc = (g - n (n . g)) / |acc| with n = acc / |acc|; 0 where |acc| = 0."""
    for v in range(acc.shape[1]):
        for b in range(acc.shape[0]):  # batch innermost: no integer div/mod per element
            s = _vec(acc, b, v)
            g = _vec(grad_out, b, v)
            l2 = s.dot(s)
            r = ti.Vector([0.0, 0.0, 0.0])
            if l2 > 0.0:
                inv = 1.0 / ti.sqrt(l2)
                n = s * inv
                r = (g - n * n.dot(g)) * inv
            for c in ti.static(range(3)):
                grad_acc[b, v, c] = r[c]


@ti.kernel
def face_normal_bwd(verts: nd(dtype=ti.f32, ndim=3),                  # (B V 3) f32
                    tris: nd(dtype=ti.i32, ndim=2),                   # (T 3) i32
                    vf_start: nd(dtype=ti.i32, ndim=1),               # (V + 1) i32
                    vf_corner: nd(dtype=ti.i32, ndim=1),              # (3 T) i32
                    grad_acc: nd(dtype=ti.f32, ndim=3),               # (B V 3) f32 d loss / d sums
                    grad_verts: nd(dtype=ti.f32, ndim=3)):            # (B V 3) f32, zero on entry
    """grad_verts[b, v] = adjoint of the face cross products at v's corners (gathered in CSR order)."""
    for v in range(verts.shape[1]):
        for b in range(verts.shape[0]):  # batch innermost: no integer div/mod per element
            g = ti.Vector([0.0, 0.0, 0.0])
            for q in range(vf_start[v], vf_start[v + 1]):
                code = vf_corner[q]
                f = code // 3
                k = code - 3 * f
                _, e1, e2 = _face_edges(verts, tris, b, f)
                gf = _vec(grad_acc, b, tris[f, 0]) + _vec(grad_acc, b, tris[f, 1]) + _vec(grad_acc, b, tris[f, 2])
                # d/d e1 of gf . (e1 x e2) = e2 x gf ;  d/d e2 = gf x e1;  x1 gets g_e1, x2 g_e2, x0 -(both)
                g1 = e2.cross(gf)
                g2 = gf.cross(e1)
                if k == 1:
                    g += g1
                elif k == 2:
                    g += g2
                else:
                    g -= g1 + g2
            for c in ti.static(range(3)):
                grad_verts[b, v, c] = g[c]


# ------------------------------------------------------------------------------------------ SH shading
@ti.func
def sh_basis(x, y, z):
    """The 9 irradiance basis functions H_k(n) = A_l c_k poly_k(n) (see module docstring)."""
    return ti.Vector([K0, K1 * y, K1 * z, K1 * x, K2 * x * y, K2 * y * z, K20 * (3.0 * z * z - 1.0), K2 * x * z,
                      K22 * (x * x - y * y)])


@ti.kernel
def sh_shade_fwd(normals: nd(dtype=ti.f32, ndim=3),                   # (B N 3) f32 unit normals
                 albedo: nd(dtype=ti.f32, ndim=3),                    # (1 or B, N, 3) f32
                 sh: nd(dtype=ti.f32, ndim=3),                        # (B 9 3) f32 SH radiance
                 out: nd(dtype=ti.f32, ndim=3)):                      # (B N 3) f32 output colours
    """out[b, i, c] = albedo[b', i, c] * sum_k H_k(normals[b, i]) sh[b, k, c];  b' = b, or 0 when albedo has batch 1."""
    shared = albedo.shape[0] == 1
    for i in range(normals.shape[1]):
        for b in range(normals.shape[0]):  # batch innermost: no integer div/mod per element
            H = sh_basis(normals[b, i, 0], normals[b, i, 1], normals[b, i, 2])
            ba = b
            if shared:
                ba = 0
            for c in ti.static(range(3)):
                e = 0.0
                for k in ti.static(range(9)):
                    e += H[k] * sh[b, k, c]
                out[b, i, c] = albedo[ba, i, c] * e


@ti.kernel
def sh_shade_bwd_points(normals: nd(dtype=ti.f32, ndim=3),            # (B N 3) f32
                        albedo: nd(dtype=ti.f32, ndim=3),             # (1 or B, N, 3) f32
                        sh: nd(dtype=ti.f32, ndim=3),                 # (B 9 3) f32
                        grad_out: nd(dtype=ti.f32, ndim=3),           # (B N 3) f32
                        grad_normals: nd(dtype=ti.f32, ndim=3),       # (B N 3) f32 output
                        grad_albedo: nd(dtype=ti.f32, ndim=3)):       # (B N 3) f32 output
    """Per-point adjoints: grad_albedo[b, i, c] = g * E  (per batch element, (B, N, 3); the caller sums
    over b for a shared albedo) and grad_normals[b, i] = sum_c g * albedo * dE_c/dn."""
    shared = albedo.shape[0] == 1
    for i in range(normals.shape[1]):
        for b in range(normals.shape[0]):  # batch innermost: no integer div/mod per element
            x = normals[b, i, 0]
            y = normals[b, i, 1]
            z = normals[b, i, 2]
            H = sh_basis(x, y, z)
            ba = b
            if shared:
                ba = 0
            gx = 0.0
            gy = 0.0
            gz = 0.0
            for c in ti.static(range(3)):
                e = 0.0
                for k in ti.static(range(9)):
                    e += H[k] * sh[b, k, c]
                g = grad_out[b, i, c]
                grad_albedo[b, i, c] = g * e
                ge = g * albedo[ba, i, c]
                # dE/dx, dE/dy, dE/dz from the polynomial terms
                s1 = sh[b, 1, c]
                s2 = sh[b, 2, c]
                s3 = sh[b, 3, c]
                s4 = sh[b, 4, c]
                s5 = sh[b, 5, c]
                s6 = sh[b, 6, c]
                s7 = sh[b, 7, c]
                s8 = sh[b, 8, c]
                dx = K1 * s3 + K2 * (y * s4 + z * s7) + 2.0 * K22 * x * s8
                dy = K1 * s1 + K2 * (x * s4 + z * s5) - 2.0 * K22 * y * s8
                dz = K1 * s2 + K2 * (y * s5 + x * s7) + 6.0 * K20 * z * s6
                gx += ge * dx
                gy += ge * dy
                gz += ge * dz
            grad_normals[b, i, 0] = gx
            grad_normals[b, i, 1] = gy
            grad_normals[b, i, 2] = gz


@ti.kernel
def sh_shade_bwd_sh(normals: nd(dtype=ti.f32, ndim=3),                # (B N 3) f32
                    albedo: nd(dtype=ti.f32, ndim=3),                 # (1 or B, N, 3) f32
                    grad_out: nd(dtype=ti.f32, ndim=3),               # (B N 3) f32
                    partial: nd(dtype=ti.f32, ndim=4)):               # (B chunks 9 3) f32 output: per-chunk sums
    """partial[b, ch, k, c] = sum over the points i of chunk ch of H_k(n[b, i]) albedo[b', i, c] grad_out[b, i, c].

    The caller sums over the chunks of CHUNK points (grad_sh = partial.sum(1)): no atomics, deterministic.
    """
    shared = albedo.shape[0] == 1
    N = normals.shape[1]
    for b, ch in ti.ndrange(normals.shape[0], partial.shape[1]):  # a local matrix inside a serial loop is unsupported by SPIR-V codegen
        ba = b
        if shared:
            ba = 0
        acc = ti.Matrix.zero(ti.f32, 9, 3)
        for i in range(ch * CHUNK, ti.min(N, (ch + 1) * CHUNK)):
            H = sh_basis(normals[b, i, 0], normals[b, i, 1], normals[b, i, 2])
            for c in ti.static(range(3)):
                ge = grad_out[b, i, c] * albedo[ba, i, c]
                for k in ti.static(range(9)):
                    acc[k, c] += H[k] * ge
        for k in ti.static(range(9)):
            for c in ti.static(range(3)):
                partial[b, ch, k, c] = acc[k, c]
