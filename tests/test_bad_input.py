"""Bad input, row by row: every public op, the loaders, `fit` and the commands get NaN/Inf, wrong dtypes and shapes,
empty batches and meshes, strided views, out-of-range indices, broken files and unwritable outputs. Each row
states the error class and a pattern the message must contain (the argument or the file), or checks that the
output is the correct one. Rows run on the cpu backend (the op rows on every backend). Ctrl-C during training
and the resume after it: tests/training/test_train.py::test_ctrl_c_finishes_the_step_and_saves."""
import importlib.util
import os
import pickle
import struct
import zlib

import numpy as np
import pytest
import torch

import mofa_tk
from mofa_tk import InputError, ModelFormatError
from mofa_tk.io import ImageFileError, load_image
from mofa_tk.io.models import load_model

NAN = float("nan")


# ============================================================================================ ops
def _quad():
    pos = torch.tensor([[[-0.5, -0.5, 0.1, 1], [0.5, -0.5, 0.1, 1], [0.5, 0.5, 0.1, 1], [-0.5, 0.5, 0.1, 1]]])
    tris = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    return pos, tris


def _with(x, idx, value):
    x = x.clone()
    x[idx] = value
    return x


def _op_rows():
    pos, tris = _quad()
    rast = lambda p=pos: mofa_tk.rasterize(p, tris, (8, 8))  # noqa: E731
    verts = torch.tensor([[[0.0, 0, -500], [10, 0, -500], [0, 10, -500], [10, 10, -500]]])
    model = mofa_tk.builtin_model()
    rows = [
        # (id, call, error class, message pattern)
        ("rasterize NaN", lambda: mofa_tk.rasterize(_with(pos, (0, 1, 0), NAN), tris, (8, 8)), InputError,
         "pos_clip: contains 1 NaN/Inf"),
        ("rasterize Inf", lambda: mofa_tk.rasterize(_with(pos, (0, 2, 3), float("inf")), tris, (8, 8)), InputError,
         "pos_clip: contains 1 NaN/Inf"),
        ("rasterize pos shape", lambda: mofa_tk.rasterize(pos[..., :3], tris, (8, 8)), InputError, r"pos_clip: expected shape"),
        ("rasterize pos complex", lambda: mofa_tk.rasterize(pos.to(torch.complex64), tris, (8, 8)), InputError, "pos_clip: complex"),
        ("rasterize pos text", lambda: mofa_tk.rasterize("abc", tris, (8, 8)), InputError, "pos_clip: expected a tensor"),
        ("rasterize float tris", lambda: mofa_tk.rasterize(pos, tris.float(), (8, 8)), InputError, "tris: expected integer"),
        ("rasterize tris shape", lambda: mofa_tk.rasterize(pos, tris[:, :2], (8, 8)), InputError, r"tris: expected shape \(T, 3\)"),
        ("rasterize tris negative", lambda: mofa_tk.rasterize(pos, _with(tris, (0, 0), -1), (8, 8)), InputError,
         r"tris: indices must lie in \[0, 4\)"),
        ("rasterize tris too large", lambda: mofa_tk.rasterize(pos, _with(tris, (1, 2), 4), (8, 8)), InputError,
         r"tris: indices must lie in \[0, 4\), got values in \[0, 4\]"),
        ("rasterize resolution", lambda: mofa_tk.rasterize(pos, tris, (0, 8)), InputError, "resolution"),
        ("rasterize resolution text", lambda: mofa_tk.rasterize(pos, tris, "big"), InputError, "resolution"),
        ("interpolate NaN attr", lambda: mofa_tk.interpolate(torch.full((1, 4, 2), NAN), rast(), tris), InputError,
         "attr: contains 8 NaN/Inf"),
        ("interpolate attr V", lambda: mofa_tk.interpolate(torch.ones(1, 3, 2), rast(), tris), InputError,
         r"tris: indices must lie in \[0, 3\)"),
        ("interpolate attr batch", lambda: mofa_tk.interpolate(torch.ones(3, 4, 2), rast(), tris), InputError, "attr: batch size 3"),
        ("interpolate rast shape", lambda: mofa_tk.interpolate(torch.ones(1, 4, 2), torch.zeros(1, 8, 8, 3), tris), InputError,
         "rast: expected shape"),
        ("antialias NaN color", lambda: mofa_tk.antialias(torch.full((1, 8, 8, 3), NAN), rast(), pos, tris), InputError,
         "color: contains"),
        ("antialias rast size", lambda: mofa_tk.antialias(torch.ones(1, 8, 9, 3), rast(), pos, tris), InputError, "rast: resolution"),
        ("antialias pos batch", lambda: mofa_tk.antialias(torch.ones(1, 8, 8, 3), rast(), pos.expand(2, -1, -1), tris),
         InputError, "pos_clip: batch size 2"),
        ("albedo beta size", lambda: mofa_tk.ops.albedo(model, torch.zeros(1, model.k_alb + 2)), InputError, "beta: expected shape"),
        ("albedo NaN", lambda: mofa_tk.ops.albedo(model, torch.full((1, model.k_alb), NAN)), InputError, "beta: contains"),
        ("ambient_sh intensity", lambda: mofa_tk.ambient_sh(1, [1.0, 2.0]), InputError, "intensity: expected a scalar or 3"),
        ("ambient_sh B", lambda: mofa_tk.ambient_sh(-1), InputError, "B: expected a batch size"),
        ("morph alpha size", lambda: mofa_tk.morph(model, torch.zeros(1, model.k_id + 1)), InputError, "alpha: expected shape"),
        ("morph NaN", lambda: mofa_tk.morph(model, torch.full((1, model.k_id), NAN)), InputError, "alpha: contains"),
        ("morph delta batch", lambda: mofa_tk.morph(model, torch.zeros(2, model.k_id), torch.zeros(3, model.k_exp)),
         InputError, "delta: expected shape"),
        ("rigid rotation shape", lambda: mofa_tk.rigid(verts, torch.zeros(1, 4), torch.zeros(1, 3)), InputError, "rotation"),
        ("rigid translation NaN", lambda: mofa_tk.rigid(verts, torch.zeros(1, 3), torch.full((1, 3), NAN)), InputError,
         "translation: contains"),
        ("project behind camera", lambda: mofa_tk.project(-verts, 500.0, (32.0, 32.0)), InputError, "verts_cam: some vertices have z >= 0"),
        ("project focal", lambda: mofa_tk.project(verts, -1.0, (32.0, 32.0)), InputError, "focal"),
        ("to_clip near/far", lambda: mofa_tk.to_clip(verts, 500.0, (32.0, 32.0), (64, 64), 10.0, 5.0), InputError, "near/far"),
        ("to_clip image_size", lambda: mofa_tk.to_clip(verts, 500.0, (32.0, 32.0), (64,), 1.0, 5.0), InputError, "image_size"),
        ("vertex_normals NaN", lambda: mofa_tk.vertex_normals(_with(verts, (0, 0, 0), NAN), tris), InputError, "verts: contains"),
        ("vertex_normals bool tris", lambda: mofa_tk.vertex_normals(verts, tris.bool()), InputError, "tris: expected integer"),
        ("sh_shade sh shape", lambda: mofa_tk.sh_shade(torch.ones(1, 4, 3), torch.ones(1, 4, 3), torch.ones(1, 26)), InputError,
         r"sh: expected shape \(B, 27\)"),
        ("sh_shade albedo", lambda: mofa_tk.sh_shade(torch.ones(1, 4, 3), torch.ones(1, 5, 3), torch.ones(1, 27)), InputError,
         "albedo: expected shape"),
        ("Mesh float", lambda: mofa_tk.Mesh(torch.tensor([[0.0, 0.5, 1.0]])), InputError, "tris: expected integer"),
        ("Camera focal", lambda: mofa_tk.Camera.pinhole(64, focal=0.0), InputError, "focal"),
        ("decoder code size", lambda: mofa_tk.FaceDecoder(model, 32)(torch.zeros(1, 3)), InputError, "code"),
        ("decoder code NaN", lambda: mofa_tk.FaceDecoder(model, 32)(torch.full((1, 257), NAN)), InputError, "code: contains"),
        ("decoder background", lambda: mofa_tk.FaceDecoder(model, 32)(torch.zeros(1, 257), torch.ones(32, 31, 3)), InputError,
         "background"),
    ]
    return rows


