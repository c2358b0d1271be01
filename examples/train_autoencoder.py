#!/usr/bin/env python
"""Train the MoFA autoencoder (encoder CNN + model-based decoder), the same as `mofa train`.

    python examples/train_autoencoder.py                          # synthetic faces, 64 px, built-in model
    python examples/train_autoencoder.py --steps 200 --out runs/quick
    python examples/train_autoencoder.py --data photos/ --steps 5000 --out runs/photos --cache runs/lmcache
    python examples/train_autoencoder.py --out runs/quick --resume --steps 400
    python examples/train_autoencoder.py --device cuda            # GPU end to end

The defaults need no data set and no download: random faces of the built-in model are rendered by the
decoder over random backgrounds. Writes OUT/checkpoint.pt (encoder, optimiser, step, RNG states, config),
loss.png, grid.png and the curves as CSV/JSON; `python examples/train_autoencoder.py --help` lists every
option and docs/training.md explains them. The trained encoder initialises a fit:
`mofa_tk.training.autoencoder.load_encoder("OUT/checkpoint.pt")`.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mofa_tk.apps.train_app import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
