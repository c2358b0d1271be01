"""Data-parallel training under torchrun (gloo, 2 CPU ranks): the same steps as one process on the global batch,
one checkpoint without DDP's prefix, resume on another number of ranks, and the failures a user meets (a batch
that does not divide over the ranks, a rank that dies). Each torchrun start takes ~15-30 s on 2 cores.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mofa_tk
from mofa_tk.apps.synth_app import main as synth_main
from mofa_tk.apps.train_app import main as train_main
from mofa_tk.training.checkpoint import read_checkpoint
from mofa_tk.training.distributed import Ranks

ROOT = Path(__file__).resolve().parents[2]
COMMON = ["--steps", "3", "--image-size", "32", "--batch-size", "4", "--components", "6", "4", "3", "--heldout", "4",
          "--eval-every", "2", "--no-progress", "--no-detect", "--workers", "1", "--backend", "cpu"]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    mofa_tk.init("cpu")
    folder = tmp_path_factory.mktemp("ddp") / "photos"
    assert synth_main([str(folder), "--n", "12", "--size", "96", "--quiet"]) == 0
    return folder


def _torchrun(args, n=2, timeout=600, **popen):
    env = dict(os.environ, MOFA_TK_BACKEND="cpu",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
           "-m", "mofa_tk", "train", *args]
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _weights(path):
    return read_checkpoint(path)["encoder"]


def _assert_same_run(a, b):
    """Two checkpoints of the same training: losses equal to float rounding, weights to Adam's amplification of
    it (measured: loss 6e-8 relative, weights 2.5e-5 of weights up to 20)."""
    ca, cb = read_checkpoint(a), read_checkpoint(b)
    assert ca["step"] == cb["step"]
    assert ca["history"]["step"] == cb["history"]["step"]
    torch.testing.assert_close(torch.tensor(ca["history"]["loss"]), torch.tensor(cb["history"]["loss"]),
                               rtol=1e-5, atol=1e-7)
    assert ca["encoder"].keys() == cb["encoder"].keys()
    for k in ca["encoder"]:
        torch.testing.assert_close(ca["encoder"][k], cb["encoder"][k], rtol=1e-3, atol=2e-4)


def test_two_ranks_equal_one_process_and_resume_on_one(photos, tmp_path, capsys):
    two, one = tmp_path / "two", tmp_path / "one"
    r = _torchrun(["--data", str(photos), "--out", str(two), *COMMON])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 ranks" in r.stdout and r.stdout.count("done: step 3 of 3") == 1       # rank 0 speaks
    assert sorted(p.name for p in two.iterdir()) == ["checkpoint.pt", "config.json", "eval.csv", "grid.png",
                                                      "history.csv", "history.json", "loss.png"]
    ck = read_checkpoint(two / "checkpoint.pt")
    assert ck["derived"]["ranks"] == 2 and not any(k.startswith("module.") for k in ck["encoder"])
    assert train_main(["--data", str(photos), "--out", str(one), *COMMON]) == 0
    _assert_same_run(two / "checkpoint.pt", one / "checkpoint.pt")
    # the 2-rank checkpoint continues in one process exactly as the one-process run continues
    assert train_main(["--out", str(two), "--resume", "--steps", "5", "--no-progress"]) == 0
    assert train_main(["--out", str(one), "--resume", "--steps", "5", "--no-progress"]) == 0
    _assert_same_run(two / "checkpoint.pt", one / "checkpoint.pt")
    assert read_checkpoint(two / "checkpoint.pt")["step"] == 5


def test_batch_that_does_not_divide_over_the_ranks(photos, tmp_path):
    args = ["--data", str(photos), "--out", str(tmp_path / "odd"), *COMMON, "--batch-size", "3"]
    r = _torchrun(args)
    assert r.returncode != 0
    assert "global batch of 3 does not divide evenly over 2 ranks" in r.stderr
    assert not (tmp_path / "odd" / "checkpoint.pt").exists()


def test_a_rank_that_dies_stops_the_others_and_keeps_the_checkpoint(photos, tmp_path):
    out = tmp_path / "dies"
    args = ["--data", str(photos), "--out", str(out), *COMMON, "--steps", "100000", "--ckpt-every", "2",
            "--eval-every", "100000"]
    proc = _torchrun(args, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert (out / "checkpoint.pt").exists(), proc.communicate(timeout=60)
        victim = _rank_pid(proc.pid, rank=1)
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "SIGKILL" in err or "exitcode" in err           # torchrun names the rank that failed
    ck = read_checkpoint(out / "checkpoint.pt")             # intact: written atomically by rank 0
    assert ck["step"] >= 2 and ck["step"] % 2 == 0
    assert not list(out.glob("*.tmp"))


def _rank_pid(root: int, rank: int) -> int:
    """PID of the torchrun worker with RANK=`rank` among the descendants of `root` (read from /proc)."""
    todo, seen = [root], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    for pid in seen:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK=" + str(rank).encode() in env:
            return pid
    raise AssertionError(f"no rank {rank} among the processes {seen}")


def test_ranks_from_the_torchrun_environment(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert Ranks.from_environment() == Ranks(0, 1, 0, 1)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    r = Ranks.from_environment()
    assert r == Ranks(3, 4, 1, 2) and r.distributed and not r.main
    assert r.share(list(range(8))) == [3, 7]
    assert r.cpu_threads() == max(1, (os.cpu_count() or 1) // 2) and r.cpu_threads(3) == 3
    with pytest.raises(mofa_tk.InputError, match="does not divide"):
        r.share([0, 1, 2])
    monkeypatch.setenv("RANK", "7")
    with pytest.raises(mofa_tk.InputError, match="inconsistent"):
        Ranks.from_environment()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(mofa_tk.InputError, match="RANK"):
        Ranks.from_environment()
