"""Analysis-by-synthesis fitting of one photo: `fit(image, model, landmarks=None) -> FitResult`.

Coarse to fine (docs/fitting.md has the measurements behind every choice):

1. **crop**      landmarks (detected with `landmarks.detect`, or given) place a square crop of the photo at the
                 decoder's resolution (`landmarks.crop_face`, scale + translation only); everything below
                 works in that crop, with `FaceDecoder`'s camera (focal 1015 px at 224).
2. **pose**      closed-form weak-perspective pose from the inner 51 landmarks (least-squares affine camera,
                 orthonormalised), then Levenberg-Marquardt on the perspective landmark error (6 parameters).
3. **landmarks** pose + shape + expression from the 68 landmarks with the statistical prior (LM).
4. **appearance** closed-form illumination and reflectance: with the geometry fixed the vertex colours are
                 linear in the SH coefficients and in the reflectance coefficients, so two alternations of
                 regularised linear least squares on the visible vertices initialise both blocks.
5. **photometric** all blocks (pose, shape, expression, reflectance, illumination) on MoFA's loss
                 (`losses.mofa_loss`: dense l2,1 photometric term at the visible vertices + landmarks + prior;
                 Deep3DFaceRecon's term weights, prior `FIT_REG_WEIGHTS`), by Levenberg-Marquardt (default)
                 or Adam.

Levenberg-Marquardt here uses the EXACT gradient of the loss (autograd through the mofa_tk ops) and a
Gauss-Newton matrix assembled in closed form on a fixed sample of about 2,000 vertices: residual Jacobian =
image gradient x d(projection)/d(code) - d(vertex colour)/d(code), the colour part including the SH shading's
dependence on the normals and the normals' dependence on shape / expression (area-weighted normals,
differentiated exactly; refreshed every 5 iterations), the l2,1 norm majorised by iteratively reweighted
least squares. Its fixed points are those of the true loss. The rotation is updated multiplicatively
(R <- exp([dw]x) R), so the step never meets the axis-angle singularities.

No random numbers are drawn and no op sums with float atomics: repeated fits are bit-identical.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .. import losses as L
from ..face.code import BLOCKS, Code
from ..face.decoder import FaceDecoder
from ..errors import InputError
from ..ops.geometry import morph
from ..rotation import axis_angle_to_matrix, matrix_to_axis_angle, skew
from ..landmarks import DEFAULT_CROP_SCALE, CropTransform, crop_face
from ..ops.shading import SH_BAND_FACTORS, SH_CONSTANTS, sh_basis, sh_basis_jacobian

__all__ = ["fit", "FitResult", "STAGES", "DEFAULT_ITERS", "OPTIMIZERS", "FIT_REG_WEIGHTS", "matrix_to_axis_angle"]

#: Stages in the order they run (keys of FitResult.losses / timings / iterations).
STAGES = ("pose", "landmarks", "appearance", "photometric")
#: Maximum iterations per stage (each stops earlier once converged). The Adam schedule needs many more.
DEFAULT_ITERS = {"lm": {"pose": 15, "landmarks": 25, "photometric": 30},
                 "adam": {"pose": 150, "landmarks": 300, "photometric": 150}}
OPTIMIZERS = ("lm", "adam")
#: Adam learning rates per code block (units of the block: rad, mm, std, SH) used by optimizer="adam".
ADAM_LR = {"rotation": 5e-3, "translation": 1.0, "shape": 5e-2, "expression": 5e-2, "reflectance": 5e-2,
           "illumination": 1e-2}
#: Prior weights of the fit (`losses.coefficient_regularizer`, times the "reg" term weight 3e-4):
#: Deep3DFaceRecon's shape / expression / reflectance weights plus a weak prior on the illumination offset.
#: Without it the albedo-light scale ambiguity is resolved by the reflectance prior alone, which prefers a
#: globally darker albedo under a brighter light (on 8 synthetic faces the albedo error doubled, to twice
#: that of the mean albedo); with it the fit is also better conditioned (docs/fitting.md).
FIT_REG_WEIGHTS = dict(L.DEFAULT_REG_WEIGHTS, illumination=3.0)
#: Inner 51 iBUG landmarks (brows, nose, eyes, mouth): the jaw line is left out of the closed-form pose.
_INNER = np.arange(17, 68)
#: Floor of the residual norm in the IRLS weights of the l2,1 term (colour units in [0, 1]).
_IRLS_FLOOR = 0.005
#: About this many vertices (a fixed regular sample of the mesh, of which the visible ones are used) enter
#: the Gauss-Newton matrix; the gradient always uses every visible vertex.
_GN_SAMPLE = 2000
#: Include the normals' dependence on shape / expression in the Gauss-Newton matrix.
_GN_NORMALS = True
#: ... recomputed every this many Gauss-Newton matrices (it changes slowly; the gradient is always exact).
_GN_NORMALS_EVERY = 5


# ============================================================================================ rotations
def _label(name: str):
    """torch.profiler label (a no-op unless a profiler is recording); benchmarks/bench_fit.py uses them."""
    return torch.profiler.record_function(name)


# ============================================================================================ result
@dataclass
class FitResult:
    """What `fit` returns. Arrays are CPU tensors (float32 unless said otherwise).

    code:            (N,) the fitted flat code (layout `Code.for_model(model)`, see `blocks`)
    blocks:          OrderedDict {rotation (3,) rad axis-angle, translation (3,) mm, shape (K_id,),
                     expression (K_exp,), reflectance (K_alb,) std units, illumination (27,) SH offset to
                     the ambient light, channel-major}
    verts_model:     (V, 3) mm, the fitted mesh in model space (shape + expression, no pose)
    verts_cam:       (V, 3) mm, the same mesh in OpenGL camera space (camera looks along -z); the camera is
                     the crop's pinhole camera, i.e. the photo's camera with focal `camera["focal"]` px
    triangles:       (T, 3) int32
    albedo:          (V, 3) fitted reflectance; vertex_colors (V, 3) shaded colours (linear, unclamped)
    image:           (S, S, 3) the render of the fitted code composited over the crop (S = crop size)
    mask:            (S, S, 1) render coverage in the crop; crop (S, S, 3) the input crop in [0, 1]
    landmarks:       (68, 2) fitted landmarks in ORIGINAL image pixels (u right, v down, centres at +0.5;
                     NaN where the model has no such landmark)
    target_landmarks:(68, 2) the landmarks the fit used (detected or given), original image pixels
    landmarks_crop / target_landmarks_crop: the same in crop pixels
    transform:       `CropTransform` original -> crop pixels
    camera:          {"focal", "principal"} of the original image in pixels, {"focal_crop",
                     "principal_crop"}, "distance" (mm), "image_size" (H, W) of the original image
    losses:          {stage: {"initial", "final" (total loss), "terms" {name: weighted value at the end}}};
                     "photometric" also has "history" (loss per iteration) and "times" (s since the stage began)
    timings:         {stage or step: seconds, "total": seconds}
    iterations:      {stage: iterations run}
    converged:       {stage: True if the stage stopped on its tolerance before its iteration limit}
    optimizer:       "lm" or "adam"
    """

    code: torch.Tensor
    blocks: "OrderedDict[str, torch.Tensor]"
    verts_model: torch.Tensor
    verts_cam: torch.Tensor
    triangles: torch.Tensor
    albedo: torch.Tensor
    vertex_colors: torch.Tensor
    image: torch.Tensor
    mask: torch.Tensor
    crop: torch.Tensor
    landmarks: np.ndarray
    target_landmarks: np.ndarray
    landmarks_crop: np.ndarray
    target_landmarks_crop: np.ndarray
    transform: CropTransform
    camera: dict
    losses: dict
    timings: dict
    iterations: dict
    converged: dict
    optimizer: str
    model: object = field(repr=False, default=None)
    input_image: np.ndarray = field(repr=False, default=None)
    decoder_options: dict = field(repr=False, default_factory=dict)

    def __repr__(self) -> str:
        it = ", ".join(f"{k} {v}" for k, v in self.iterations.items())
        return (f"FitResult(model={getattr(self.model, 'name', '?')!r}, optimizer={self.optimizer!r}, "
                f"loss {self.losses['photometric']['final']:.4g}, iterations: {it}, "
                f"time {self.timings.get('total', float('nan')):.2f} s)")

    # ------------------------------------------------------------------ rendering in the original image
    def original_decoder(self, max_side: int | None = None) -> tuple[FaceDecoder, float]:
        """A `FaceDecoder` whose camera renders the fitted code straight into the ORIGINAL image.

        The crop is a similarity without rotation (crop = s * original + offset), so the original image's
        camera is the crop camera with focal f / s and principal point (c - offset) / s. `max_side` renders
        at a reduced size (factor k = max_side / longest side, returned as the second value).
        Returns (decoder, k); its image_size is round(k * (H, W)).
        """
        H, W = self.camera["image_size"]
        k = 1.0 if not max_side or max(H, W) <= max_side else max_side / max(H, W)
        f = self.camera["focal"]
        c = self.camera["principal"]
        dec = FaceDecoder(self.model, image_size=(max(1, round(H * k)), max(1, round(W * k))),
                          focal=(f[0] * k, f[1] * k), principal=(c[0] * k, c[1] * k), **self.decoder_options)
        return dec, k

    @torch.no_grad()
    def render_original(self, max_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Render the fitted face in the original image's frame.

        Returns (image (H, W, 3) float32 in [0, 1] (black background), mask (H, W) float32 coverage),
        at the original size (or reduced so that the longer side is at most `max_side`).
        """
        dec, _ = self.original_decoder(max_side)
        out = dec(self.code[None])
        return (out["image"][0].clamp(0, 1).cpu().numpy().astype(np.float32),
                out["mask"][0, ..., 0].clamp(0, 1).cpu().numpy().astype(np.float32))

    def overlay(self, image=None, alpha: float = 0.75) -> np.ndarray:
        """The fitted render blended over the original photo.

        image: (H, W, 3) float in [0, 1] or uint8, the photo (default: the image given to `fit`, i.e. the
               working copy after grey/RGBA conversion); must have the size the fit used.
        alpha: opacity of the render inside its mask (0..1).
        returns (H, W, 3) float32 in [0, 1]: photo * (1 - alpha m) + render * alpha m.
        """
        if not (0.0 <= float(alpha) <= 1.0):
            raise InputError(f"alpha: expected a value in [0, 1], got {alpha!r}")
        photo = self.input_image if image is None else np.asarray(image)
        if photo is None:
            raise InputError("image: this FitResult holds no input image; pass the photo")
        if photo.dtype == np.uint8:
            photo = photo.astype(np.float32) / 255.0
        photo = np.asarray(photo, np.float32)
        H, W = self.camera["image_size"]
        if photo.shape != (H, W, 3):
            raise InputError(f"image: expected shape {(H, W, 3)} (the size the fit used), got {photo.shape}")
        render, mask = self.render_original()
        m = float(alpha) * mask[..., None]
        return np.clip(photo * (1 - m) + render * m, 0, 1).astype(np.float32)

    def params(self) -> dict:
        """JSON-ready dict of the semantic code: {block: [floats]} plus named semantic coefficients when the
        model names its components (`model.meta["shape_names"]`, ...)."""
        out = {"blocks": {k: [float(x) for x in v.reshape(-1)] for k, v in self.blocks.items()}}
        meta = getattr(self.model, "meta", None) or {}
        named = {}
        for block, key in (("shape", "shape_names"), ("expression", "expr_names"), ("reflectance", "albedo_names")):
            names = meta.get(key)
            if names and len(names) == self.blocks[block].numel():
                named[block] = {n: float(x) for n, x in zip(names, self.blocks[block].tolist())
                                if not n.startswith(("shape_smooth_", "expr_local_", "albedo_smooth_"))}
        if named:
            out["named"] = named
        rot = self.blocks["rotation"].double()
        R = axis_angle_to_matrix(rot[None].float())[0].double()
        # yaw (about y), pitch (about x), roll (about z) in degrees, R = Ry(yaw) Rx(pitch) Rz(roll)
        from scipy.spatial.transform import Rotation
        yaw, pitch, roll = Rotation.from_matrix(R.numpy()).as_euler("YXZ", degrees=True)
        out["pose_degrees"] = {"yaw": float(yaw), "pitch": float(pitch), "roll": float(roll)}
        return out