OP_ROWS = _op_rows()


@pytest.mark.parametrize("row", OP_ROWS, ids=[r[0] for r in OP_ROWS])
def test_op_rejects_bad_input(backend, row):
    _, call, cls, pattern = row
    with pytest.raises(cls, match=pattern):
        call()


def test_op_edge_cases_give_the_correct_output(backend):
    """Empty batches and meshes, and non-contiguous or strided inputs: the same results as their plain forms."""
    pos, tris = _quad()
    # T = 0: nothing covers any pixel
    assert torch.equal(mofa_tk.rasterize(pos, torch.zeros(0, 3, dtype=torch.int32), (8, 8)), torch.zeros(1, 8, 8, 4))
    # B = 0: empty outputs of the right shape
    assert mofa_tk.rasterize(pos[:0], tris, (8, 8)).shape == (0, 8, 8, 4)
    assert mofa_tk.vertex_normals(torch.zeros(0, 4, 3), tris).shape == (0, 4, 3)
    model = mofa_tk.builtin_model()
    out = mofa_tk.FaceDecoder(model, 32)(torch.zeros(0, 257))
    assert out.image.shape == (0, 32, 32, 3) and out.visibility.shape == (0, model.n_vertices)
    # strided (non-contiguous) positions and triangles
    wide = torch.zeros(1, 4, 8)
    wide[..., ::2] = pos
    strided_tris = torch.stack([tris, tris], -1)[..., 0]
    ref = mofa_tk.rasterize(pos, tris, (8, 8))
    assert torch.equal(mofa_tk.rasterize(wide[..., ::2], strided_tris, (8, 8)), ref)
    attr = torch.rand(1, 4, 6)
    assert torch.equal(mofa_tk.interpolate(attr[..., ::2], ref, tris), mofa_tk.interpolate(attr[..., ::2].contiguous(), ref, tris))
    # int64 and numpy triangles are accepted and mean the same mesh
    assert torch.equal(mofa_tk.rasterize(pos, tris.long().numpy(), (8, 8)), ref)


