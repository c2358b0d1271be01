"""A small LRU cache for per-mesh tables (triangle neighbours, vertex -> face adjacency), keyed on a tensor's
identity: its data pointer, shape, dtype, in-place version and device. Each entry holds the key tensor, so its
address cannot be reused by another tensor while the entry lives, and an in-place edit (a new version) misses.
"""
from __future__ import annotations

from collections import OrderedDict

import torch


class TensorKeyedCache:
    """`cache.get(key_tensor, extra, build)`: the value built by `build()` for this tensor (and the hashable
    `extra`, e.g. the target device), built once while the entry is among the `size` most recently used."""

    def __init__(self, size: int = 8):
        self.size = int(size)
        self._entries: OrderedDict = OrderedDict()

    def get(self, key_tensor: torch.Tensor, extra, build):
        key = (key_tensor.data_ptr(), tuple(key_tensor.shape), key_tensor.dtype, key_tensor._version,
               str(key_tensor.device), extra)
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
            return hit[0]
        value = build()
        self._entries[key] = (value, key_tensor)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
