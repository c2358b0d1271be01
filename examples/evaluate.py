"""Fit every photo of a folder with one or more face models and write an evaluation report.

    python examples/evaluate.py FOLDER [--model builtin|PATH ...] [--out DIR] [--limit N]
                                [--landmarks detect|annotation] [--iters N] [--synthetic N]

Writes report.md (per-image and summary landmark NME against the annotations beside the photos, 3D errors
on AFLW2000-3D photos, fit times, failures with their reasons), results.json and a contact sheet of the fits
per model to --out (default ./mofa_eval_out). Example, on the real photos beside a checkout:

    python examples/evaluate.py ../shared/data/images --model builtin \
        --model ../shared/data/models/eos_sfm/sfm_shape_3448.bin \
        --model ../shared/data/models/ict_facekit/ict_facekit_light.npz

Same as `mofa eval` (mofa_tk/apps/eval_app.py); see docs/evaluation.md.
"""
import sys
from pathlib import Path

try:
    import mofa_tk  # noqa: F401
except ImportError:  # running from a source checkout that was not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mofa_tk.apps.eval_app import main

if __name__ == "__main__":
    sys.exit(main())
