"""Tests of `mofa fit` / examples/fit_single_image.py and of mofa_tk.io.images (image checks, OBJ / PNG / JSON).

The command runs once as a subprocess with no argument (the astronaut photo, detected landmarks: skipped when
scikit-image or MediaPipe is missing) and several times in-process on small synthetic photos with given
landmarks (cheap). cpu backend only: see tests/test_fit.py.
"""
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import mofa_tk
from mofa_tk.fitting.problem import fit_reg_weights
from mofa_tk.io import images as mio
from mofa_tk.apps import fit_app
from mofa_tk.face.decoder import FaceDecoder

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fit_single_image.py"


@pytest.fixture
def cpu(backend):
    if backend != "cpu":
        pytest.skip("the fitting command is tested on cpu only (CI time; the ops are tested on every backend)")
    return backend


@pytest.fixture(scope="module")
def face(tmp_path_factory):
    """A synthetic 256 x 224 face photo (PNG, uint8) and its true landmarks (.npy, .json, .pts)."""
    model = mofa_tk.builtin_model()
    dec = FaceDecoder(model, image_size=(256, 224))
    code = dec.code.zeros(1)
    b = dec.code.split(code)
    b["rotation"][0] = torch.tensor([0.05, 0.3, 0.0])
    b["expression"][0, 1] = 1.0
    with torch.no_grad():
        out = dec(code, background=torch.full((256, 224, 3), 0.4))
    img = (out["image"][0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    lm = out["landmarks2d"][0].numpy()
    d = tmp_path_factory.mktemp("face")
    mio.write_png(d / "face.png", img)
    np.save(d / "face.npy", lm)
    (d / "face.json").write_text(json.dumps({"landmarks": lm.tolist()}))
    from mofa_tk.landmarks import write_pts
    write_pts(d / "face.pts", lm)
    return {"dir": d, "png": d / "face.png", "img": img, "lm": lm, "model": model}


def _main(argv, capsys):
    rc = fit_app.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _png_header_only(path, width, height):
    """A PNG whose header declares width x height (the pixel data is a stub): enough for the size check."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                           + chunk(b"IEND", b""))


# ============================================================================================ mofa_tk.io.images
def test_load_image_conversions(tmp_path):
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    iio.imwrite(tmp_path / "g.png", grey)
    im = mio.load_image(tmp_path / "g.png")
    assert im.rgb.shape == (40, 50, 3) and im.rgb.dtype == np.float32
    assert np.allclose(im.rgb[..., 0], grey / 255.0) and np.array_equal(im.rgb[..., 0], im.rgb[..., 2])
    assert "grey -> RGB" in im.notes

    rgba = rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    iio.imwrite(tmp_path / "opaque.png", rgba)
    im = mio.load_image(tmp_path / "opaque.png")
    assert np.allclose(im.rgb, rgba[..., :3] / 255.0) and any("alpha dropped" in n for n in im.notes)
    rgba[:20, :, 3] = 0
    rgba[20:, :, 3] = 128
    iio.imwrite(tmp_path / "alpha.png", rgba)
    im = mio.load_image(tmp_path / "alpha.png")
    assert np.allclose(im.rgb[:20], 0.0)
    assert np.allclose(im.rgb[20:], rgba[20:, :, :3] / 255.0 * (128 / 255.0), atol=1e-6)
    assert any("composited" in n for n in im.notes)

    deep = (rng.integers(0, 65536, (40, 50))).astype(np.uint16)             # 16-bit grey
    iio.imwrite(tmp_path / "deep.png", deep)
    im = mio.load_image(tmp_path / "deep.png")
    assert np.allclose(im.rgb, (deep / 65535.0)[..., None], atol=1e-6)

    big = rng.integers(0, 256, (203, 150, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "big.png", big)
    im = mio.load_image(tmp_path / "big.png", work_max_side=64)       # 4x area average
    assert im.scale == 0.25 and im.rgb.shape == (50, 37, 3) and im.original_size == (203, 150)
    assert np.allclose(im.rgb[0, 0], big[:4, :4].reshape(-1, 3).mean(0) / 255.0, atol=1e-6)


def test_load_image_errors(tmp_path):
    import imageio.v3 as iio

    cases = {}
    cases["no such file"] = tmp_path / "missing.jpg"
    (tmp_path / "notes.jpg").write_text("this is not a picture\n")
    cases["not a readable image"] = tmp_path / "notes.jpg"
    (tmp_path / "empty.png").write_bytes(b"")
    cases["empty file"] = tmp_path / "empty.png"
    (tmp_path / "folder.png").mkdir()
    cases["directory"] = tmp_path / "folder.png"
    iio.imwrite(tmp_path / "tiny.png", np.zeros((20, 40, 3), np.uint8))
    cases["too small"] = tmp_path / "tiny.png"
    _png_header_only(tmp_path / "huge.png", 20000, 12000)
    cases["too large"] = tmp_path / "huge.png"
    for what, path in cases.items():
        with pytest.raises(mio.ImageFileError) as ei:
            mio.load_image(path)
        assert what in str(ei.value) and str(path) in str(ei.value), (what, str(ei.value))
    with pytest.raises(mofa_tk.InputError, match="float pixel values"):
        mio.to_rgb(np.full((4, 4, 3), 2.0))
    with pytest.raises(mofa_tk.InputError, match="layout"):
        mio.to_rgb(np.zeros((4, 4, 5)))
    with pytest.raises(mofa_tk.InputError, match="empty image"):
        mio.to_rgb(np.zeros((0, 4, 3), np.uint8))
    # arrays given to the landmark detector and the fit go through the same converter, alpha dropped
    from mofa_tk.landmarks import to_rgb_float
    ga = np.stack([np.full((3, 4), 200, np.uint8), np.full((3, 4), 51, np.uint8)], -1)  # grey + alpha 0.2
    np.testing.assert_allclose(mio.to_rgb(ga), np.full((3, 4, 3), 200 / 255 * 0.2), rtol=1e-6)
    np.testing.assert_allclose(to_rgb_float(ga), np.full((3, 4, 3), 200 / 255), rtol=1e-6)


def test_writers(tmp_path):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    t = np.array([[0, 1, 2], [0, 2, 3]])
    c = np.array([[1.2, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, -1]])
    mio.write_obj(tmp_path / "m.obj", v, t, c, header="hello")
    lines = (tmp_path / "m.obj").read_text().splitlines()
    assert lines[0] == "# hello"
    vl = [ln.split()[1:] for ln in lines if ln.startswith("v ")]
    fl = [ln.split()[1:] for ln in lines if ln.startswith("f ")]
    arr = np.array(vl, float)
    assert arr.shape == (4, 6) and np.allclose(arr[:, :3], v) and np.allclose(arr[:, 3:], np.clip(c, 0, 1))
    assert np.array_equal(np.array(fl, int), t + 1)
    with pytest.raises(mofa_tk.InputError, match="triangles"):
        mio.write_obj(tmp_path / "bad.obj", v, np.array([[0, 1, 9]]))
    mio.write_json(tmp_path / "p.json", {"a": np.float32(1.5), "b": torch.tensor([1.0, float("nan")]),
                                         "c": (np.int64(3), np.bool_(True))})
    assert json.loads((tmp_path / "p.json").read_text()) == {"a": 1.5, "b": [1.0, None], "c": [3, True]}
    mio.write_png(tmp_path / "x.png", np.full((5, 6, 3), 0.5))
    import imageio.v3 as iio
    assert np.array_equal(iio.imread(tmp_path / "x.png"), np.full((5, 6, 3), 128, np.uint8))


def test_draw_landmarks_marks_both_sets():
    img = np.zeros((100, 120, 3), np.float32)
    tgt = np.array([[30.0, 40.0], [80.0, 60.0]])
    fitd = tgt + [[6.0, 0.0], [0.0, 6.0]]
    out = fit_app.draw_landmarks(img, np.pad(tgt, ((0, 66), (0, 0)), constant_values=np.nan),
                                 np.pad(fitd, ((0, 66), (0, 0)), constant_values=np.nan), zoom=False)
    assert np.allclose(out[40, 30], [0.1, 1.0, 0.2])             # target: green disc
    assert np.allclose(out[40, 36], [1.0, 0.15, 0.1])            # fitted: red cross centre
    assert out[5:20, 5:20].max() == 0                            # nothing elsewhere


# ============================================================================================ the command
def test_example_runs_on_the_astronaut(cpu, tmp_path):
    """`python examples/fit_single_image.py` with no image: the astronaut, detected landmarks, the files of
    OUTPUT_FILES, among them the UV-textured mesh (OBJ with vt and a material, the texture PNG)."""
    pytest.importorskip("skimage.data")
    pytest.importorskip("mediapipe")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--out", str(out), "--backend", "cpu"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in fit_app.OUTPUT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
        assert str((out / name).resolve()) in proc.stdout
    model = mofa_tk.builtin_model()
    lines = (out / "mesh.obj").read_text().splitlines()
    verts = np.array([ln.split()[1:] for ln in lines if ln.startswith("v ")], float)
    faces = np.array([ln.split()[1:] for ln in lines if ln.startswith("f ")], int)
    assert verts.shape == (model.n_vertices, 6) and faces.shape == (model.n_triangles, 3)
    assert (verts[:, 3:] >= 0).all() and (verts[:, 3:] <= 1).all()
    assert faces.min() == 1 and faces.max() == model.n_vertices
    p = json.loads((out / "params.json").read_text())
    assert p["model"]["name"] == model.name and p["model"]["source"] == "builtin:default"
    assert p["image"]["size"] == {"width": 512, "height": 512} and p["image"]["name"] == "skimage.data.astronaut()"
    assert [len(p["code"]["blocks"][k]) for k in ("rotation", "translation", "shape", "expression", "reflectance",
                                                  "illumination")] == [3, 3, 80, 64, 80, 27]
    assert set(p["timings_s"]) >= {"detect", "pose", "landmarks", "photometric", "total"}
    assert p["landmarks"]["nme_inter_ocular"] < 0.04
    assert p["fit"]["landmarks"] == "dense" and p["fit"]["dense_weight"] == 0.3 and p["fit"]["depth_weight"] == 0.3
    assert p["fit"]["contour"] is False and p["fit"]["photometric"] == "appearance"
    assert abs(p["code"]["pose_degrees"]["yaw"]) < 15                  # a near-frontal portrait
    import imageio.v3 as iio
    assert iio.imread(out / "overlay.png").shape == (512, 512, 3)
    assert iio.imread(out / "landmarks.png").shape[2] == 3
    # UV-textured mesh: one vt per vertex, faces v/vt, the material names the texture
    lines = (out / "mesh_uv.obj").read_text().splitlines()
    vt = np.array([ln.split()[1:] for ln in lines if ln.startswith("vt ")], float)
    fuv = [ln.split()[1:] for ln in lines if ln.startswith("f ")]
    assert vt.shape == (model.n_vertices, 2) and (vt >= 0).all() and (vt <= 1).all()
    assert len(fuv) == model.n_triangles and all(a.split("/")[0] == a.split("/")[1] for f in fuv for a in f)
    assert "mtllib mesh_uv.mtl" in lines and "map_Kd texture.png" in (out / "mesh_uv.mtl").read_text()
    tex = iio.imread(out / "texture.png")
    assert tex.shape == (fit_app.TEXTURE_SIZE, fit_app.TEXTURE_SIZE, 3)
    assert p["texture"]["uv_layout"] == "generated" and 0.5 < p["texture"]["from_photo_fraction"] < 1.0


def test_command_on_grey_and_rgba_photos_and_replacing(cpu, face, tmp_path, capsys):
    import imageio.v3 as iio

    grey = face["img"].mean(-1).astype(np.uint8)
    iio.imwrite(tmp_path / "grey.png", grey)
    out = tmp_path / "out"
    rc, so, se = _main([tmp_path / "grey.png", "--landmarks", face["dir"] / "face.npy",
                        "--iters", 2, "--backend", "cpu", "--quiet", "--out", out], capsys)
    assert rc == 0, se
    p = json.loads((out / "params.json").read_text())
    assert "grey -> RGB" in p["image"]["conversions"] and p["fit"]["iterations"]["photometric"] <= 2
    assert "replaced" not in so
    rgba = np.concatenate([face["img"], np.full(face["img"].shape[:2] + (1,), 255, np.uint8)], -1)
    iio.imwrite(tmp_path / "rgba.png", rgba)
    rc, so, se = _main([tmp_path / "rgba.png", "--landmarks", face["dir"] / "face.pts", "--iters", 2,
                        "--backend", "cpu", "--quiet", "--out", out], capsys)
    assert rc == 0, se
    assert "replaced existing file(s)" in so and all(n in so for n in fit_app.OUTPUT_FILES)
    p = json.loads((out / "params.json").read_text())
    assert any("RGBA" in n for n in p["image"]["conversions"])
    assert p["landmarks"]["nme_inter_ocular"] < 0.05
    assert np.allclose(np.array(p["landmarks"]["target"]), face["lm"], atol=1e-4)
    assert p["fit"]["reg_overrides"] is None
    assert p["fit"]["reg_weights"] == fit_reg_weights(mofa_tk.builtin_model())


def test_command_reg_option_changes_the_prior(cpu, face, tmp_path, capsys):
    """--reg expression=W replaces that block's prior weight (the others keep FIT_REG_WEIGHTS): a prior 1e4x
    stronger pins the expression coefficients near zero, which the default prior does not."""
    from mofa_tk.fitting.pipeline import FIT_REG_WEIGHTS
    assert fit_reg_weights(mofa_tk.builtin_model()) == FIT_REG_WEIGHTS      # the built-in model has no own prior

    runs = {}
    for name, extra in (("default", []), ("strong", ["--reg", "expression=8000"])):
        out = tmp_path / name
        rc, _, se = _main([face["png"], "--landmarks", face["dir"] / "face.npy", "--iters", 3, "--backend", "cpu",
                           "--quiet", "--out", out] + extra, capsys)
        assert rc == 0, se
        runs[name] = json.loads((out / "params.json").read_text())
    assert runs["strong"]["fit"]["reg_weights"] == dict(FIT_REG_WEIGHTS, expression=8000.0)
    assert runs["strong"]["fit"]["reg_overrides"] == {"expression": 8000.0}
    expr = {k: np.abs(np.array(v["code"]["blocks"]["expression"])).max() for k, v in runs.items()}
    assert expr["strong"] < 0.2 * expr["default"], expr


def test_command_bad_input_gives_one_line_errors(cpu, face, tmp_path, capsys):
    import imageio.v3 as iio

    (tmp_path / "notes.jpg").write_text("not an image")
    iio.imwrite(tmp_path / "tiny.png", np.zeros((16, 16, 3), np.uint8))
    _png_header_only(tmp_path / "huge.png", 30000, 30000)
    (tmp_path / "bad.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    far = face["lm"] + 5000
    np.save(tmp_path / "far.npy", far)
    cases = [
        ([tmp_path / "missing.png"], "missing.png", "no such file"),
        ([tmp_path / "notes.jpg"], "notes.jpg", "not a readable image"),
        ([tmp_path / "tiny.png"], "tiny.png", "too small"),
        ([tmp_path / "huge.png"], "huge.png", "too large"),
        ([face["png"], "--landmarks", tmp_path / "bad.pts"], "bad.pts", "header says n_points"),
        ([face["png"], "--landmarks", tmp_path / "nope.npy"], "nope.npy", "not found"),
        ([face["png"], "--landmarks", tmp_path / "far.npy"], "far.npy", "outside"),
        ([face["png"], "--model", tmp_path / "nomodel.npz"], "nomodel.npz", "not found"),
        ([face["png"], "--iters", -3], "--iters", ">= 0"),
        ([face["png"], "--landmarks", face["dir"] / "face.npy", "--reg", "jaw=1"], "--reg 'jaw=1'", "BLOCK=WEIGHT"),
        ([face["png"], "--landmarks", face["dir"] / "face.npy", "--reg", "expression=x"], "--reg", "not a number"),
        ([face["png"], "--landmarks", face["dir"] / "face.npy", "--reg", "expression=-1"], "--reg", ">= 0"),
    ]
    for argv, name, what in cases:
        rc, _, se = _main(argv + ["--backend", "cpu", "--out", tmp_path / "o"], capsys)
        lines = se.strip().splitlines()
        assert rc == 2, (argv, se)
        assert len(lines) == 1 and lines[0].startswith("error: "), se
        assert name in lines[0] and what in lines[0], lines[0]
    # no face in a blank photo (detection) -> one line naming the photo
    pytest.importorskip("mediapipe")
    iio.imwrite(tmp_path / "blank.png", np.full((120, 160, 3), 90, np.uint8))
    rc, _, se = _main([tmp_path / "blank.png", "--backend", "cpu", "--out", tmp_path / "o"], capsys)
    assert rc == 2 and se.strip().startswith("error: no face found") and "blank.png" in se


def test_bad_input_through_the_example_script_and_mofa_cli(tmp_path):
    """No traceback, exit status 2, the last stderr line is the error (subprocess: what a user sees)."""
    proc = subprocess.run([sys.executable, str(EXAMPLE), str(tmp_path / "nothing.jpg")], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nothing.jpg'}: no such file"
    from mofa_tk import cli
    assert cli.main(["fit", str(tmp_path / "nothing.jpg")]) == 2


def test_command_export_glb(cpu, face, tmp_path, capsys, monkeypatch):
    """--export glb writes the UV-textured mesh as binary glTF when trimesh is installed (read back: vertices,
    uvs, the embedded texture), and without trimesh fails with one line naming the package."""
    args = [face["png"], "--landmarks", face["dir"] / "face.npy", "--iters", 2, "--backend", "cpu", "--quiet",
            "--export", "glb"]
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "trimesh", None)                      # as if trimesh were not installed
        rc, _, se = _main(args + ["--out", tmp_path / "none"], capsys)
        assert rc == 2 and "--export glb: needs the trimesh package" in se
    trimesh = pytest.importorskip("trimesh")
    out = tmp_path / "glb"
    rc, so, se = _main(args + ["--out", out], capsys)
    assert rc == 0, se
    assert str((out / "mesh.glb").resolve()) in so
    scene = trimesh.load(out / "mesh.glb")
    mesh = next(iter(scene.geometry.values())) if hasattr(scene, "geometry") else scene
    model = mofa_tk.builtin_model()
    assert mesh.vertices.shape == (model.n_vertices, 3) and mesh.faces.shape == (model.n_triangles, 3)
    assert mesh.visual.uv.shape == (model.n_vertices, 2)
    assert mesh.visual.material.baseColorTexture.size == (fit_app.TEXTURE_SIZE, fit_app.TEXTURE_SIZE)
    obj = (out / "mesh.obj").read_text().splitlines()
    v_mm = np.array([ln.split()[1:4] for ln in obj if ln.startswith("v ")], float)
    assert np.allclose(mesh.vertices, v_mm / 1000.0, atol=1e-6)          # metres
