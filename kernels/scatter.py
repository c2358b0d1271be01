"""How backward kernels scatter per-pixel adjoints into per-vertex gradients.

Many pixels add into the same vertex. On GPUs the kernels do that with atomic adds (mode ATOMIC). On the CPU
atomics are slow, and two threads adding into the same cache lines (neighbouring pixels share vertices) stall
each other: there the kernels add without atomics into one copy of the gradient per CPU thread (mode COPIES,
the copy chosen by `ti.global_thread_idx()`), and the caller sums the copies. Like atomics, which thread
handles which pixel varies from run to run, so the sums may differ in the last bits between runs.

A deterministic split into fixed strips does not work here: Taichi 1.7's CPU backend cuts a loop whose bounds
are kernel arguments into one contiguous chunk per thread, of at least 512 iterations, so a loop over a few
hundred strips would run on one thread.
"""
import taichi as ti

ATOMIC, COPIES = 0, 1


@ti.func
def copy_base(size):
    """Offset of the calling CPU thread's gradient copy of `size` elements."""
    return ti.global_thread_idx() * size


@ti.func
def scatter_base(size, scatter: ti.template()):
    """Offset of the gradient copy the calling thread adds into: its own copy of `size` elements (COPIES), or the
    single shared one (ATOMIC)."""
    base = 0
    if ti.static(scatter == COPIES):
        base = copy_base(size)
    return base


@ti.func
def add(arr: ti.template(), i, x, scatter: ti.template()):
    """arr[i] += x: atomically (ATOMIC) or as a plain add into the calling thread's own copy (COPIES)."""
    if ti.static(scatter == ATOMIC):
        ti.atomic_add(arr[i], x)
    else:
        arr[i] = arr[i] + x
