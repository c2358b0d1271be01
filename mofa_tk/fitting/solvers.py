"""The optimisers of the fitting stages: Levenberg-Marquardt (`lm_loop`) and Adam (`adam_loop`), and the
per-stage bookkeeping (`StageLog`: loss history, iterations, convergence, progress bar)."""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..face.code import Code

__all__ = ["StageLog", "lm_solve", "lm_loop", "adam_loop", "ADAM_LR"]

#: Adam learning rates per code block (units of the block: rad, mm, std, SH) used by optimizer="adam".
ADAM_LR = {"rotation": 5e-3, "translation": 1.0, "shape": 5e-2, "expression": 5e-2, "reflectance": 5e-2,
           "illumination": 1e-2}


class StageLog:
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


def lm_solve(H, g, lam):
    """(H + lam * diag(H)) d = -g in float64 (Marquardt scaling, with a floor on the diagonal)."""
    d = torch.diagonal(H)
    Dm = d.clamp(min=1e-9 * float(d.max()) + 1e-12)
    A = H + lam * torch.diag(Dm)
    try:
        return -torch.linalg.solve(A, g)
    except RuntimeError:
        return -torch.linalg.lstsq(A, g[:, None]).solution[:, 0]


def lm_loop(stage: StageLog, evaluate, build, apply_step, tol: float, lam0: float = 1e-3):
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
            delta = lm_solve(H, g, lam)
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


def adam_loop(stage: StageLog, layout: Code, code: torch.Tensor, active, loss_fn, tol: float, lrs=None):
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
