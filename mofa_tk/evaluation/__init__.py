"""Evaluation of fits on real photos and 3D ground truth (`mofa eval`), and the metrics it reports."""
