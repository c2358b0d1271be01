"""Taichi kernels of mofa_tk, one module per stage of image formation.

Installed as `mofa_tk.kernels` (see docs/architecture.md). Kernels take `ti.types.ndarray()` arguments,
so torch tensors are passed without a copy on the CPU (x64) and CUDA backends. Every differentiable stage
has a hand-written adjoint kernel: Taichi's autodiff on ndarray arguments is unavailable on Vulkan.
"""