# ============================================================================================ the problem
class _Problem:
    """Decoder, target crop and landmarks, and the loss evaluations every stage shares."""

    def __init__(self, model, dec: FaceDecoder, crop: torch.Tensor, target_lm: torch.Tensor, weights: dict,
                 reg_weights: dict, landmark_weights: torch.Tensor | None):
        self.model = model
        self.dec = dec
        self.layout = dec.code
        self.crop = crop[None]                                    # (1, S, S, 3)
        self.target = target_lm[None]                             # (1, 68, 2)
        self.w = dict(L.DEFAULT_WEIGHTS)
        self.w.update(weights)
        self.w["photo"] = 0.0                                     # the dense (vertex) term only
        self.reg_w = dict(FIT_REG_WEIGHTS if reg_weights is None else reg_weights)
        self.lm_w = landmark_weights
        lm = dec.landmark_index
        self.lm_ok = (dec.landmark_valid & torch.isfinite(target_lm).all(-1))
        self.lm_idx = lm.clamp(min=0)
        # model rows at the landmark vertices (pure torch: the landmark stages never touch the full mesh)
        self.lm_mean = model.mean_shape[self.lm_idx]
        self.lm_S = model.shape_basis[self.lm_idx] * model.shape_std
        self.lm_E = model.expr_basis[self.lm_idx] * model.expr_std
        self.not_boundary = ~dec.boundary
        Aband = SH_BAND_FACTORS
        self.band = torch.tensor([Aband[0]] + [Aband[1]] * 3 + [Aband[2]] * 5)

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
        stride = max(1, math.ceil(len(cand) / _GN_SAMPLE))
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
    def landmark_points(self, code: torch.Tensor, R: torch.Tensor | None = None):
        """(68, 2) projected landmarks and (68, 3) model-space landmark vertices (pure torch)."""
        bl = self.layout.split(code)
        v = self.lm_mean + self.lm_S @ bl["shape"][0] + self.lm_E @ bl["expression"][0]
        if R is None:
            R = axis_angle_to_matrix(bl["rotation"])[0]
        _, t = self.dec.camera_transform(R[None], bl["translation"])
        x = v @ R.T + t[0]
        return self.dec.project_points(x[None])[0], v

    def landmark_loss(self, code, R=None, reg_blocks=("shape", "expression")):
        """Landmark term + prior on `reg_blocks` (the loss of the pose and landmark stages), with terms."""
        p, _ = self.landmark_points(code, R)
        terms = {"landmark": self.w["landmark"] * L.landmark_loss(p[None], self.target, self.lm_w,
                                                                  valid=self.lm_ok)}
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

    def dense_loss(self, g, vis: torch.Tensor):
        """MoFA's loss (`losses.mofa_loss`) on the vertex render `g` with a given visibility."""
        return L.mofa_loss(replace(g, visibility=vis), self.crop, self.target, weights=self.w,
                           reg_weights=self.reg_w, landmark_weights=self.lm_w, robust=True)


