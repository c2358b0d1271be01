"""Pictures of `mofa eval`: a fit drawn over its photo, a failure tile, and the contact sheet of tiles."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import InputError

__all__ = ["overlay_tile", "failure_tile", "contact_sheet"]


def _resize(img: np.ndarray, hw) -> np.ndarray:
    """(h, w, 3) float32 [0, 1] resized (PIL, area-like 'box' downscaling, bilinear upscaling)."""
    u8 = np.clip(np.rint(np.asarray(img, np.float64) * 255), 0, 255).astype(np.uint8)
    im = Image.fromarray(u8)
    H, W = int(hw[0]), int(hw[1])
    down = H * W < u8.shape[0] * u8.shape[1]
    im = im.resize((max(W, 1), max(H, 1)), Image.Resampling.BOX if down else Image.Resampling.BILINEAR)
    return np.asarray(im, np.float32) / 255.0


def _square_box(points, H, W, margin=0.35):
    p = np.asarray(points, np.float64)
    p = p[np.isfinite(p).all(1)]
    if not len(p):
        return 0, 0, W, H
    lo, hi = p.min(0), p.max(0)
    c = (lo + hi) / 2
    half = max((hi - lo).max() * (0.5 + margin), 8.0)
    return (int(max(math.floor(c[0] - half), 0)), int(max(math.floor(c[1] - half), 0)),
            int(min(math.ceil(c[0] + half), W)), int(min(math.ceil(c[1] + half), H)))


def _fit_in_square(img: np.ndarray, size: int) -> tuple:
    h, w = img.shape[:2]
    k = size / max(h, w)
    nh, nw = max(1, round(h * k)), max(1, round(w * k))
    out = np.zeros((size, size, 3), np.float32)
    oy, ox = (size - nh) // 2, (size - nw) // 2
    out[oy:oy + nh, ox:ox + nw] = _resize(img, (nh, nw))
    return out, k, ox, oy


def overlay_tile(res, photo: np.ndarray, size: int = 192, alpha: float = 0.7, draw_target: bool = True) -> np.ndarray:
    """Contact-sheet tile: the fitted render blended over the photo, cut to the face and resized.

    res:    FitResult; photo: (H, W, 3) float32 [0, 1] working image the fit used.
    draw_target: draw the landmarks the fit started from (`res.target_landmarks`) as green dots; the fitted
            landmarks (`res.landmarks`) are always drawn, in red.
    Returns (size, size, 3) float32 in [0, 1]. The render is made at most 1024 px on its long side.
    """
    render, mask = res.render_original(max_side=1024)
    H, W = photo.shape[:2]
    h, w = render.shape[:2]
    k = w / W
    small = photo if (h, w) == (H, W) else _resize(photo, (h, w))
    m = alpha * mask[..., None]
    blend = np.clip(small * (1 - m) + render * m, 0, 1)
    pts = np.asarray(res.target_landmarks, np.float64) * k
    u0, v0, u1, v1 = _square_box(pts, h, w)
    crop = blend[v0:v1, u0:u1]
    tile, kk, ox, oy = _fit_in_square(crop, size)
    dots = []
    if draw_target:
        dots.append((np.asarray(res.target_landmarks, np.float64), (0.1, 1.0, 0.2)))
    dots.append((np.asarray(res.landmarks, np.float64), (1.0, 0.15, 0.1)))
    r = max(1.0, size / 160)
    for pts_, col in dots:
        q = (pts_ * k - (u0, v0)) * kk + (ox, oy)
        for u, v in q[np.isfinite(q).all(1)]:
            i0, i1 = int(max(v - r, 0)), int(min(v + r + 1, size))
            j0, j1 = int(max(u - r, 0)), int(min(u + r + 1, size))
            if i0 < i1 and j0 < j1:
                tile[i0:i1, j0:j1] = col
    return tile


def failure_tile(photo: np.ndarray | None, size: int = 192) -> np.ndarray:
    """Tile for a failed image: the darkened photo (or black when unreadable) with a red border and cross.
    Returns (size, size, 3) float32."""
    if photo is None:
        tile = np.zeros((size, size, 3), np.float32)
    else:
        tile = _fit_in_square(np.asarray(photo, np.float32), size)[0] * 0.45
    b = max(2, size // 64)
    red = np.array([0.9, 0.1, 0.1], np.float32)
    tile[:b], tile[-b:], tile[:, :b], tile[:, -b:] = red, red, red, red
    t = np.arange(size)
    for d in range(-b // 2, b // 2 + 1):
        j = np.clip(t + d, 0, size - 1)
        tile[t, j] = red
        tile[t, size - 1 - j] = red
    return tile


def contact_sheet(tiles: list, captions: list, path, columns: int = 10, title: str | None = None) -> Path:
    """Write a grid of tiles with a caption under each as a PNG.

    tiles: list of (s, s, 3) float32 [0, 1] (same s); captions: list of str (same length); columns: tiles
    per row; title: optional line at the top. Returns the written path. Captions use PIL's default font.
    """

    if len(tiles) != len(captions):
        raise InputError(f"tiles and captions must have the same length, got {len(tiles)} and {len(captions)}")
    if not tiles:
        raise InputError("contact_sheet: no tiles")
    s = tiles[0].shape[0]
    cols = max(1, min(int(columns), len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    cap_h, top = 16, (22 if title else 0)
    sheet = Image.new("RGB", (cols * s, top + rows * (s + cap_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    if title:
        draw.text((4, 4), title, fill=(0, 0, 0), font=font)
    for n, (t, c) in enumerate(zip(tiles, captions)):
        i, j = divmod(n, cols)
        x, y = j * s, top + i * (s + cap_h)
        sheet.paste(Image.fromarray(np.clip(np.rint(t * 255), 0, 255).astype(np.uint8)), (x, y))
        draw.text((x + 2, y + s + 2), str(c)[: max(8, s // 6)], fill=(0, 0, 0), font=font)
    p = Path(path)
    sheet.save(p)
    return p
