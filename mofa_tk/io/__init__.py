"""Reading and writing files: photos and outputs (`images`), face models in their native formats (`models`)."""
from .images import (MAX_PIXELS, MIN_SIDE, WORK_MAX_SIDE, ImageFileError, LoadedImage, load_image, to_rgb, write_json,
                     write_obj, write_png)
from .models import load_model, read_landmark_mapping

__all__ = ["ImageFileError", "LoadedImage", "load_image", "to_rgb", "write_obj", "write_png", "write_json",
           "MIN_SIDE", "MAX_PIXELS", "WORK_MAX_SIDE", "load_model", "read_landmark_mapping"]
