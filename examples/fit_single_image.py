"""Fit a 3D face model to one photo and write mesh.obj, params.json, overlay.png and landmarks.png.

    python examples/fit_single_image.py [IMAGE] [--model PATH] [--out DIR] [--landmarks FILE] [--iters N]
                                        [--backend NAME] [--seed N]

With no IMAGE it fits the astronaut portrait that ships with scikit-image (`skimage.data.astronaut()`, public
domain) with the built-in model and writes to ./mofa_fit_out. Same as `mofa fit` (mofa_tk/apps/fit_app.py);
see docs/fitting.md.
"""
import sys
from pathlib import Path

try:
    import mofa_tk  # noqa: F401
except ImportError:  # running from a source checkout that was not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mofa_tk.apps.fit_app import main

if __name__ == "__main__":
    sys.exit(main())
