"""`Problem`: the decoder, the target crop and landmarks, and the loss evaluations every fitting stage shares;
the code update of a step (`apply_delta`) and the prior's Gauss-Newton matrix (`prior_hessian`)."""
from __future__ import annotations

import math

import torch
from dataclasses import replace

from .. import losses as L
from ..face.decoder import FaceDecoder
from ..ops.shading import SH_BAND_FACTORS
from ..rotation import axis_angle_to_matrix, matrix_to_axis_angle, skew
from .contour import JAW, model_contour

__all__ = ["Problem", "apply_delta", "prior_hessian", "FIT_REG_WEIGHTS", "GN_SAMPLE", "fit_reg_weights"]

#: Prior weights of the fit (`losses.coefficient_regularizer`, times the "reg" term weight 3e-4):
#: Deep3DFaceRecon's shape / expression / reflectance weights plus a weak prior on the illumination offset.
#: Without it the albedo-light scale ambiguity is resolved by the reflectance prior alone, which prefers a
#: globally darker albedo under a brighter light (on 8 synthetic faces the albedo error doubled, to twice
#: that of the mean albedo); with it the fit is also better conditioned (docs/fitting.md).
FIT_REG_WEIGHTS = dict(L.DEFAULT_REG_WEIGHTS, illumination=3.0)


def fit_reg_weights(model, overrides: dict | None = None) -> dict:
    """The prior weights of a fit of `model`: `FIT_REG_WEIGHTS`, then the model's own (``model.meta["fit_prior"]``,
    declared by its loader, e.g. ICT-FaceKit's expression prior), then `overrides` ({block: weight}; the blocks
    not named keep their weights)."""
    out = dict(FIT_REG_WEIGHTS)
    out.update((getattr(model, "meta", None) or {}).get("fit_prior", {}))
    out.update(overrides or {})
    return out


#: About this many vertices (a fixed regular sample of the mesh, of which the visible ones are used) enter
#: the Gauss-Newton matrix; the gradient always uses every visible vertex.
GN_SAMPLE = 2000