# ============================================================================================ stage 1: pose
def _closed_form_pose(prob: _Problem, code: torch.Tensor) -> torch.Tensor:
    """Weak-perspective pose from the inner landmarks (least-squares affine camera, orthonormalised).

    Returns a copy of `code` with rotation and translation set. Raises InputError with fewer than 6 usable
    landmarks.
    """
    dec = prob.dec
    _, X = prob.landmark_points(code)
    X = X.double()
    x = prob.target[0].double()
    ok = prob.lm_ok.clone()
    inner = torch.zeros_like(ok)
    inner[_INNER] = True
    use = ok & inner if int((ok & inner).sum()) >= 6 else ok
    if int(use.sum()) < 6:
        raise InputError(f"landmarks: need at least 6 landmarks present both in the target and in the model "
                         f"({int(use.sum())} usable) to estimate the pose")
    Xu, xu = X[use], x[use]
    f = 0.5 * (dec.focal[0] + dec.focal[1])
    # image points in a y-up frame centred on the principal point
    xy = torch.stack([xu[:, 0] - dec.principal[0], dec.principal[1] - xu[:, 1]], -1)
    Xm, xm = Xu.mean(0), xy.mean(0)
    Xc, xc = Xu - Xm, xy - xm
    A = torch.linalg.lstsq(Xc, xc).solution.T               # (2, 3): xc ~ Xc @ A.T
    U, S, Vt = torch.linalg.svd(A, full_matrices=False)
    rows = U @ Vt                                            # orthonormal rows r1, r2
    s = S.mean()
    r3 = torch.linalg.cross(rows[0], rows[1])
    R = torch.stack([rows[0], rows[1], r3])
    D = f / s                                               # depth of the landmark centroid, mm
    c = dec.center.double()
    Rc = R @ (Xm - c)
    T = torch.stack([xm[0] / s - Rc[0], xm[1] / s - Rc[1], -D - Rc[2]])
    out = code.clone()
    bl = prob.layout.split(out)
    bl["rotation"][0] = matrix_to_axis_angle(R)
    bl["translation"][0] = (T - dec.default_translation.double()).float()
    return out


# ============================================================================================ Jacobians
def _geometric_jacobian(prob: _Problem, R, y, x, idx, blocks):
    """d(pixel)/d(params) (n, 2, P) of vertices `idx` for the parameter blocks `blocks` (a subset of
    rot (left increment), translation, shape, expression), plus the projection Jacobian (n, 2, 3).

    y = R (v - center) (n, 3) (rotated, before translation), x = camera-space positions (n, 3).
    """
    Jp = prob.dec.camera.project_jacobian(x)                                   # (n, 2, 3)
    cols = []
    for b in blocks:
        if b == "rotation":
            cols.append(-skew(y))                                             # (n, 3, 3)
        elif b == "translation":
            cols.append(torch.eye(3, dtype=x.dtype).expand(len(x), 3, 3))
        elif b == "shape":
            cols.append(torch.einsum("ij,njk->nik", R, prob.model.shape_basis[idx].to(x.dtype)
                                     * prob.model.shape_std.to(x.dtype)))
        elif b == "expression":
            cols.append(torch.einsum("ij,njk->nik", R, prob.model.expr_basis[idx].to(x.dtype)
                                     * prob.model.expr_std.to(x.dtype)))
    dx = torch.cat(cols, -1)                                                   # (n, 3, P)
    return Jp @ dx, Jp


# ============================================================================================ optimisers
class _Stage:
    """Bookkeeping of one stage: loss history, iterations, convergence, progress bar."""

    def __init__(self, name, max_iters, progress):
        self.name = name
        self.max_iters = int(max_iters)
        self.progress = progress
        self.task = progress.add_task(name, total=max(self.max_iters, 1), loss=float("nan")) if progress else None
        self.history = []
        self.times = []
        self.lambdas = []
        self.iterations = 0
        self.converged = False
        self.t0 = time.perf_counter()

    def step(self, loss, lam=None):
        self.iterations += 1
        self.history.append(float(loss))
        self.times.append(time.perf_counter() - self.t0)
        if lam is not None:
            self.lambdas.append(float(lam))
        if self.progress is not None:
            self.progress.update(self.task, advance=1, loss=float(loss))

    def done(self):
        """Close the bar at the iterations actually run (a stage usually converges before its limit)."""
        if self.progress is not None:
            n = max(self.iterations, 1)
            self.progress.update(self.task, total=n, completed=n)


def _lm_solve(H, g, lam):
    """(H + lam * diag(H)) d = -g in float64 (Marquardt scaling, with a floor on the diagonal)."""
    d = torch.diagonal(H)
    Dm = d.clamp(min=1e-9 * float(d.max()) + 1e-12)
    A = H + lam * torch.diag(Dm)
    try:
        return -torch.linalg.solve(A, g)
    except RuntimeError:
        return -torch.linalg.lstsq(A, g[:, None]).solution[:, 0]


