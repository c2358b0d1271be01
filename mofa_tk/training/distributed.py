"""Data-parallel training with torch.distributed, for processes started by torchrun.

    torchrun --standalone --nproc-per-node 2 -m mofa_tk train --data photos/ --out runs/a

`torchrun` sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE in each process; `Ranks.from_environment()`
reads them (a plain `python` run is one rank of one). `Ranks.start(device)` then

* pins the rank's GPU before Taichi starts (`backend.pin_local_rank`: CUDA_VISIBLE_DEVICES = LOCAL_RANK, so
  Taichi's device 0 and torch's cuda:0 are the rank's own GPU);
* divides the host's CPU threads between the ranks on it (torch and Taichi's CPU backend) so that N ranks on
  one machine do not oversubscribe it;
* joins the process group: gloo on the CPU, nccl on CUDA.

Semantics: `batch_size` is the global batch. At every step all ranks draw the same global batch (a function of
the seed and the step only) and rank r takes items r, r + N, r + 2N, ... of it; every loss is a mean over its
images, and DistributedDataParallel averages the ranks' gradients, so a step on N ranks is the step one
process takes on the whole batch (to float rounding) and the learning rate means the same for any N. The
global batch must divide evenly by N. Rank 0 alone evaluates, writes checkpoints (the bare encoder's weights,
without DDP's `module.` prefix), logs and plots; a checkpoint holds no rank-specific state, so a run resumes
on any number of ranks.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..backend import pin_local_rank
from ..errors import InputError, MofaError

__all__ = ["Ranks", "RankFailedError"]


class RankFailedError(MofaError, RuntimeError):
    """Another rank stopped (crashed or was killed): this one stops too; the last checkpoint is intact."""


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @classmethod
    def from_environment(cls) -> "Ranks":
        def read(name, default):
            v = os.environ.get(name, "")
            try:
                return int(v) if v.strip() else default
            except ValueError:
                raise InputError(f"environment variable {name}={v!r} is not an integer (set by torchrun)") from None
        world = read("WORLD_SIZE", 1)
        rank = read("RANK", 0)
        local_world = read("LOCAL_WORLD_SIZE", world)
        local_rank = read("LOCAL_RANK", rank)
        if not (0 <= rank < world and 0 <= local_rank < local_world):
            raise InputError(f"torchrun environment: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local_rank} "
                             f"LOCAL_WORLD_SIZE={local_world} are inconsistent")
        return cls(rank, world, local_rank, local_world)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that evaluates, logs and writes files."""
        return self.rank == 0

    def pin_device(self, backend: str) -> None:
        """Before Taichi starts: give this rank its own GPU (cuda) -- a no-op for one rank or the CPU."""
        if self.distributed and backend in ("cuda", "auto"):
            pin_local_rank()

    def cpu_threads(self, requested: int | None = None) -> int | None:
        """Threads for this rank's torch and Taichi CPU work: `requested`, else the host's CPUs divided by the
        ranks on this host (None for one rank: keep the defaults)."""
        if requested:
            return int(requested)
        if self.local_world <= 1:
            return None
        return max(1, (os.cpu_count() or 1) // self.local_world)

    def start(self, device: torch.device, timeout_s: float | None = None) -> None:
        """Join the process group (gloo on the CPU, nccl on CUDA); a no-op for one rank.

        timeout_s: how long a collective waits for the other ranks (default MOFA_TK_DIST_TIMEOUT_S, else one
        hour: the other ranks wait while rank 0 scans a photo folder the index does not know yet; index large
        folders first with `mofa landmarks`). A rank that dies is reported by torchrun at once, not after it.
        """
        if not self.distributed or dist.is_initialized():
            return
        if timeout_s is None:
            raw = os.environ.get("MOFA_TK_DIST_TIMEOUT_S", "3600")
            try:
                timeout_s = float(raw)
            except ValueError:
                raise InputError(f"MOFA_TK_DIST_TIMEOUT_S={raw!r} is not a number of seconds") from None
        if not dist.is_available():
            raise InputError("this torch build has no torch.distributed: train with one process")
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        except Exception as exc:  # noqa: BLE001 - a missing MASTER_ADDR, an unreachable store, ...
            raise InputError(f"torch.distributed could not start ({backend}, rank {self.rank} of {self.world}): "
                             f"{exc}; start the ranks with torchrun") from None

    def stop(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    def check_batch(self, batch_size: int) -> None:
        """InputError unless a global batch of `batch_size` divides evenly over the ranks."""
        if batch_size % self.world:
            raise InputError(f"batch_size: the global batch of {batch_size} does not divide evenly over "
                             f"{self.world} ranks (torchrun --nproc-per-node)")

    def share(self, indices: list) -> list:
        """This rank's items of a global batch: items rank, rank + world, ..."""
        self.check_batch(len(indices))
        return list(indices[self.rank::self.world])

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise mean of `values` over the ranks (every rank gets it)."""
        if not self.distributed:
            return values
        v = values.detach().clone()
        self._collective(dist.all_reduce, v)
        return v / self.world

    def total(self, n: int) -> int:
        """Sum of an integer over the ranks."""
        if not self.distributed:
            return int(n)
        dev = torch.device("cuda", 0) if dist.get_backend() == "nccl" else torch.device("cpu")
        v = torch.tensor([int(n)], dtype=torch.int64, device=dev)
        self._collective(dist.all_reduce, v)
        return int(v.item())

    def agree(self, flag: bool) -> bool:
        """True when `flag` is true on any rank (e.g. a stop request seen by rank 0)."""
        return self.total(1 if flag else 0) > 0

    def barrier(self) -> None:
        if self.distributed:
            self._collective(dist.barrier)

    def wrap(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """`module` in DistributedDataParallel (for one rank: `module` itself)."""
        if not self.distributed:
            return module
        ids = [device.index or 0] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def _collective(self, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - gloo / nccl report a lost peer in several exception types
            raise RankFailedError(f"rank {self.rank}: another training process stopped ({type(exc).__name__}: "
                                  f"{str(exc)[:200]}); the last checkpoint is intact, resume with --resume") from None
