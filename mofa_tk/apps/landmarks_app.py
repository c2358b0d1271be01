"""`mofa landmarks DIR`: index a photo folder once, in parallel, before training on it.

    mofa landmarks photos/ [--workers 4] [--cache DIR]
    mofa train --data photos/ ...               # reads the index: no photo is decoded or detected again

Every photo is decoded once (unreadable ones are recorded) and, where no landmark file lies beside it, its
68 landmarks are detected with MediaPipe, by `--workers` processes. Each result is appended to the folder's
index (`.mofa_tk_landmarks.json`, or a file in `--cache DIR`) as it arrives: the cost is linear in the number
of photos, an interrupted pass keeps what it did, and running it again continues where it stopped. Exit
status 0 when at least one photo is usable, 2 on bad input (message on stderr), 130 when interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

from rich.console import Console

from mofa_tk.errors import MofaError
from mofa_tk.training.data import ImageFolderFaces


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mofa landmarks", description="Decode every photo of a folder once and detect "
                                "the landmarks of those without a landmark file, in parallel; the results go to the "
                                "folder's index, which `mofa train --data` reads.")
    p.add_argument("folder", metavar="DIR", help="folder of face photos (searched recursively)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes that decode and detect (default: min(4, CPUs))")
    p.add_argument("--cache", metavar="DIR", help="folder for the index (default: a file .mofa_tk_landmarks.json "
                   "inside DIR; use this for read-only folders, and pass the same --cache to mofa train)")
    p.add_argument("--no-detect", dest="detect", action="store_false", default=True,
                   help="only decode: photos without a landmark file are reported, not detected")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True, help="no progress bar")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    console = Console(highlight=False, soft_wrap=True)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = ImageFolderFaces(args.folder, cache_dir=args.cache, detect=args.detect, progress=args.progress,
                                  workers=args.workers)
    except KeyboardInterrupt:
        print("mofa landmarks: interrupted; what was done is in the index, run again to continue", file=sys.stderr)
        return 130
    except (MofaError, FileNotFoundError, ValueError) as exc:
        print(f"mofa landmarks: error: {exc}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    for w in caught[:10]:
        console.print(f"  {w.message}", markup=False)
    if len(caught) > 10:
        console.print(f"  ... and {len(caught) - 10} more", markup=False)
    console.print(ds.summary(), markup=False)
    console.print(f"{ds.n_files} photo(s) in {dt:.1f} s ({ds.n_files / max(dt, 1e-9):.1f} photos/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