def _lm_loop(stage: _Stage, evaluate, build, apply_step, tol: float, lam0: float = 1e-3):
    """Generic Levenberg-Marquardt loop with Nielsen's damping update.

    build(state) -> (loss, grad (P,) float64, H (P, P) float64, context, state) at the current state
    (state None = the initial one); apply_step(state, delta, context) -> new state; evaluate(new_state,
    context) -> its loss with the same auxiliaries (e.g. visibility) as `build` used, for the acceptance test.
    A step solves (H + lam diag(H)) d = -g; the gain ratio rho = actual / predicted decrease steers lam
    (accepted: lam *= max(1/3, 1 - (2 rho - 1)^3); rejected: lam *= nu, nu *= 2). Stops when the relative
    decrease of an accepted step is below `tol` twice in a row, or after 8 rejections in a row.
    """
    lam, nu = lam0, 2.0
    small = 0
    loss, g, H, ctx, state = build(None)
    first = loss
    for _ in range(stage.max_iters):
        accepted = False
        for _try in range(8):
            delta = _lm_solve(H, g, lam)
            predicted = -float(g @ delta + 0.5 * delta @ (H @ delta))
            new_state = apply_step(state, delta, ctx)
            new_loss = evaluate(new_state, ctx)
            if math.isfinite(new_loss) and new_loss <= loss:
                accepted = True
                break
            lam *= nu
            nu *= 2.0
        if not accepted:
            stage.step(loss, lam)
            stage.converged = True
            break
        rho = (loss - new_loss) / max(predicted, 1e-30)
        stage.step(new_loss, lam)
        lam = max(lam * max(1.0 / 3.0, 1.0 - (2.0 * min(rho, 1.0) - 1.0) ** 3), 1e-9)
        nu = 2.0
        rel = (loss - new_loss) / max(abs(loss), 1e-12)
        state = new_state
        small = small + 1 if rel < tol else 0
        if small >= 2:
            stage.converged = True
            break
        loss, g, H, ctx, state = build(state)
    stage.done()
    return state, first


def _adam_loop(stage: _Stage, layout: Code, code: torch.Tensor, active, loss_fn, tol: float, lrs=None):
    """Adam on the `active` blocks of `code` (a flat (1, N) tensor); loss_fn(code) -> (loss, terms).

    Convergence: the relative change of a 10-iteration moving average of the loss below `tol`.
    """
    lrs = dict(ADAM_LR, **(lrs or {}))
    layout_slices = layout.slices
    params = {b: code[:, layout_slices[b]].detach().clone().requires_grad_(True) for b in active}
    opt = torch.optim.Adam([{"params": [p], "lr": lrs[b]} for b, p in params.items()], betas=(0.9, 0.999))

    def assemble():
        parts = []
        for b, s in layout_slices.items():
            parts.append(params[b] if b in params else code[:, s])
        return torch.cat(parts, 1)

    first = None
    best, best_code = float("inf"), code
    window = []
    for _ in range(stage.max_iters):
        opt.zero_grad(set_to_none=True)
        c = assemble()
        loss, _ = loss_fn(c)
        lv = float(loss.detach())
        if first is None:
            first = lv
        if lv < best:
            best, best_code = lv, c.detach().clone()
        loss.backward()
        opt.step()
        stage.step(lv)
        window.append(lv)
        if len(window) >= 20:
            a, b = np.mean(window[-20:-10]), np.mean(window[-10:])
            if (a - b) / max(abs(a), 1e-12) < tol:
                stage.converged = True
                break
    with torch.no_grad():
        c = assemble().detach()
        lv = float(loss_fn(c)[0])
    if lv < best:
        best, best_code = lv, c.clone()
    stage.done()
    return best_code, first


# ============================================================================================ stages
def _blocks_vec(code, layout, names):
    return torch.cat([code[0, layout.slices[b]] for b in names]).double()


def _fit_landmarks(prob: _Problem, code, stage: _Stage, blocks, optimizer: str, tol: float):
    """Pose (+ shape + expression when in `blocks`) from the landmarks: LM or Adam."""
    layout = prob.layout
    reg_blocks = tuple(b for b in ("shape", "expression") if b in blocks)
    if optimizer == "adam":
        return _adam_loop(stage, layout, code, blocks, lambda c: prob.landmark_loss(c, reg_blocks=reg_blocks), tol)

    idx = prob.lm_idx
    ok = prob.lm_ok
    w_lm = prob.w["landmark"]
    lw = prob.lm_w.double() if prob.lm_w is not None else torch.ones(68, dtype=torch.float64)
    n_ok = max(int(ok.sum()), 1)

    def make_R(c):
        return axis_angle_to_matrix(c[:, layout.slices["rotation"]].double())[0]

    def loss_at(c, R):
        return float(prob.landmark_loss(c, R.float(), reg_blocks=reg_blocks)[0])

    def build(state):
        c = code if state is None else state
        R = make_R(c)
        dw = torch.zeros(3, dtype=torch.float32, requires_grad=True)
        rest = c.detach().clone().requires_grad_(True)
        Rw = axis_angle_to_matrix(dw[None])[0] @ R.float()
        loss, _ = prob.landmark_loss(rest, Rw, reg_blocks=reg_blocks)
        gw, gc = torch.autograd.grad(loss, [dw, rest])
        g = torch.cat([gw.double()] + [gc[0, layout.slices[b]].double() for b in blocks if b != "rotation"])
        # Gauss-Newton matrix of the landmark term (exact for it) + the prior
        bl = layout.split(c.detach().double())
        v = (prob.lm_mean.double() + prob.lm_S.double() @ bl["shape"][0] + prob.lm_E.double() @ bl["expression"][0])
        y = (v - prob.dec.center.double()) @ R.T
        x = y + (prob.dec.default_translation.double() + bl["translation"][0])
        Jg, _ = _geometric_jacobian(prob, R, y, x, idx, blocks)              # (68, 2, P)
        W = (lw * ok.double()) * (2.0 * w_lm / n_ok)
        H = torch.einsum("n,nip,niq->pq", W[ok], Jg[ok], Jg[ok])
        H = H + _prior_hessian(prob, blocks, reg_blocks)
        return float(loss.detach()), g, H, None, c

    def apply_step(state, delta, ctx):
        return _apply_delta(prob, state, delta, blocks)

    def evaluate(state, ctx):
        with torch.no_grad():
            return loss_at(state, make_R(state))

    state, first = _lm_loop(stage, evaluate, build, apply_step, tol)
    return state, first


def _prior_hessian(prob, blocks, reg_blocks):
    sizes = prob.layout.sizes
    diag = []
    for b in blocks:
        w = 2.0 * prob.w["reg"] * prob.reg_w.get(b, 0.0) if b in reg_blocks else 0.0
        diag.append(torch.full((sizes[b],), w, dtype=torch.float64))
    return torch.diag(torch.cat(diag))


