"""Render the built-in face model: mean face and +-3 sigma of a few components (docs/img/builtin_model.png).

    python examples/render_builtin_model.py [--out docs/img/builtin_model.png] [--size 160]
"""
import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

import mofa_tk


def render(decoder, blocks_list):
    code = decoder.code.join({k: torch.cat([b[k] for b in blocks_list]) for k in blocks_list[0]})
    with torch.no_grad():
        out = decoder(code)
    img = out["image"] + (1 - out["mask"]) * 1.0  # white background
    return (img.clamp(0, 1).numpy() * 255).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/img/builtin_model.png")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--backend", default=None)
    args = ap.parse_args()
    mofa_tk.init(args.backend)
    model = mofa_tk.builtin_model()
    dec = mofa_tk.FaceDecoder(model, image_size=args.size)
    names = {k: model.meta[f"{k}_names"] for k in ("shape", "expr", "albedo")}
    zero = dict(dec.code.split(dec.code.zeros(1)))
    key_light = torch.zeros(1, 27)
    for c in range(3):  # a soft key light from the upper left, same for every panel
        key_light[0, 9 * c + 1] = 0.25
        key_light[0, 9 * c + 3] = -0.2
        key_light[0, 9 * c + 2] = 0.15

    def blocks(**over):
        b = {k: v.clone() for k, v in zero.items()}
        b["illumination"] = key_light.clone()
        for k, v in over.items():
            b[k] = v
        return b

    rows = []
    comps = [("shape", names["shape"].index("face_width") if "face_width" in names["shape"] else 0),
             ("shape", names["shape"].index("nose_size") if "nose_size" in names["shape"] else 3),
             ("expression", names["expr"].index("jaw_open") if "jaw_open" in names["expr"] else 0),
             ("expression", names["expr"].index("smile") if "smile" in names["expr"] else 1),
             ("reflectance", names["albedo"].index("skin_tone") if "skin_tone" in names["albedo"] else 0)]
    panels = [blocks(), blocks(rotation=torch.tensor([[0.0, 0.6, 0.0]]))]
    labels = ["mean", "mean, 35 deg yaw"]
    for block, k in comps:
        for s in (-3.0, 3.0):
            v = zero[block].clone()
            v[0, k] = s
            panels.append(blocks(**{block: v}))
            key = {"shape": "shape", "expression": "expr", "reflectance": "albedo"}[block]
            labels.append(f"{names[key][k]} {s:+.0f} sd")
    imgs = render(dec, panels)
    n = len(imgs)
    cols = 6
    rows_n = (n + cols - 1) // cols
    H = W = args.size
    sheet = np.full((rows_n * H, cols * W, 3), 255, np.uint8)
    for i, im in enumerate(imgs):
        r, c = divmod(i, cols)
        sheet[r * H:(r + 1) * H, c * W:(c + 1) * W] = im
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(args.out, sheet)
    print(f"wrote {args.out}: " + ", ".join(labels))


if __name__ == "__main__":
    main()
