"""Test helpers: finite differences in float64 of NumPy reference functions."""
import numpy as np


def numeric_grad(f, x, eps=1e-6):
    """Central finite differences of scalar f at float64 array x (any shape)."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f(x)
        flat[i] = old - eps
        fm = f(x)
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def rel_err(a, b):
    """Relative error ||a - b|| / max(||b||, tiny), as float."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def np_rodrigues(r):
    """Rotation matrix of axis-angle r (3,) by Rodrigues' formula, float64 NumPy (reference for the ops)."""
    th = np.linalg.norm(r)
    if th < 1e-12:
        return np.eye(3)
    k = r / th
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K
