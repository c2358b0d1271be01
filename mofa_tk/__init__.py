"""mofa_tk: differentiable rendering of 3D faces (MoFA) with Taichi kernels as PyTorch autograd ops.

Quick start::

    import mofa_tk
    mofa_tk.init("auto")                     # or MOFA_TK_BACKEND=cpu|cuda|vulkan
    model = mofa_tk.builtin_model()
    verts = mofa_tk.morph(model, alpha, delta)              # (B, V, 3) mm
    clip = mofa_tk.to_clip(mofa_tk.rigid(verts, rot, trans), focal, principal, (H, W))
    rast = mofa_tk.rasterize(clip, model.triangles, (H, W))  # nvdiffrast conventions
"""
from __future__ import annotations

import importlib.util as _ilu
import os as _os
import sys as _sys


def _register_kernels_from_source_tree() -> None:
    """Make `mofa_tk.kernels` importable when running from a source checkout that was not installed.

    Installed (wheel or editable), setuptools maps the repository's top-level `kernels/` folder to the
    sub-package `mofa_tk.kernels`. Run straight from a checkout, that mapping does not exist, so we
    register the same folder under the same name here. `kernels` is never importable as a top-level name.
    """
    if "mofa_tk.kernels" in _sys.modules:
        return
    try:
        if _ilu.find_spec("mofa_tk.kernels") is not None:
            return
    except ModuleNotFoundError:
        pass
    root = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "kernels")
    init_py = _os.path.join(root, "__init__.py")
    if not _os.path.exists(init_py):
        raise ImportError("mofa_tk.kernels not found: neither installed nor beside the source tree")
    spec = _ilu.spec_from_file_location("mofa_tk.kernels", init_py, submodule_search_locations=[root])
    module = _ilu.module_from_spec(spec)
    _sys.modules["mofa_tk.kernels"] = module
    spec.loader.exec_module(module)


_register_kernels_from_source_tree()

from .backend import init, current_backend, available_backends  # noqa: E402
from .errors import MofaError, ModelFormatError, BackendUnavailableError, InputError  # noqa: E402
from .camera import Camera  # noqa: E402
from .mesh import Mesh  # noqa: E402
from .ops import (morph, rigid, project, to_clip, rasterize, interpolate, antialias,  # noqa: E402
                  vertex_normals, sh_shade, ambient_sh, sh_basis, texture, texture_construct_mip)
from .rotation import axis_angle_to_matrix  # noqa: E402
from .face import FaceModel, Code, FaceDecoder, Geometry, Shading, Render, builtin_model  # noqa: E402
from .io import load_model  # noqa: E402
from . import losses, landmarks  # noqa: E402
from .evaluation import metrics  # noqa: E402
from .training import data  # noqa: E402
from .training import Encoder, MoFA, load_encoder  # noqa: E402
from .fitting import fit, FitResult  # noqa: E402  (`mofa_tk.fit` is the function; the code is mofa_tk.fitting)

# Module paths before the package was laid out by concern: `import mofa_tk.raster`, `from mofa_tk.decoder import
# FaceDecoder` and `mofa_tk.data.SyntheticFaces` keep working as aliases of the modules' new homes.
_MOVED = {"geometry": "ops.geometry", "raster": "ops.raster", "shading": "ops.shading", "model": "face.model",
          "code": "face.code", "decoder": "face.decoder", "builtin": "face.builtin", "loaders": "io.models",
          "data": "training.data", "encoder": "training.encoder", "autoencoder": "training.autoencoder",
          "train": "training.train", "metrics": "evaluation.metrics"}
for _old, _new in _MOVED.items():
    _sys.modules[f"{__name__}.{_old}"] = globals()[_old] = _sys.modules[f"{__name__}.{_new}"]
del _old, _new

__version__ = "0.1.0"

__all__ = [
    "init", "current_backend", "available_backends",
    "MofaError", "ModelFormatError", "BackendUnavailableError", "InputError",
    "Camera", "Mesh", "FaceModel", "builtin_model", "load_model",
    "morph", "rigid", "project", "to_clip", "axis_angle_to_matrix",
    "rasterize", "interpolate", "antialias", "texture", "texture_construct_mip",
    "vertex_normals", "sh_shade", "ambient_sh", "sh_basis",
    "Code", "FaceDecoder", "Geometry", "Shading", "Render", "losses", "metrics", "landmarks", "data", "fit", "FitResult",
    "Encoder", "MoFA", "load_encoder",
]