def _apply_delta(prob, code, delta, blocks):
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


@torch.no_grad()
def _init_appearance(prob: _Problem, code: torch.Tensor, n_alt: int = 2) -> torch.Tensor:
    """Closed-form illumination and reflectance for the current geometry (regularised linear least squares
    on the visible vertices, squared colour error; 2 alternations)."""
    model, layout = prob.model, prob.layout
    g = prob.geometry(code)
    vis = (prob.visibility(g) & prob.not_boundary[None])[0]
    if int(vis.sum()) < 50:
        return code
    I = L.sample_image(prob.crop, g["verts_2d"][:, vis])[0].double()            # (n, 3)
    n = g["normals"][0, vis].double()
    Y = sh_basis(n).double() * prob.band.double()                                 # (n, 9)
    a_mean = model.albedo_mean[vis].double()
    amb = prob.dec.ambient_code[0].double().reshape(3, 9)
    out = code.clone()
    bl = layout.split(out)
    beta = torch.zeros(model.k_alb, dtype=torch.float64)
    if model.k_alb:
        Bk = model.albedo_basis[vis].double() * model.albedo_std.double()          # (n, 3, K)
    N = len(n)
    # regularisation of the SH offset: the loss has none, so a light ridge (relative to the data term)
    lam_sh = 1e-3 * N
    w_reg = prob.w["reg"] * prob.reg_w.get("reflectance", 0.0)
    photo_scale = prob.w["vertex_photo"] / N
    Lsh = amb.clone()
    for _ in range(n_alt):
        a = a_mean + (Bk @ beta if model.k_alb else 0.0)
        for c in range(3):
            Ac = a[:, c:c + 1] * Y                                                   # (n, 9)
            A = Ac.T @ Ac + lam_sh * torch.eye(9, dtype=torch.float64)
            rhs = Ac.T @ I[:, c] + lam_sh * amb[c]
            Lsh[c] = torch.linalg.solve(A, rhs)
        if not model.k_alb:
            break
        E = Y @ Lsh.T                                                                 # (n, 3) irradiance
        M = (E[:, :, None] * Bk).reshape(3 * N, -1)                                   # (3n, K)
        r = (I - a_mean * E).reshape(-1)
        K = M.shape[1]
        A = photo_scale * (M.T @ M) + w_reg * torch.eye(K, dtype=torch.float64)
        beta = torch.linalg.solve(A, photo_scale * (M.T @ r))
    bl["illumination"][0] = (Lsh - amb).reshape(27).float()
    if model.k_alb:
        bl["reflectance"][0] = beta.float()
    return out


def _dense_jacobian(prob: _Problem, g: dict, R0: torch.Tensor, use: torch.Tensor, blocks, normals: bool = None,
                    dn_model: torch.Tensor | None = None):
    """Closed-form Jacobians of the dense photometric residual at the visible sampled vertices.

    g: `_Problem.geometry` output at the current code; R0 (3, 3) its rotation; use (V,) bool vertices that
    may enter (visible, not on the boundary); blocks: the parameter blocks in order (the rotation block is a
    left increment dw, R = exp([dw]x) R0).
    Returns (idx (n,), Jp (n, 2, P) d(pixel position)/d(params), Jc (n, 3, P) d(vertex colour)/d(params),
    sel) in float32, or None when no sampled vertex is usable. The residual's Jacobian is G Jp - Jc with G
    (n, 3, 2) the image gradient at the projections. With `normals` (default `_GN_NORMALS`) the colour
    Jacobian includes the normals' dependence on shape and expression (exact for the area-weighted normals),
    from `dn_model` (`_Problem.normal_jacobian`, possibly computed at an earlier iterate) when given.
    """
    layout, model = prob.layout, prob.model
    normals = _GN_NORMALS if normals is None else normals
    gs = prob.gn_sample()
    sel = use[gs["idx"]]
    idx = gs["idx"][sel]
    n = len(idx)
    if not n:
        return None
    f32 = torch.float32
    R = R0.to(f32)
    geo = [b for b in blocks if b in ("rotation", "translation", "shape", "expression")]
    x = g["verts_cam"][0, idx].detach()
    y = (g["verts"][0, idx].detach() - prob.dec.center) @ R.T
    Jg, _ = _geometric_jacobian(prob, R, y, x, idx, geo)                                # (n, 2, Pg)
    nrm = g["normals"][0, idx].detach()
    a = g["albedo"][0, idx].detach()
    Lsh = g["sh"][0].detach().reshape(3, 9)                                            # [c, k]
    band = prob.band
    Yp = sh_basis(nrm) * band                                                          # (n, 9)
    E = Yp @ Lsh.T                                                                     # (n, 3) irradiance
    consts = torch.tensor(SH_CONSTANTS, dtype=f32) * band
    dpoly = sh_basis_jacobian(nrm, consts)                                             # (n, 9, 3)
    adE = a[:, :, None] * torch.einsum("ck,nkj->ncj", Lsh, dpoly)                     # (n, 3, 3) dc/dn
    k_id = layout.sizes["shape"]
    dn = None
    if normals and ("shape" in geo or "expression" in geo):
        if dn_model is None:
            dn_model = prob.normal_jacobian(g["verts"][0].detach())
        dn = torch.einsum("ij,njk->nik", R, dn_model[sel].to(f32))                     # (n, 3, Kid + Kexp)
    zeros2 = lambda k: torch.zeros(n, 2, k, dtype=f32)                                 # noqa: E731
    zeros3 = lambda k: torch.zeros(n, 3, k, dtype=f32)                                 # noqa: E731
    Jp_parts, Jc_parts = [], []
    pg = 0
    for b in blocks:
        nb = layout.sizes[b]
        if b in geo:
            Jp_parts.append(Jg[:, :, pg:pg + nb])
            pg += nb
        else:
            Jp_parts.append(zeros2(nb))
        if b == "rotation":
            Jc_parts.append(adE @ (-skew(nrm)))
        elif b == "shape":
            Jc_parts.append(adE @ dn[:, :, :k_id] if dn is not None else zeros3(nb))
        elif b == "expression":
            Jc_parts.append(adE @ dn[:, :, k_id:] if dn is not None else zeros3(nb))
        elif b == "reflectance":
            Jc_parts.append(E[:, :, None] * (model.albedo_basis[idx] * model.albedo_std))
        elif b == "illumination":
            Jsh = zeros3(27)
            for ch in range(3):
                Jsh[:, ch, 9 * ch:9 * ch + 9] = a[:, ch:ch + 1] * Yp
            Jc_parts.append(Jsh)
        else:
            Jc_parts.append(zeros3(nb))
    return idx, torch.cat(Jp_parts, 2), torch.cat(Jc_parts, 2), sel