# ============================================================================================ images
def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _image_rows(tmp):
    from PIL import Image

    good = np.zeros((40, 60, 3), np.uint8)
    good[10:30, 20:40] = 200
    Image.fromarray(good).save(tmp / "good.png")
    png = (tmp / "good.png").read_bytes()
    Image.fromarray(good).save(tmp / "cmyk.jpg")
    Image.fromarray(good).convert("CMYK").save(tmp / "cmyk.jpg")
    Image.fromarray((good.astype(np.uint16) * 257)[..., 0]).save(tmp / "grey16.png")
    Image.fromarray(np.dstack([good, np.full((40, 60), 255, np.uint8)])).save(tmp / "rgba.png")
    Image.fromarray(good[:1, :1]).save(tmp / "one.png")
    # a PNG header that claims 8000 x 8000 (64 megapixels): refused before decoding
    def claiming(w, h):
        """The good PNG with a header that claims w x h pixels (valid chunk CRC, pixel data far too short)."""
        b = bytearray(png)
        b[16:24] = struct.pack(">II", w, h)
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
        return bytes(b)
    return [
        ("missing", tmp / "nope.png", ImageFileError, "nope.png: no such file"),
        ("empty", _write(tmp / "empty.jpg", b""), ImageFileError, "empty.jpg: empty file"),
        ("truncated", _write(tmp / "trunc.png", png[: len(png) // 2]), ImageFileError, "trunc.png"),
        ("text as jpeg", _write(tmp / "text.jpg", b"hello, I am not a JPEG\n" * 10), ImageFileError, "text.jpg"),
        ("1x1", tmp / "one.png", ImageFileError, "one.png"),
        ("8000x8000 header, short data", _write(tmp / "big.png", claiming(8000, 8000)), ImageFileError,
         "big.png: not a readable image"),
        ("20000x20000 header", _write(tmp / "huge.png", claiming(20000, 20000)), ImageFileError,
         "huge.png: image too large: 20000 x 20000"),
        ("folder", tmp, ImageFileError, str(tmp.name)),
    ]


def test_load_image_rejects_bad_files(tmp_path):
    for name, path, cls, pattern in _image_rows(tmp_path):
        with pytest.raises(cls, match=pattern):
            load_image(path)


def test_large_photo_is_downscaled_for_fitting(tmp_path):
    from PIL import Image

    Image.new("RGB", (5000, 4200), (10, 200, 30)).save(tmp_path / "large.jpg", quality=90)
    img = load_image(tmp_path / "large.jpg")
    assert img.original_size == (4200, 5000) and img.scale == 0.5 and img.rgb.shape == (2100, 2500, 3)
    assert any("downscaled" in n for n in img.notes)
    np.testing.assert_allclose(img.rgb[1000, 1000], np.array([10, 200, 30]) / 255, atol=0.02)


def test_load_image_converts_unusual_formats(tmp_path):
    _image_rows(tmp_path)
    for name in ("cmyk.jpg", "grey16.png", "rgba.png"):
        img = load_image(tmp_path / name)
        rgb = img.rgb if hasattr(img, "rgb") else img
        a = np.asarray(rgb)
        assert a.shape == (40, 60, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1, name
        # the grey square is bright, the background dark, whatever the encoding
        assert a[20, 30].mean() > 0.5 and a[2, 2].mean() < 0.2, name


# ============================================================================================ model files
class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + str(_Evil.marker),))


def test_model_files_are_refused_with_the_file_named(tmp_path):
    good = tmp_path / "model.npz"
    mofa_tk.builtin_model().save(good)
    data = good.read_bytes()
    rows = [
        ("truncated npz", _write(tmp_path / "cut.npz", data[: len(data) // 3]), ModelFormatError, "cut.npz"),
        ("text", _write(tmp_path / "notes.mat", b"just text\n"), ModelFormatError, "notes.mat"),
        ("wrong keys", tmp_path / "keys.npz", ModelFormatError, "keys.npz"),
        ("missing", tmp_path / "absent.mat", FileNotFoundError, "absent.mat"),
    ]
    np.savez(tmp_path / "keys.npz", something=np.zeros(3))
    for name, path, cls, pattern in rows:
        with pytest.raises(cls, match=pattern):
            load_model(path)


def test_malicious_pickle_is_not_executed(tmp_path):
    _Evil.marker = tmp_path / "executed"
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps({"v_template": _Evil(), "f": np.zeros((1, 3))}, protocol=2))
    with pytest.raises(ModelFormatError, match="generic_model.pkl"):
        load_model(path)
    assert not _Evil.marker.exists()


# ============================================================================================ fit and commands
def test_fit_rejects_bad_arguments(cpu):
    img = np.zeros((64, 64, 3), np.uint8)
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    lm = np.stack([32 + 15 * np.cos(t), 32 + 18 * np.sin(t)], 1).astype(np.float32)
    for kwargs, pattern in (({"landmarks": np.zeros((5, 2))}, "landmarks: expected"),
                            ({"landmarks": np.full((68, 2), np.inf)}, "landmarks: contains Inf"),
                            ({"landmarks": np.full((68, 2), np.nan)}, "landmarks: 0 finite points"),
                            ({"landmarks": lm, "size": 8}, "size"), ({"landmarks": lm, "optimizer": "sgd"}, "optimizer"),
                            ({"landmarks": lm, "iters": -1}, "iters"), ({"landmarks": lm, "weights": {"x": 1}}, "weights"),
                            ({"landmarks": lm, "focal": -3}, "focal"), ({"landmarks": lm, "init_code": np.zeros(5)}, "init_code")):
        with pytest.raises(InputError, match=pattern):
            mofa_tk.fit(img, landmarks=kwargs.pop("landmarks"), progress=False, **kwargs)
    with pytest.raises(InputError, match="image"):
        mofa_tk.fit(np.zeros((64, 64, 7)), landmarks=lm, progress=False)


@pytest.fixture
def cpu():
    return mofa_tk.init("cpu")


def _cli(main, argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    return code, " ".join(err.split())


def test_fit_command_outputs(cpu, tmp_path, capsys):
    """mofa fit: an unwritable --out, an --out that is a file, and a photo with no face give one-line errors
    naming the path, exit code 2, and leave nothing half written."""
    from PIL import Image

    from mofa_tk.apps.fit_app import main

    photo = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 120, 3), 90, np.uint8)).save(photo)
    afile = tmp_path / "a_file"
    afile.write_text("keep me")
    code, err = _cli(main, [str(photo), "--out", str(afile)], capsys)
    assert code == 2 and "a_file" in err and afile.read_text() == "keep me"
    code, err = _cli(main, [str(photo), "--out", str(afile / "sub")], capsys)     # unwritable: under a file
    assert code == 2 and "a_file" in err and afile.read_text() == "keep me"
    if os.geteuid() != 0:                                    # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        code, err = _cli(main, [str(photo), "--out", str(ro / "out")], capsys)
        assert code == 2 and "ro" in err
    code, err = _cli(main, [str(photo), "--out", str(tmp_path / "out")], capsys)
    if importlib.util.find_spec("mediapipe") is None:        # no detector: the install hint instead
        assert code == 2 and "MediaPipe" in err
    else:
        assert code == 2 and "blank.png" in err and "face" in err
    assert not any(p.suffix == ".tmp" for p in tmp_path.rglob("*"))


def test_train_command_refuses_a_corrupt_checkpoint(cpu, tmp_path, capsys):
    from mofa_tk.apps.train_app import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    code, err = _cli(main, ["--out", str(out), "--resume", "--steps", "1"], capsys)
    assert code == 2 and "checkpoint" in err and str(out / "checkpoint.pt") in err
    assert (out / "checkpoint.pt").read_bytes() == b"not a checkpoint"


def test_train_command_refuses_an_output_under_a_file(cpu, tmp_path, capsys):
    from mofa_tk.apps.train_app import main

    afile = tmp_path / "a_file"
    afile.write_text("keep me")
    code, err = _cli(main, ["--out", str(afile / "run"), "--steps", "1"], capsys)
    assert code == 2 and "a_file is a file, not a folder" in err and afile.read_text() == "keep me"


def test_eval_command_on_a_folder_without_photos(cpu, tmp_path, capsys):
    from mofa_tk.apps.eval_app import main

    (tmp_path / "notes.txt").write_text("no photos here")
    code, err = _cli(main, [str(tmp_path), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert code == 2 and "no photos" in err


def test_several_faces_give_the_largest(cpu):
    """Two astronauts, the right one at full size and the left one at half size: the landmarks are those of the
    larger face (every point in the right half)."""
    pytest.importorskip("mediapipe")
    from skimage import data
    from skimage.transform import rescale

    big = data.astronaut()
    small = (rescale(big, 0.5, channel_axis=2, anti_aliasing=True) * 255).astype(np.uint8)
    canvas = np.zeros((512, 768, 3), np.uint8)
    canvas[128:384, :256] = small
    canvas[:, 256:] = big
    lm = mofa_tk.landmarks.detect(canvas)
    assert lm.shape == (68, 2) and np.isfinite(lm).all()
    assert lm[:, 0].min() > 256 + 100
