"""The face: morphable model (`FaceModel`), the code layout (`Code`), the decoder (`FaceDecoder`) and the
procedurally generated built-in model (`builtin_model`)."""
from .builtin import builtin_model
from .code import BLOCKS, Code
from .decoder import FaceDecoder, Geometry, Render, Shading
from .model import FaceModel

__all__ = ["FaceModel", "Code", "BLOCKS", "FaceDecoder", "Geometry", "Shading", "Render", "builtin_model"]
