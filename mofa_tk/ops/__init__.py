"""Differentiable ops: Taichi kernels (`mofa_tk.kernels`, one file per stage) behind `torch.autograd.Function`s.

| module     | ops                                                   | kernels                        |
|------------|-------------------------------------------------------|--------------------------------|
| geometry   | morph, albedo, rigid, project, to_clip                | morph, pose                    |
| raster     | rasterize, interpolate, antialias                     | raster, interpolate, antialias |
| shading    | vertex_normals, sh_shade (+ torch sh_basis helpers)   | lighting                       |
| texture    | texture (nearest, bilinear, mipmaps), mip pyramids     | texture                        |
"""
from .geometry import albedo, morph, project, rigid, to_clip
from .raster import antialias, interpolate, rasterize
from .shading import ambient_sh, sh_basis, sh_basis_jacobian, sh_shade, vertex_normals
from .texture import texture, texture_construct_mip

__all__ = ["morph", "albedo", "rigid", "project", "to_clip", "rasterize", "interpolate", "antialias",
           "vertex_normals", "sh_shade", "ambient_sh", "sh_basis", "sh_basis_jacobian", "texture",
           "texture_construct_mip"]
