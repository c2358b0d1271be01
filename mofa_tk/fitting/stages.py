"""The stages of a fit, as a table (`STAGE_TABLE`) that `fit` runs in order:

1. **pose**        closed-form weak-perspective pose from the inner 51 landmarks, then Levenberg-Marquardt (or
                   Adam) on the perspective landmark error (6 parameters).
2. **landmarks**   pose + shape + expression from the 68 landmarks with the statistical prior.
3. **appearance**  closed-form illumination and reflectance (regularised linear least squares).
4. **photometric** every block on MoFA's loss (dense l2,1 photometric term + landmarks + prior).

`fit_landmarks` and `fit_dense` are the optimisation loops of stages 1-2 and 4.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import losses as L
from ..rotation import axis_angle_to_matrix
from .inits import closed_form_pose, init_appearance
from .jacobians import GN_NORMALS, dense_jacobian, geometric_jacobian
from .problem import Problem, apply_delta, prior_hessian
from .solvers import StageLog, adam_loop, lm_loop

__all__ = ["fit_landmarks", "fit_dense", "STAGE_TABLE", "STAGES", "FitRun", "StageReport", "IRLS_FLOOR",
           "GN_NORMALS_EVERY"]

#: Floor of the residual norm in the IRLS weights of the l2,1 term (colour units in [0, 1]).
IRLS_FLOOR = 0.005
#: The normals' Jacobian is recomputed every this many Gauss-Newton matrices (it changes slowly; the gradient
#: is always exact).
GN_NORMALS_EVERY = 5


def profile_label(name: str):
    """torch.profiler label (a no-op unless a profiler is recording); benchmarks/bench_fit.py uses them."""
    return torch.profiler.record_function(name)


def fit_landmarks(prob: Problem, code, stage: StageLog, blocks, optimizer: str, tol: float):
    """Pose (+ shape + expression when in `blocks`) from the landmarks: LM or Adam."""
    layout = prob.layout
    reg_blocks = tuple(b for b in ("shape", "expression") if b in blocks)
    if optimizer == "adam":
        it = [0]

        def lm_loss(c):
            if it[0] % 5 == 0:
                prob.slide_jaw(c)
            it[0] += 1
            return prob.landmark_loss(c, reg_blocks=reg_blocks)

        return adam_loop(stage, layout, code, blocks, lm_loss, tol)

    w_lm = prob.w["landmark"]
    lw = prob.lm_w.double() if prob.lm_w is not None else torch.ones(68, dtype=torch.float64)

    def make_R(c):
        return axis_angle_to_matrix(c[:, layout.slices["rotation"]].double())[0]

    def loss_at(c, R):
        return float(prob.landmark_loss(c, R.float(), reg_blocks=reg_blocks)[0])

    def build(state):
        c = code if state is None else state
        R = make_R(c)
        prob.slide_jaw(c, R)                     # the jaw points for this pose, fixed until the next build
        idx, ok = prob.lm_idx, prob.lm_ok
        n_ok = max(int(ok.sum()), 1)
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
        Jg, _ = geometric_jacobian(prob, R, y, x, idx, blocks)              # (68, 2, P)
        W = (lw * ok.double()) * (2.0 * w_lm / n_ok)
        H = torch.einsum("n,nip,niq->pq", W[ok], Jg[ok], Jg[ok])
        if prob.dense:
            H = H + dense_gauss_newton(prob, R, bl, blocks)
        H = H + prior_hessian(prob, blocks, reg_blocks)
        return float(loss.detach()), g, H, None, c

    def apply_step(state, delta, ctx):
        return apply_delta(prob, state, delta, blocks)

    def evaluate(state, ctx):
        with torch.no_grad():
            return loss_at(state, make_R(state))

    state, first = lm_loop(stage, evaluate, build, apply_step, tol)
    return state, first


def dense_gauss_newton(prob: Problem, R, bl, blocks):
    """Gauss-Newton matrix (P, P) float64 of the dense MediaPipe term for `blocks` (exact for that term) at
    the code blocks `bl` (float64) with rotation R (3, 3)."""
    ok = prob.dense_ok
    n_ok = max(int(ok.sum()), 1)
    v = prob.d_mean.double() + prob.d_S.double() @ bl["shape"][0] + prob.d_E.double() @ bl["expression"][0]
    y = (v - prob.dec.center.double()) @ R.double().T
    x = y + (prob.dec.default_translation.double() + bl["translation"][0])
    J, _ = geometric_jacobian(prob, R.double(), y[ok], x[ok], prob.dense_idx[ok], blocks)
    W = prob.dense_w.double()[ok] * (2.0 * prob.w_dense / n_ok)
    H = torch.einsum("n,nip,niq->pq", W, J, J)
    if prob.w_depth:
        # depth term: r = a + alpha k (Z - mean Z); alpha and k held fixed (Gauss-Newton)
        _, _, alpha, k = prob.depth_scale(x[:, 2].float())
        Jz = depth_jacobian(prob, R.double(), y[ok], prob.dense_idx[ok], blocks)          # (n, P)
        Jr = float(alpha) * float(k) * (Jz - Jz.mean(0, keepdim=True))
        Wz = prob.dense_w.double()[ok] * (2.0 * prob.w_depth / n_ok)
        H = H + torch.einsum("n,np,nq->pq", Wz, Jr, Jr)
    return H


def depth_jacobian(prob: Problem, R, y, idx, blocks):
    """d(camera-space z)/d(params) (n, P) of vertices `idx` (y = R (v - center), (n, 3)), blocks as
    `geometric_jacobian`."""
    cols = []
    for b in blocks:
        if b == "rotation":
            cols.append(torch.stack([y[:, 1], -y[:, 0], torch.zeros_like(y[:, 0])], -1))   # row 2 of -[y]x
        elif b == "translation":
            cols.append(torch.tensor([0.0, 0.0, 1.0], dtype=y.dtype).expand(len(y), 3))
        elif b == "shape":
            cols.append((prob.model.shape_basis[idx].to(y.dtype) * prob.model.shape_std.to(y.dtype))
                        .transpose(1, 2) @ R[2])
        elif b == "expression":
            cols.append((prob.model.expr_basis[idx].to(y.dtype) * prob.model.expr_std.to(y.dtype))
                        .transpose(1, 2) @ R[2])
    return torch.cat(cols, -1)


def fit_dense(prob: Problem, code, stage: StageLog, optimizer: str, tol: float, blocks=None):
    """The code's blocks (default all; `blocks` names a subset) on MoFA's loss."""
    layout = prob.layout
    blocks = [b for b in layout.sizes if layout.sizes[b] > 0 and (blocks is None or b in blocks)]
    if optimizer == "adam":
        cache = {"vis": None, "it": 0}

        def loss_fn(c):
            refresh = cache["vis"] is None or cache["it"] % 5 == 0 or not c.requires_grad
            if refresh:
                prob.slide_jaw(c)
            g = prob.geometry(c)
            if refresh:
                cache["vis"] = prob.visibility(g)
            cache["it"] += 1
            return prob.dense_loss(g, cache["vis"])

        return adam_loop(stage, layout, code, blocks, loss_fn, tol)

    geo_blocks = [b for b in blocks if b in ("rotation", "translation", "shape", "expression")]
    P = sum(layout.sizes[b] for b in blocks)
    w_ph, w_lm = prob.w["vertex_photo"], prob.w["landmark"]
    lw = prob.lm_w.double() if prob.lm_w is not None else torch.ones(68, dtype=torch.float64)
    reg_blocks = tuple(b for b in ("shape", "expression", "reflectance", "illumination", "rotation", "translation")
                       if prob.reg_w.get(b, 0.0))
    prior = prior_hessian(prob, blocks, reg_blocks)
    if prob.anchor:                       # the anchor's Gauss-Newton part: 2 w_reg w_anchor on its blocks
        o = 0
        for b in blocks:
            if b in prob.anchor[1]:
                idx = torch.arange(o, o + layout.sizes[b])
                prior[idx, idx] += 2.0 * prob.w["reg"] * prob.anchor[0]
            o += layout.sizes[b]
    off = {}
    o = 0
    for b in blocks:
        off[b] = o
        o += layout.sizes[b]
    cache = {"dn": None, "builds": 0}

    def build(state):
        c = code if state is None else state
        R0 = axis_angle_to_matrix(c[:, layout.slices["rotation"]].double())[0]
        prob.slide_jaw(c, R0)
        ok = prob.lm_ok
        n_ok = max(int(ok.sum()), 1)
        dw = torch.zeros(3, dtype=torch.float32, requires_grad=True)
        rest = c.detach().clone().requires_grad_(True)
        Rw = axis_angle_to_matrix(dw[None])[0] @ R0.float()
        with profile_label("fit:forward"):
            g = prob.geometry(rest, Rw)
        with profile_label("fit:visibility"):
            vis = prob.visibility(g)
        with profile_label("fit:loss"):
            loss, _ = prob.dense_loss(g, vis)
        with profile_label("fit:backward"):
            gw, gc = torch.autograd.grad(loss, [dw, rest])
        grad = torch.cat([gw.double()] + [gc[0, layout.slices[b]].double() for b in blocks if b != "rotation"])

        # ---- approximate Gauss-Newton matrix (closed form; float32 products, float64 accumulation)
        with torch.no_grad(), profile_label("fit:gauss_newton_matrix"):
            use = (vis & prob.not_boundary[None])[0]
            H = prior.clone()
            if cache["dn"] is None or cache["builds"] % GN_NORMALS_EVERY == 0:
                with profile_label("fit:normal_jacobian"):
                    cache["dn"] = prob.normal_jacobian(g["verts"][0].detach()) if GN_NORMALS else None
            cache["builds"] += 1
            jac = dense_jacobian(prob, g, R0, use, blocks, dn_model=cache["dn"])
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
                wv = (w_ph / len(idx)) / r.norm(dim=-1).clamp(min=IRLS_FLOOR)
                A = (J * wv.sqrt()[:, None, None]).reshape(-1, P)
                H += (A.T @ A).double()
            # landmarks (exact Gauss-Newton for that term)
            lx = g["verts_cam"][0, prob.lm_idx].detach().double()
            ly = (g["verts"][0, prob.lm_idx].detach().double() - prob.dec.center.double()) @ R0.T
            Jl, _ = geometric_jacobian(prob, R0, ly, lx, prob.lm_idx, geo_blocks)
            Jl_full = torch.zeros(68, 2, P, dtype=torch.float64)
            pg = 0
            for b in geo_blocks:
                nb = layout.sizes[b]
                Jl_full[:, :, off[b]:off[b] + nb] = Jl[:, :, pg:pg + nb]
                pg += nb
            W = (lw * 2.0 * w_lm / n_ok)
            H += torch.einsum("n,nip,niq->pq", W[ok], Jl_full[ok], Jl_full[ok])
            if prob.dense:
                Hd = dense_gauss_newton(prob, R0, layout.split(c.detach().double()), geo_blocks)
                gi = torch.cat([torch.arange(off[b], off[b] + layout.sizes[b]) for b in geo_blocks])
                H[gi[:, None], gi[None, :]] += Hd
        return float(loss.detach()), grad, H, {"vis": vis}, c

    def apply_step(state, delta, ctx):
        return apply_delta(prob, state, delta, blocks)

    def evaluate(state, ctx):
        with torch.no_grad(), profile_label("fit:trial_step"):
            g = prob.geometry(state)
            return float(prob.dense_loss(g, ctx["vis"])[0])

    state, first = lm_loop(stage, evaluate, build, apply_step, tol)
    return state, first


# ============================================================================================ the stage table
@dataclass
class FitRun:
    """What the stages of one fit share: the problem, the optimiser settings, the encoder's code (if any),
    the progress bar, and what an earlier stage decided."""

    prob: Problem
    optimizer: str
    tol: float
    max_iters: dict
    bar: object = None
    enc_code: torch.Tensor | None = None
    photometric_blocks: tuple | None = None    # None: every block
    photometric_anchor: float = 0.0           # prior weight on shape / expression changes in the photometric stage
    pose_init: str = "closed-form"
    final: float = float("nan")          # the last stage's final loss


@dataclass
class StageReport:
    """One stage's entry of `FitResult.losses` ({"initial", "final", "terms", ...}), its iterations and whether
    it stopped on its tolerance before its iteration limit."""

    losses: dict
    iterations: int
    converged: bool


def _floats(terms: dict) -> dict:
    return {k: float(v) for k, v in terms.items()}


def pose_stage(run: FitRun, code: torch.Tensor):
    """Closed-form pose (or the encoder's, when its landmark loss is lower), then rotation + translation."""
    prob = run.prob
    code = closed_form_pose(prob, code)
    if run.enc_code is not None:
        with torch.no_grad():
            cf_loss = float(prob.landmark_loss(code, reg_blocks=())[0])
            enc_loss = float(prob.landmark_loss(run.enc_code, reg_blocks=())[0])
        if math.isfinite(enc_loss) and enc_loss <= cf_loss:
            code, run.pose_init = run.enc_code.clone(), "encoder"
    st = StageLog("pose", run.max_iters["pose"], run.bar)
    code, first = fit_landmarks(prob, code, st, ["rotation", "translation"], run.optimizer, run.tol) \
        if st.max_iters else (code, float(prob.landmark_loss(code, reg_blocks=())[0]))
    with torch.no_grad():
        fin, terms = prob.landmark_loss(code, reg_blocks=())
    run.final = float(fin)
    return code, StageReport({"initial": float(first), "final": float(fin), "terms": _floats(terms),
                              "init": run.pose_init}, st.iterations, st.converged)


def landmark_stage(run: FitRun, code: torch.Tensor):
    """Pose + shape + expression on the landmarks with the statistical prior."""
    prob = run.prob
    st = StageLog("landmarks", run.max_iters["landmarks"], run.bar)
    if st.max_iters:
        code, first = fit_landmarks(prob, code, st, ["rotation", "translation", "shape", "expression"],
                                    run.optimizer, run.tol)
    else:
        first = float(prob.landmark_loss(code)[0])
    with torch.no_grad():
        fin, terms = prob.landmark_loss(code)
    run.final = float(fin)
    return code, StageReport({"initial": float(first), "final": float(fin), "terms": _floats(terms)},
                             st.iterations, st.converged)


def appearance_stage(run: FitRun, code: torch.Tensor):
    """Closed-form illumination and reflectance; the encoder's are kept when they explain the crop better."""
    prob = run.prob
    before = float(prob.dense_eval(code)[0])
    closed = init_appearance(prob, code)
    fin, terms = prob.dense_eval(closed)
    init = "closed-form"
    if run.enc_code is not None and run.pose_init == "encoder" and before < float(fin):
        # the encoder's reflectance and illumination (kept in `code` since the pose stage) explain the crop
        # better than the closed-form estimate: keep them
        fin, terms = prob.dense_eval(code)
        init = "encoder"
    else:
        code = closed
    run.final = float(fin)
    return code, StageReport({"initial": before, "final": float(fin), "terms": _floats(terms), "init": init},
                             1, True)


def photometric_stage(run: FitRun, code: torch.Tensor):
    """Every block on MoFA's dense loss."""
    prob = run.prob
    st = StageLog("photometric", run.max_iters["photometric"], run.bar)
    if run.photometric_anchor > 0:
        bl = prob.layout.split(code.detach())
        prob.anchor = (run.photometric_anchor, {b: bl[b][0].clone() for b in ("shape", "expression")})
    if st.max_iters:
        code, first = fit_dense(prob, code, st, run.optimizer, run.tol, run.photometric_blocks)
    else:
        first = run.final
    fin, terms = prob.dense_eval(code)
    run.final = float(fin)
    return code, StageReport({"initial": float(first), "final": float(fin), "terms": _floats(terms),
                              "history": st.history, "times": st.times}, st.iterations, st.converged)


#: The stages of `fit` in the order they run: (name, runner(run, code) -> (code, StageReport)). The names are
#: the keys of FitResult.losses / timings / iterations / converged.
STAGE_TABLE = (("pose", pose_stage), ("landmarks", landmark_stage), ("appearance", appearance_stage),
               ("photometric", photometric_stage))
STAGES = tuple(name for name, _ in STAGE_TABLE)
