"""Evaluation of fits on real photos and 3D ground truth (`mofa eval`, docs/evaluation.md).

| module     | concern                                                                  |
|------------|--------------------------------------------------------------------------|
| metrics    | NME, Procrustes alignment, point-to-point RMSE, depth correlation        |
| landmarks  | the 68 / 5-point NME and 3D landmark error of `mofa eval`                |
| runner     | models to evaluate, one photo's row of metrics, summaries                |
| synthetic  | synthetic faces with known meshes, fitted and scored                     |
| scan       | NoW-style scan-to-mesh error of a fit against a 3D scan                  |
| scan_views | fits of rendered views of a scan, scored against it                      |
| tiles      | overlay and failure tiles, contact sheet                                 |
| report     | report.md / results.json and the summary plot                           |

The annotation readers are in `mofa_tk.io.annotations`, the folder scan in `mofa_tk.io.images`.
"""
from ..io.annotations import (ANNOTATION_FORMATS, Annotation, find_annotation, read_annotation_mat,
                              read_five_point_txt, read_ljson, read_pts68)
from ..io.images import IMAGE_EXTENSIONS, scan_images
from .landmarks import (INNER49, aflw_gt_3d, describe_points, five_from_68, landmark_3d_error, model_landmark_points,
                        nme5, nme68)
from .report import summary_plot, timestamp, write_report
from .runner import albedo_note, evaluate_image, load_eval_model, summarize
from .synthetic import FACE_RADIUS_MM, evaluate_synthetic, face_region, summarize_synthetic, synthetic_face
from .tiles import contact_sheet, failure_tile, overlay_tile

__all__ = [
    "IMAGE_EXTENSIONS", "ANNOTATION_FORMATS", "INNER49", "FACE_RADIUS_MM", "Annotation", "scan_images",
    "read_pts68", "read_annotation_mat", "read_five_point_txt", "read_ljson", "find_annotation",
    "five_from_68", "nme68", "nme5", "model_landmark_points", "describe_points", "landmark_3d_error",
    "aflw_gt_3d", "evaluate_image", "summarize", "overlay_tile", "failure_tile", "contact_sheet",
    "write_report", "face_region", "synthetic_face", "evaluate_synthetic", "summarize_synthetic",
    "load_eval_model", "summary_plot", "albedo_note", "timestamp",
]