def _fit_dense(prob: _Problem, code, stage: _Stage, optimizer: str, tol: float):
    """All blocks on MoFA's loss."""
    layout = prob.layout
    blocks = [b for b in layout.sizes if layout.sizes[b] > 0]
    if optimizer == "adam":
        cache = {"vis": None, "it": 0}

        def loss_fn(c):
            g = prob.geometry(c)
            if cache["vis"] is None or cache["it"] % 5 == 0 or not c.requires_grad:
                cache["vis"] = prob.visibility(g)
            cache["it"] += 1
            return prob.dense_loss(g, cache["vis"])

        return _adam_loop(stage, layout, code, blocks, loss_fn, tol)

    geo_blocks = [b for b in blocks if b in ("rotation", "translation", "shape", "expression")]
    P = sum(layout.sizes[b] for b in blocks)
    w_ph, w_lm = prob.w["vertex_photo"], prob.w["landmark"]
    lw = prob.lm_w.double() if prob.lm_w is not None else torch.ones(68, dtype=torch.float64)
    ok = prob.lm_ok
    n_ok = max(int(ok.sum()), 1)
    reg_blocks = tuple(b for b in ("shape", "expression", "reflectance", "illumination", "rotation", "translation")
                       if prob.reg_w.get(b, 0.0))
    prior = _prior_hessian(prob, blocks, reg_blocks)
    off = {}
    o = 0
    for b in blocks:
        off[b] = o
        o += layout.sizes[b]
    cache = {"dn": None, "builds": 0}

    def build(state):
        c = code if state is None else state
        R0 = axis_angle_to_matrix(c[:, layout.slices["rotation"]].double())[0]
        dw = torch.zeros(3, dtype=torch.float32, requires_grad=True)
        rest = c.detach().clone().requires_grad_(True)
        Rw = axis_angle_to_matrix(dw[None])[0] @ R0.float()
        with _label("fit:forward"):
            g = prob.geometry(rest, Rw)
        with _label("fit:visibility"):
            vis = prob.visibility(g)
        with _label("fit:loss"):
            loss, _ = prob.dense_loss(g, vis)
        with _label("fit:backward"):
            gw, gc = torch.autograd.grad(loss, [dw, rest])
        grad = torch.cat([gw.double()] + [gc[0, layout.slices[b]].double() for b in blocks if b != "rotation"])

        # ---- approximate Gauss-Newton matrix (closed form; float32 products, float64 accumulation)
        with torch.no_grad(), _label("fit:gauss_newton_matrix"):
            use = (vis & prob.not_boundary[None])[0]
            H = prior.clone()
            if cache["dn"] is None or cache["builds"] % _GN_NORMALS_EVERY == 0:
                with _label("fit:normal_jacobian"):
                    cache["dn"] = prob.normal_jacobian(g["verts"][0].detach()) if _GN_NORMALS else None
            cache["builds"] += 1
            jac = _dense_jacobian(prob, g, R0, use, blocks, dn_model=cache["dn"])
            if jac is not None:
                idx, Jp, Jc, _ = jac
                p = g["verts_2d"][:, idx]
                h = 0.5
                e = torch.tensor([[h, 0.0], [-h, 0.0], [0.0, h], [0.0, -h]])
                samp = L.sample_image(prob.crop, (p[:, :, None, :] + e).reshape(1, -1, 2))[0]
                samp = samp.reshape(len(idx), 4, 3)
                G = torch.stack([(samp[:, 0] - samp[:, 1]) / (2 * h), (samp[:, 2] - samp[:, 3]) / (2 * h)], -1)
                r = L.sample_image(prob.crop, p)[0] - g["vertex_colors"][0, idx].detach()
                J = G[:, :, 0:1] * Jp[:, None, 0] + G[:, :, 1:2] * Jp[:, None, 1] - Jc   # (n, 3, P)
                wv = (w_ph / len(idx)) / r.norm(dim=-1).clamp(min=_IRLS_FLOOR)
                A = (J * wv.sqrt()[:, None, None]).reshape(-1, P)
                H += (A.T @ A).double()
            # landmarks (exact Gauss-Newton for that term)
            lx = g["verts_cam"][0, prob.lm_idx].detach().double()
            ly = (g["verts"][0, prob.lm_idx].detach().double() - prob.dec.center.double()) @ R0.T
            Jl, _ = _geometric_jacobian(prob, R0, ly, lx, prob.lm_idx, geo_blocks)
            Jl_full = torch.zeros(68, 2, P, dtype=torch.float64)
            pg = 0
            for b in geo_blocks:
                nb = layout.sizes[b]
                Jl_full[:, :, off[b]:off[b] + nb] = Jl[:, :, pg:pg + nb]
                pg += nb
            W = (lw * 2.0 * w_lm / n_ok)
            H += torch.einsum("n,nip,niq->pq", W[ok], Jl_full[ok], Jl_full[ok])
        return float(loss.detach()), grad, H, {"vis": vis}, c

    def apply_step(state, delta, ctx):
        return _apply_delta(prob, state, delta, blocks)

    def evaluate(state, ctx):
        with torch.no_grad(), _label("fit:trial_step"):
            g = prob.geometry(state)
            return float(prob.dense_loss(g, ctx["vis"])[0])

    state, first = _lm_loop(stage, evaluate, build, apply_step, tol)
    return state, first


# ============================================================================================ entry point
def _as_landmarks(landmarks, name="landmarks"):
    if isinstance(landmarks, (str, bytes)) or hasattr(landmarks, "__fspath__"):
        from ..landmarks import read_landmarks
        return read_landmarks(landmarks)
    a = np.asarray(landmarks.detach().cpu() if isinstance(landmarks, torch.Tensor) else landmarks, np.float64)
    if a.shape != (68, 2):
        raise InputError(f"{name}: expected (68, 2) pixel coordinates (iBUG order), got shape {a.shape}")
    if np.isinf(a).any():
        raise InputError(f"{name}: contains Inf")
    return a.astype(np.float32)


def _progress(enabled):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]fit[/] {task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.5g}"), TimeElapsedColumn(), transient=False)