class Problem:
    """Decoder, target crop and landmarks, and the loss evaluations every stage shares."""

    def __init__(self, model, dec: FaceDecoder, crop: torch.Tensor, target_lm: torch.Tensor, weights: dict,
                 reg_weights: dict, landmark_weights: torch.Tensor | None, contour: bool = False,
                 dense=None, dense_weight: float = 0.0, depth_weight: float = 0.0):
        self.model = model
        self.dec = dec
        self.layout = dec.code
        self.crop = crop[None]                                    # (1, S, S, 3)
        self.target = target_lm[None]                             # (1, 68, 2)
        self.w = dict(L.DEFAULT_WEIGHTS)
        self.w.update(weights)
        self.w["photo"] = 0.0                                     # the dense (vertex) term only
        self.reg_w = fit_reg_weights(model, reg_weights)
        self.lm_w = landmark_weights
        self.anchor = None        # (weight, {block: (K,) target}) set by the photometric stage
        lm = dec.landmark_index
        self.lm_ok = (dec.landmark_valid & torch.isfinite(target_lm).all(-1))
        self.lm_idx = lm.clamp(min=0)
        # model rows at the landmark vertices (pure torch: the landmark stages never touch the full mesh)
        self.lm_mean, self.lm_S, self.lm_E = self.rows(self.lm_idx)
        self.not_boundary = ~dec.boundary
        # sliding jaw points (`contour`): the candidate vertices' model rows, so a pose's outline is found
        # without the full mesh
        self.contour = model_contour(model) if contour else None
        if self.contour is not None:
            verts = self.contour.vertices
            rows = torch.full((model.n_vertices,), -1, dtype=torch.int64)
            rows[verts] = torch.arange(len(verts))
            self._c_rows = rows[self.contour.candidates.clamp(min=0)]                     # (16, M)
            self._c_model_rows = self.rows(verts)
        # dense term: MediaPipe's mesh points (crop pixels) on the model's vertices (`face.mediapipe_map`)
        self.dense = False
        self.w_depth = 0.0
        if dense is not None and dense_weight > 0:
            target, mp = dense
            target = torch.as_tensor(target, dtype=torch.float32)
            self.dense = True
            self.dense_depth = target[:, 2] if target.shape[1] == 3 else None
            self.w_depth = float(depth_weight) * float(dense_weight) * self.w["landmark"] \
                if self.dense_depth is not None else 0.0
            target = target[:, :2]
            self.dense_idx = mp.vertices.clamp(min=0)
            self.dense_target = target[None]                                  # (1, 478, 2)
            self.dense_w = mp.weight.float()
            self.dense_ok = (mp.vertices >= 0) & (mp.weight > 0) & torch.isfinite(target).all(-1)
            self.w_dense = float(dense_weight) * self.w["landmark"]
            self.d_mean, self.d_S, self.d_E = self.rows(self.dense_idx)
        Aband = SH_BAND_FACTORS
        self.band = torch.tensor([Aband[0]] + [Aband[1]] * 3 + [Aband[2]] * 5)

    # ------------------------------------------------------------------ sliding jaw points
    @torch.no_grad()
    def slide_jaw(self, code: torch.Tensor, R: torch.Tensor | None = None) -> None:
        """Move the 16 jaw landmarks to the outline of `code`'s face for its pose (`contour.Contour.assign`);
        a no-op without a contour. The decoder's landmark vertices follow, so every term sees the same points."""
        if self.contour is None:
            return
        if R is None:
            R = axis_angle_to_matrix(self.layout.split(code.detach())["rotation"])[0]
        R = R.float()
        p, _ = self.project_rows(code.detach(), self._c_model_rows, R)
        self.set_jaw(self.contour.assign(p[self._c_rows], R))

    def set_jaw(self, idx: torch.Tensor) -> None:
        """Use vertices `idx` (16,) int64 for the jaw landmarks `contour.JAW`."""
        self.set_landmark_vertices(torch.tensor(JAW), idx)

    def set_landmark_vertices(self, which: torch.Tensor, idx: torch.Tensor) -> None:
        """Use vertices `idx` (n,) int64 for the iBUG landmarks `which` (n,) (the decoder's follow)."""
        if torch.equal(self.lm_idx[which], idx) and bool(self.dec.landmark_valid[which].all()):
            return
        self.lm_idx = self.lm_idx.clone()
        self.lm_idx[which] = idx
        self.lm_mean, self.lm_S, self.lm_E = self.rows(self.lm_idx)
        # new buffers, not in-place writes: a graph built before this call keeps the tensors it saw
        index, valid = self.dec.landmark_index.clone(), self.dec.landmark_valid.clone()
        index[which] = idx.to(index.device)
        valid[which] = True
        self.dec.landmark_index, self.dec.landmark_valid = index, valid
        self.lm_ok = valid.cpu() & torch.isfinite(self.target[0]).all(-1)

    # ------------------------------------------------------------------ Gauss-Newton sample
    def gn_sample(self):
        """A fixed, regular sample of non-boundary vertices for the Gauss-Newton matrix, with their incident
        faces (so the Jacobian of the vertex normals w.r.t. shape / expression can be assembled).

        Returns dict: idx (n,) vertex indices; t0, t1, t2 (n, d) corner indices of the incident faces
        (padded with face 0) and valid (n, d) bool.
        """
        if getattr(self, "_gn", None) is not None:
            return self._gn
        cand = torch.nonzero(self.not_boundary)[:, 0]
        stride = max(1, math.ceil(len(cand) / GN_SAMPLE))
        idx = cand[::stride]
        t0, t1, t2, valid = self.dec.mesh.incident_faces(idx)
        self._gn = {"idx": idx, "t0": t0, "t1": t1, "t2": t2, "valid": valid}
        return self._gn

    @torch.no_grad()
    def normal_jacobian(self, verts_model: torch.Tensor) -> torch.Tensor:
        """d(unit model-space normal)/d(shape, expression) (n, 3, K_id + K_exp) float32 at every vertex of
        `gn_sample()`, for the area-weighted normals of `vertex_normals`: n = s / |s| with s the sum over the
        incident faces of cross(x1 - x0, x2 - x0), so ds = sum cross(e1, dx2 - dx0) - cross(e2, dx1 - dx0)
        (e1 = x1 - x0, e2 = x2 - x0; the basis differences dx are constant and cached)."""
        gs = self.gn_sample()
        if "dE1" not in gs:
            model = self.model
            basis = torch.cat([model.shape_basis * model.shape_std, model.expr_basis * model.expr_std], -1)
            m, d = gs["t0"].shape
            valid = gs["valid"].float()[..., None, None]
            b0 = basis[gs["t0"]]
            # (m, d * 3, K): rows (face, coordinate) of the basis differences along the two edges
            gs["dE1"] = ((basis[gs["t1"]] - b0) * valid).reshape(m, 3 * d, -1)
            gs["dE2"] = ((basis[gs["t2"]] - b0) * valid).reshape(m, 3 * d, -1)
        v = verts_model.float()
        valid = gs["valid"].float()[..., None]
        x0 = v[gs["t0"]]
        e1 = (v[gs["t1"]] - x0) * valid                                             # (m, d, 3)
        e2 = (v[gs["t2"]] - x0) * valid
        s = torch.linalg.cross(e1, e2).sum(1)                                       # (m, 3)
        m = e1.shape[0]
        # sum_d skew(e1_d) @ dE2_d  as one batched (3, 3d) @ (3d, K) product per vertex
        S1 = skew(e1).permute(0, 2, 1, 3).reshape(m, 3, -1)
        S2 = skew(e2).permute(0, 2, 1, 3).reshape(m, 3, -1)
        ds = torch.bmm(S1, gs["dE2"]) - torch.bmm(S2, gs["dE1"])                    # (m, 3, K)
        norm = s.norm(dim=-1).clamp(min=1e-12)
        n = s / norm[:, None]
        Pn = (torch.eye(3) - n[:, :, None] * n[:, None, :]) / norm[:, None, None]
        return torch.bmm(Pn, ds)

    # ------------------------------------------------------------------ landmark-only model
    def rows(self, idx: torch.Tensor):
        """The model's rows at vertices `idx` (n,): mean (n, 3), scaled shape basis (n, 3, K_id) and expression
        basis (n, 3, K_exp), so points of the mesh can be evaluated without the whole mesh."""
        m = self.model
        return m.mean_shape[idx], m.shape_basis[idx] * m.shape_std, m.expr_basis[idx] * m.expr_std

    def project_rows(self, code: torch.Tensor, rows, R: torch.Tensor | None = None):
        """(n, 2) pixels and (n, 3) model-space positions of the vertices of `rows` (`Problem.rows`) for
        `code` (pure torch); R: optional (3, 3) rotation used instead of the code's."""
        x, v = self.camera_rows(code, rows, R)
        return self.dec.project_points(x[None])[0], v

    def camera_rows(self, code: torch.Tensor, rows, R: torch.Tensor | None = None):
        """(n, 3) camera-space and (n, 3) model-space positions (mm) of the vertices of `rows` for `code`."""
        mean, S, E = rows
        bl = self.layout.split(code)
        v = mean + S @ bl["shape"][0] + E @ bl["expression"][0]
        if R is None:
            R = axis_angle_to_matrix(bl["rotation"])[0]
        _, t = self.dec.camera_transform(R[None], bl["translation"])
        return v @ R.T + t[0], v

    def landmark_points(self, code: torch.Tensor, R: torch.Tensor | None = None):
        """(68, 2) projected landmarks and (68, 3) model-space landmark vertices (pure torch)."""
        return self.project_rows(code, (self.lm_mean, self.lm_S, self.lm_E), R)

    def dense_points(self, code: torch.Tensor, R: torch.Tensor | None = None):
        """(478, 3) camera-space dense-term vertices, mm (pure torch); only with a dense term."""
        return self.camera_rows(code, (self.d_mean, self.d_S, self.d_E), R)[0]

    def depth_scale(self, z_cam: torch.Tensor):
        """(centred MediaPipe depths a, centred model depths b in pixels, best scale alpha >= 0 of b onto -a...)
        for the depth term: MediaPipe's z (pixels, smaller = nearer) against k (Z - mean Z), k = f / depth."""
        ok = self.dense_ok
        zt = self.dense_depth[ok]
        Z = z_cam[ok]
        k = float(self.dec.focal[0]) / (-Z.mean()).clamp(min=1.0)
        a = zt - zt.mean()
        b = k * (Z - Z.mean())
        alpha = (-(a * b).sum() / (b * b).sum().clamp(min=1e-12)).clamp(min=0.0)
        return a, b, alpha, k

    def depth_term(self, z_cam: torch.Tensor) -> torch.Tensor:
        """w_depth * sum_i w_i (a_i + alpha b_i)^2 / n over MediaPipe's points (`depth_scale`): the relative depths
        of the dense vertices against MediaPipe's z, up to the scale alpha (MediaPipe's z scale is loose)."""
        a, b, alpha, _ = self.depth_scale(z_cam)
        w = self.dense_w[self.dense_ok]
        return self.w_depth * (w * (a + alpha.detach() * b) ** 2).sum() / max(int(self.dense_ok.sum()), 1)

    def dense_term(self, p: torch.Tensor) -> torch.Tensor:
        """w_dense * sum_i w_i |p_i - t_i|^2 / n_valid over MediaPipe's points; p (478, 2) pixels."""
        return self.w_dense * L.landmark_loss(p[None], self.dense_target, self.dense_w, valid=self.dense_ok)

    def landmark_loss(self, code, R=None, reg_blocks=("shape", "expression")):
        """Landmark term (+ the dense term) + prior on `reg_blocks` (the loss of the pose and landmark stages),
        with terms."""
        p, _ = self.landmark_points(code, R)
        terms = {"landmark": self.w["landmark"] * L.landmark_loss(p[None], self.target, self.lm_w,
                                                                  valid=self.lm_ok)}
        if self.dense:
            x = self.dense_points(code, R)
            terms["dense"] = self.dense_term(self.dec.project_points(x[None])[0])
            if self.w_depth:
                terms["depth"] = self.depth_term(x[:, 2])
        bl = self.layout.split(code)
        rw = {k: v for k, v in self.reg_w.items() if k in reg_blocks}
        if rw and self.w["reg"]:
            terms["reg"] = self.w["reg"] * L.coefficient_regularizer(bl, rw)
        return sum(terms.values()), terms

    # ------------------------------------------------------------------ full model (dense stage)
    def geometry(self, code: torch.Tensor, R: torch.Tensor | None = None):
        """The decoder's vertex stages (`FaceDecoder.geometry` and `shading`) as a vertex-only `Render` without
        visibility (the dense loss needs no image). R: optional (3, 3) rotation used instead of the code's
        rotation block (the LM path perturbs it multiplicatively)."""
        g = self.dec.geometry(code, None if R is None else R[None])
        return self.dec.vertex_render(g, self.dec.shading(g))

    @torch.no_grad()
    def visibility(self, g) -> torch.Tensor:
        """(1, V) bool, the decoder's visibility test (z-buffer from `rasterize`)."""
        return self.dec.visibility(g.geometry)

    @torch.no_grad()
    def dense_eval(self, code: torch.Tensor):
        """(loss, terms) of MoFA's loss at `code` with the visibility of that code (no gradient)."""
        g = self.geometry(code)
        return self.dense_loss(g, self.visibility(g))

    def anchor_term(self, g):
        """w_reg * w_anchor * |c - c_anchor|^2 over the anchored blocks (shape / expression held near the landmark
        stage's estimate during the photometric stage), or None when nothing is anchored."""
        if not self.anchor:
            return None
        w, targets = self.anchor
        return self.w["reg"] * w * sum(((g.blocks[b][0] - t) ** 2).sum() for b, t in targets.items())

    def dense_loss(self, g, vis: torch.Tensor):
        """MoFA's loss (`losses.mofa_loss`) on the vertex render `g` with a given visibility."""
        total, terms = L.mofa_loss(replace(g, visibility=vis), self.crop, self.target, weights=self.w,
                                   reg_weights=self.reg_w, landmark_weights=self.lm_w, robust=True)
        if self.dense:
            terms = dict(terms, dense=self.dense_term(g["verts_2d"][0, self.dense_idx]))
            total = total + terms["dense"]
            if self.w_depth:
                terms["depth"] = self.depth_term(g["verts_cam"][0, self.dense_idx, 2])
                total = total + terms["depth"]
        extra = self.anchor_term(g)
        if extra is not None:
            terms = dict(terms, anchor=extra)
            total = total + extra
        return total, terms


def prior_hessian(prob, blocks, reg_blocks):
    sizes = prob.layout.sizes
    diag = []
    for b in blocks:
        w = 2.0 * prob.w["reg"] * prob.reg_w.get(b, 0.0) if b in reg_blocks else 0.0
        diag.append(torch.full((sizes[b],), w, dtype=torch.float64))
    return torch.diag(torch.cat(diag))


def apply_delta(prob, code, delta, blocks):
    """New flat code: rotation by left increment exp([dw]x) R, the other blocks additively."""
    layout = prob.layout
    out = code.detach().clone()
    off = 0
    for b in blocks:
        n = layout.sizes[b]
        d = delta[off:off + n]
        if b == "rotation":
            R = axis_angle_to_matrix(out[:, layout.slices["rotation"]].double())[0]
            Rn = axis_angle_to_matrix(d[None])[0] @ R
            out[0, layout.slices["rotation"]] = matrix_to_axis_angle(Rn)
        else:
            out[0, layout.slices[b]] += d.float()
        off += n
    return out
