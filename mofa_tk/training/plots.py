"""Pictures of a training run: the grid of held-out inputs and reconstructions, and the loss plot."""
from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from .autoencoder import MoFA

__all__ = ["save_grid", "plot_history"]


def _to_u8(img: torch.Tensor) -> np.ndarray:
    return (img.detach().float().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def _dots(img: np.ndarray, pts, colour, scale: int) -> None:
    H, W = img.shape[:2]
    for u, v in np.asarray(pts, np.float64):
        if not (np.isfinite(u) and np.isfinite(v)):
            continue
        j, i = int(u * scale), int(v * scale)
        r = max(1, scale // 2)
        img[max(i - r, 0):min(i + r, H), max(j - r, 0):min(j + r, W)] = colour


@torch.no_grad()
def save_grid(mofa: MoFA, batch: dict, path, n: int = 8) -> Path:
    """PNG grid of `n` samples: row 1 the input with its landmarks (green), row 2 the reconstruction (render
    composited over the input with the render's mask) with the predicted landmarks (red), row 3 the render
    alone on black. Tiles are upscaled (nearest) to at least 128 px."""

    was = mofa.training
    mofa.eval()
    n = min(n, batch["image"].shape[0])
    img = batch["image"][:n]
    _, out = mofa(img)
    mofa.train(was)
    mask = out["mask"].clamp(0, 1)
    recon = out["image"].clamp(0, 1) * mask + img * (1 - mask)
    S = img.shape[1]
    k = max(1, int(math.ceil(128 / S)))
    rows = []
    for r, (tiles, pts, col) in enumerate(((img, batch.get("landmarks"), (0, 255, 0)),
                                           (recon, out["landmarks2d"], (255, 40, 40)),
                                           (out["image"] * mask, None, None))):
        row = []
        for b in range(n):
            t = _to_u8(tiles[b]).repeat(k, 0).repeat(k, 1)
            if pts is not None:
                _dots(t, pts[b].cpu().numpy(), col, k)
            row.append(t)
            row.append(np.full((t.shape[0], 2, 3), 255, np.uint8))
        rows.append(np.concatenate(row[:-1], 1))
        rows.append(np.full((2, rows[-1].shape[1], 3), 255, np.uint8))
    grid = np.concatenate(rows[:-1], 0)
    path = Path(path)
    iio.imwrite(path, grid)
    return path


def plot_history(history: dict, path, title: str = "MoFA training") -> Path:
    """Loss-curve PNG: training loss (raw and smoothed) and its terms, and the held-out photometric loss, on a
    log scale against the step. Uses matplotlib when installed, else draws a plain chart with NumPy (no text)."""
    path = Path(path)
    steps = np.asarray(history.get("step", []), np.float64)
    loss = np.asarray(history.get("loss", []), np.float64)
    ev = history.get("eval", [])
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _plot_numpy(steps, loss, ev, path)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    ax = axes[0]
    if len(loss):
        ax.plot(steps, loss, color="0.75", lw=0.8, label="total (per step)")
        ax.plot(steps, _smooth(loss), color="k", lw=1.6, label="total (smoothed)")
        colours = {"vertex_photo": "tab:blue", "landmark": "tab:orange", "reg": "tab:green", "photo": "tab:purple"}
        for name, vals in history.get("terms", {}).items():
            if len(vals) == len(steps):
                ax.plot(steps, _smooth(np.asarray(vals, np.float64)), lw=1.0, color=colours.get(name),
                        label=f"{name} (weighted, smoothed)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    ax = axes[1]
    handles = []
    if ev:
        es = [e["step"] for e in ev]
        handles += ax.plot(es, [e["photo"] for e in ev], "o-", color="tab:blue", label="photometric (l2,1), left axis")
        if all("landmark_px" in e for e in ev):
            ax2 = ax.twinx()
            handles += ax2.plot(es, [e["landmark_px"] for e in ev], "s--", color="tab:orange",
                                label="landmark RMSE (px), right axis")
            ax2.set_ylabel("landmark RMSE (px)")
        ax.legend(handles=handles, fontsize=8, loc="upper right")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("photometric loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("held-out evaluation")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _smooth(x: np.ndarray, frac: float = 0.05) -> np.ndarray:
    """Centred moving average over ~5 % of the points (edges use the available neighbours)."""
    k = max(1, int(len(x) * frac)) | 1
    if k <= 1 or len(x) < 3:
        return x
    c = np.cumsum(np.r_[0.0, x])
    h = k // 2
    idx = np.arange(len(x))
    lo, hi = np.maximum(idx - h, 0), np.minimum(idx + h + 1, len(x))
    return (c[hi] - c[lo]) / (hi - lo)


def _plot_numpy(steps, loss, ev, path) -> Path:

    H, W, m = 300, 600, 20
    img = np.full((H, W, 3), 255, np.uint8)
    for i in range(m, H - m, 35):
        img[i, m:W - m] = 225
    series = [(steps, _smooth(loss), (0, 0, 0)), (np.asarray([e["step"] for e in ev], float),
                                                  np.asarray([e["photo"] for e in ev], float), (30, 90, 200))]
    vals = np.concatenate([s[1] for s in series if len(s[1])]) if len(loss) else np.ones(1)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    lo, hi = (np.log10(vals.min()), np.log10(vals.max())) if len(vals) else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1
    smax = max(float(steps.max()) if len(steps) else 1.0, 1.0)
    def to_px(x, y):
        ly = np.log10(np.maximum(y, 1e-30))
        return m + (W - 2 * m - 1) * x / smax, H - m - 1 - (H - 2 * m - 1) * (ly - lo) / (hi - lo)

    for xs, ys, col in series:
        if not len(xs):
            continue
        ju, iv = to_px(np.asarray(xs, float), np.asarray(ys, float))
        for j0, i0, j1, i1 in zip(ju[:-1], iv[:-1], ju[1:], iv[1:]):
            n = int(max(abs(j1 - j0), abs(i1 - i0))) + 2
            for t in np.linspace(0, 1, n):
                i, j = int(i0 + (i1 - i0) * t), int(j0 + (j1 - j0) * t)
                img[max(i - 1, 0):i + 1, max(j - 1, 0):j + 1] = col
    iio.imwrite(path, img)
    return path