def fit(image, model=None, landmarks=None, *, size: int = 224, optimizer: str = "lm", iters=None,
        weights: dict | None = None, reg_weights: dict | None = None, landmark_weights=None,
        crop_scale: float = DEFAULT_CROP_SCALE, focal=None, principal=None, tol: float = 3e-3,
        progress: bool = True,
        name: str | None = None, decoder_options: dict | None = None, init_code=None) -> FitResult:
    """Fit the semantic code of `model` to one photo by analysis by synthesis (coarse to fine).

    image:      (H, W, 3) RGB, (H, W) grey or (H, W, 4) RGBA (alpha dropped); uint8, uint16 or float in
                [0, 1]; a NumPy array, a CPU tensor or a path (see `mofa_tk.io.images.load_image` for file checks)
    model:      FaceModel (default `builtin_model()`); needs iBUG-68 landmark vertices for the pose
    landmarks:  (68, 2) pixel coordinates in `image` (u right, v down, centres at +0.5; NaN = missing), a
                .pts/.json/.npy path, or None to detect them with `landmarks.detect` (MediaPipe)
    size:       crop side in pixels = the decoder's resolution (default 224; focal 1015 * size / 224)
    optimizer:  "lm" (Levenberg-Marquardt, default: fastest, see docs/fitting.md) or "adam"
    iters:      None (DEFAULT_ITERS[optimizer]), an int (maximum photometric iterations) or a dict
                {stage: maximum iterations} for "pose", "landmarks", "photometric"
    weights, reg_weights, landmark_weights: as in `losses.mofa_loss` (defaults: Deep3DFaceRecon's term and
                landmark weights; prior weights `FIT_REG_WEIGHTS` = Deep3DFaceRecon's + illumination 3.0)
    crop_scale: crop side / face size (`landmarks.crop_face`)
    focal:      the photo's focal length in ORIGINAL pixels if known (scalar or (fx, fy)); default: the
                decoder's focal in the crop (1015 px at 224), i.e. focal / crop scale in the photo
    principal:  the photo's principal point (cx, cy) in ORIGINAL pixels if known; default: the crop centre
    tol:        relative loss decrease below which a stage counts as converged
    progress:   show a rich progress bar per stage with the current loss
    name:       image name used in error messages
    decoder_options: extra `FaceDecoder` keyword arguments (distance, visibility_tol, ...)
    init_code:  optional (N,) or (1, N) float code of `model` for THIS crop (same `size`-independent camera and
                `crop_scale`), e.g. `Encoder.predict_code` of the crop (`mofa fit --encoder CKPT`). It competes
                with the closed-form initialisations: the pose stage starts from whichever of the encoder's
                pose and the closed-form pose has the lower landmark loss, and the appearance stage keeps the
                encoder's reflectance / illumination unless the closed-form estimate has a lower dense loss
                (`FitResult.losses[stage]["init"]` says which won), so a weak encoder cannot make a fit worse
                at the start of a stage.

    Returns a `FitResult`. Raises InputError on bad arguments, landmarks.NoFaceFoundError when detection
    finds no face.
    """
    from ..landmarks import _to_rgb_float, detect

    t_start = time.perf_counter()
    timings = OrderedDict()
    if optimizer not in OPTIMIZERS:
        raise InputError(f"optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    max_iters = dict(DEFAULT_ITERS[optimizer])
    if iters is not None:
        if isinstance(iters, dict):
            unknown = set(iters) - set(max_iters)
            if unknown:
                raise InputError(f"iters: unknown stage(s) {sorted(unknown)}; expected {sorted(max_iters)}")
            for k, v in iters.items():
                if isinstance(v, bool) or int(v) != v or int(v) < 0:
                    raise InputError(f"iters[{k!r}]: expected an integer >= 0, got {v!r}")
                max_iters[k] = int(v)
        else:
            if isinstance(iters, bool) or int(iters) != iters or int(iters) < 0:
                raise InputError(f"iters: expected an integer >= 0 or a dict per stage, got {iters!r}")
            max_iters["photometric"] = int(iters)
    if isinstance(size, bool) or int(size) != size or not 32 <= int(size) <= 4096:
        raise InputError(f"size: expected an integer crop size in [32, 4096] pixels, got {size!r}")
    size = int(size)
    if weights is not None:
        unknown = set(weights) - set(L.DEFAULT_WEIGHTS)
        if unknown:
            raise InputError(f"weights: unknown term(s) {sorted(unknown)}; expected {sorted(L.DEFAULT_WEIGHTS)}")
    if reg_weights is not None:
        unknown = set(reg_weights) - set(BLOCKS)
        if unknown:
            raise InputError(f"reg_weights: unknown block(s) {sorted(unknown)}")
    if model is None:
        from ..face.builtin import builtin_model
        model = builtin_model()
    if int((model.landmarks >= 0).sum()) < 6:
        raise InputError(f"model {getattr(model, 'name', '?')!r}: has {int((model.landmarks >= 0).sum())} iBUG "
                         f"landmark vertices; fitting needs at least 6 for the pose")

    rgb = _to_rgb_float(image, arg="image" if name is None else f"image {name!r}")
    H, W = rgb.shape[:2]

    t0 = time.perf_counter()
    if landmarks is None:
        lm = detect(rgb, name=name)
        timings["detect"] = time.perf_counter() - t0
    else:
        lm = _as_landmarks(landmarks)
    lm = np.asarray(lm, np.float32)
    if int(np.isfinite(lm).all(axis=1).sum()) < 6:
        raise InputError(f"landmarks: {int(np.isfinite(lm).all(axis=1).sum())} finite points; need at least 6")

    t0 = time.perf_counter()
    crop, lm_crop, T = crop_face(rgb, lm, size=size, scale=crop_scale)
    timings["crop"] = time.perf_counter() - t0

    dec_kw = dict(decoder_options or {})
    for k in ("image_size", "focal", "principal"):
        if k in dec_kw:
            raise InputError(f"decoder_options: {k!r} is set by fit (use size= / focal=)")
    if focal is not None:
        fv = np.broadcast_to(np.asarray(focal, np.float64).reshape(-1), (2,)) if np.size(focal) in (1, 2) else None
        if fv is None or not np.isfinite(fv).all() or (fv <= 0).any():
            raise InputError(f"focal: expected a positive scalar or (fx, fy) in original pixels, got {focal!r}")
        dec_kw["focal"] = tuple(float(f) * T.scale for f in fv)
    if principal is not None:
        pv = np.asarray(principal, np.float64).reshape(-1)
        if pv.shape != (2,) or not np.isfinite(pv).all():
            raise InputError(f"principal: expected (cx, cy) in original pixels, got {principal!r}")
        dec_kw["principal"] = tuple(float(x) for x in T.from_original(pv))
    dec = FaceDecoder(model, image_size=size, **dec_kw)
    dec_kw.pop("focal", None)
    dec_kw.pop("principal", None)
    lw = None
    if landmark_weights is not None:
        lw = torch.as_tensor(np.asarray(landmark_weights, np.float32))
        if lw.shape != (68,) or not torch.isfinite(lw).all() or (lw < 0).any():
            raise InputError(f"landmark_weights: expected 68 finite weights >= 0, got shape {tuple(lw.shape)}")
    prob = _Problem(model, dec, torch.from_numpy(crop), torch.from_numpy(lm_crop.astype(np.float32)),
                    weights or {}, reg_weights, lw)

    losses_out, iterations, converged = OrderedDict(), OrderedDict(), OrderedDict()
    code = dec.code.zeros(1)
    enc_code = _as_init_code(init_code, dec.code.size) if init_code is not None else None
    bar = _progress(progress)
    if bar is not None:
        bar.start()
    try:
        # ---- stage: pose
        t0 = time.perf_counter()
        code = _closed_form_pose(prob, code)
        pose_init = "closed-form"
        if enc_code is not None:
            with torch.no_grad():
                cf_loss = float(prob.landmark_loss(code, reg_blocks=())[0])
                enc_loss = float(prob.landmark_loss(enc_code, reg_blocks=())[0])
            if math.isfinite(enc_loss) and enc_loss <= cf_loss:
                code, pose_init = enc_code.clone(), "encoder"
        st = _Stage("pose", max_iters["pose"], bar)
        code, first = _fit_landmarks(prob, code, st, ["rotation", "translation"], optimizer, tol) \
            if st.max_iters else (code, float(prob.landmark_loss(code, reg_blocks=())[0]))
        with torch.no_grad():
            fin, terms = prob.landmark_loss(code, reg_blocks=())
        losses_out["pose"] = {"initial": float(first), "final": float(fin), "terms": _floats(terms),
                              "init": pose_init}
        iterations["pose"], converged["pose"] = st.iterations, st.converged
        timings["pose"] = time.perf_counter() - t0

        # ---- stage: shape + expression from landmarks
        t0 = time.perf_counter()
        st = _Stage("landmarks", max_iters["landmarks"], bar)
        blocks = ["rotation", "translation", "shape", "expression"]
        if st.max_iters:
            code, first = _fit_landmarks(prob, code, st, blocks, optimizer, tol)
        else:
            first = float(prob.landmark_loss(code)[0])
        with torch.no_grad():
            fin, terms = prob.landmark_loss(code)
        losses_out["landmarks"] = {"initial": float(first), "final": float(fin), "terms": _floats(terms)}
        iterations["landmarks"], converged["landmarks"] = st.iterations, st.converged
        timings["landmarks"] = time.perf_counter() - t0

        # ---- stage: closed-form appearance
        t0 = time.perf_counter()
        with torch.no_grad():
            g = prob.geometry(code)
            before = float(prob.dense_loss(g, prob.visibility(g))[0])
        closed = _init_appearance(prob, code)
        with torch.no_grad():
            g = prob.geometry(closed)
            fin, terms = prob.dense_loss(g, prob.visibility(g))
        appearance_init = "closed-form"
        if enc_code is not None and pose_init == "encoder" and before < float(fin):
            # the encoder's reflectance and illumination (kept in `code` since the pose stage) explain the
            # crop better than the closed-form estimate: keep them
            with torch.no_grad():
                g = prob.geometry(code)
                fin, terms = prob.dense_loss(g, prob.visibility(g))
            appearance_init = "encoder"
        else:
            code = closed
        losses_out["appearance"] = {"initial": before, "final": float(fin), "terms": _floats(terms),
                                    "init": appearance_init}
        iterations["appearance"], converged["appearance"] = 1, True
        timings["appearance"] = time.perf_counter() - t0

        # ---- stage: dense photometric refinement of every block
        t0 = time.perf_counter()
        st = _Stage("photometric", max_iters["photometric"], bar)
        if st.max_iters:
            code, first = _fit_dense(prob, code, st, optimizer, tol)
        else:
            first = float(fin)
        with torch.no_grad():
            g = prob.geometry(code)
            fin, terms = prob.dense_loss(g, prob.visibility(g))
        losses_out["photometric"] = {"initial": float(first), "final": float(fin), "terms": _floats(terms),
                                     "history": st.history, "times": st.times}
        iterations["photometric"], converged["photometric"] = st.iterations, st.converged
        timings["photometric"] = time.perf_counter() - t0
    finally:
        if bar is not None:
            bar.stop()

    # ---- outputs
    t0 = time.perf_counter()
    with torch.no_grad():
        out = dec(code, background=prob.crop)
        lm_fit_crop = out["landmarks2d"][0].cpu().numpy().astype(np.float64)
    timings["render"] = time.perf_counter() - t0
    lm_fit = T.to_original(lm_fit_crop).astype(np.float32)
    s, (ox, oy) = T.scale, T.offset
    camera = {"focal": (dec.focal[0] / s, dec.focal[1] / s),
              "principal": ((dec.principal[0] - ox) / s, (dec.principal[1] - oy) / s),
              "focal_crop": dec.focal, "principal_crop": dec.principal, "distance": dec.distance,
              "image_size": (H, W), "crop_size": size}
    timings["total"] = time.perf_counter() - t_start
    flat = code[0].detach().clone()
    dec_opts = {"distance": dec.distance, "center": dec.center.clone(), "near": dec.near, "far": dec.far,
                "visibility_tol": dec.visibility_tol}
    dec_opts.update({k: v for k, v in dec_kw.items() if k == "ambient"})
    return FitResult(
        code=flat, blocks=OrderedDict((k, v[0].clone()) for k, v in dec.code.split(flat[None]).items()),
        verts_model=morph(model, code[:, dec.code.slices["shape"]], code[:, dec.code.slices["expression"]])[0].detach(),
        verts_cam=out["verts_cam"][0].detach(), triangles=dec.triangles.clone(),
        albedo=out["albedo"][0].detach(), vertex_colors=out["vertex_colors"][0].detach(),
        image=out["image"][0].detach(), mask=out["mask"][0].detach(), crop=prob.crop[0],
        landmarks=lm_fit, target_landmarks=lm.astype(np.float32), landmarks_crop=lm_fit_crop.astype(np.float32),
        target_landmarks_crop=lm_crop.astype(np.float32), transform=T, camera=camera, losses=losses_out,
        timings=dict(timings), iterations=dict(iterations), converged=dict(converged), optimizer=optimizer,
        model=model, input_image=rgb, decoder_options=dec_opts)


def _as_init_code(init_code, n: int) -> torch.Tensor:
    """init_code -> (1, n) float32 CPU tensor, or InputError naming what is wrong."""
    try:
        c = torch.as_tensor(np.asarray(init_code.detach().cpu() if isinstance(init_code, torch.Tensor) else init_code,
                                       np.float32))
    except (TypeError, ValueError) as exc:
        raise InputError(f"init_code: expected a float array of {n} values, got {type(init_code).__name__} ({exc})") from None
    if c.numel() != n or c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1):
        raise InputError(f"init_code: expected shape ({n},) or (1, {n}) (the model's code), got {tuple(c.shape)}")
    if not bool(torch.isfinite(c).all()):
        raise InputError("init_code: contains NaN/Inf")
    return c.reshape(1, n).clone()


def _floats(terms: dict) -> dict:
    return {k: float(v) for k, v in terms.items()}
