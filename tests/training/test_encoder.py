"""Encoder: zero-initialised head (first decode = the decoder's zero-code render), shapes, predict_code,
per-sample independence (GroupNorm), config round trip, output scales, errors.

References: the decoder's zero-code render and a NumPy pinhole projection of the mean face's landmarks.
"""
import numpy as np
import pytest
import torch

import mofa_tk
from mofa_tk import InputError
from mofa_tk.face.code import Code
from mofa_tk.training.encoder import DEFAULT_OUTPUT_SCALE, Encoder


@pytest.fixture(scope="module")
def model():
    return mofa_tk.builtin_model()


def _images(B, S, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, S, S, generator=g)


def test_first_decode_is_the_zero_code_render(backend, model):
    S = 64
    dec = mofa_tk.FaceDecoder(model, S)
    enc = Encoder(dec.code, S)
    imgs = _images(3, S)
    code = enc(imgs)
    assert code.shape == (3, dec.code.size)
    assert torch.equal(code, torch.zeros_like(code))          # exactly zero for any input
    first = dec(code)
    ref = dec(dec.code.zeros(3))
    # bit-identical: every op sums in a fixed order (no float atomics)
    for key in ("verts_cam", "verts_2d", "rast", "mask", "visibility", "image"):
        assert torch.equal(first[key], ref[key]), key
    assert torch.equal(torch.isnan(first["landmarks2d"]), torch.isnan(ref["landmarks2d"]))
    # independent reference: the mean face, frontal, its box centre on the axis at 1000 mm (NumPy pinhole)
    ms = model.mean_shape.double().numpy()
    c = (ms.min(0) + ms.max(0)) / 2
    p = ms[model.landmarks.numpy()] - c + np.array([0.0, 0.0, -1000.0])
    f = 1015.0 * S / 224
    uv = np.stack([S / 2 + f * p[:, 0] / -p[:, 2], S / 2 - f * p[:, 1] / -p[:, 2]], -1)
    np.testing.assert_allclose(first["landmarks2d"][0].detach().double().numpy(), uv, atol=1e-3)
    # and it renders a face: mask covers the centre, colour = mean albedo under ambient light 1 (the image
    # at a covered pixel lies in the albedo range)
    m = first["mask"][0, :, :, 0].detach()
    assert float(m[S // 2, S // 2]) == 1.0 and float(m.mean()) > 0.3


def test_head_learns_and_outputs_are_scaled(model):
    code = Code.for_model(model)
    enc = Encoder(code, 32)
    assert torch.equal(enc.fc.weight, torch.zeros_like(enc.fc.weight))
    # output = fc(features) * scale per block: with bias 1 and weights 0 the code is the scale vector
    with torch.no_grad():
        enc.fc.bias.fill_(1.0)
    out = enc(_images(2, 32))
    blocks = code.split(out)
    for k, v in blocks.items():
        assert torch.allclose(v, torch.full_like(v, DEFAULT_OUTPUT_SCALE[k])), k
    # gradients reach the head at step 0, and the body once the head is non-zero
    enc = Encoder(code, 32)
    enc(_images(2, 32)).pow(2).sum().backward()
    assert enc.fc.weight.grad is None or float(enc.fc.weight.grad.abs().sum()) == 0.0  # zero output: zero loss grad
    enc.zero_grad()
    target = torch.randn(2, code.size)
    (enc(_images(2, 32)) - target).pow(2).sum().backward()
    assert float(enc.fc.weight.grad.abs().sum()) > 0
    assert float(enc.stem[0].weight.grad.abs().sum()) == 0.0   # head is zero: nothing flows further yet
    opt = torch.optim.SGD(enc.parameters(), lr=0.1)
    opt.step()
    enc.zero_grad()
    (enc(_images(2, 32)) - target).pow(2).sum().backward()
    assert float(enc.stem[0].weight.grad.abs().sum()) > 0


def _close(a, b, enc, tol=1e-5):
    """Codes equal to `tol` in network-output units (code / output_scale: translation is scaled x20)."""
    return float(((a - b) / enc.output_scale).abs().max().detach()) < tol


def _randomised(code, S, seed=0):
    torch.manual_seed(seed)
    enc = Encoder(code, S)
    with torch.no_grad():
        enc.fc.weight.normal_(0, 0.05)
        enc.fc.bias.normal_(0, 0.05)
    return enc


@torch.no_grad()
def test_samples_are_independent_of_the_batch(model):
    code = Code.for_model(model)
    enc = _randomised(code, 48)
    imgs = _images(5, 48, seed=3)
    full = enc(imgs)
    for b in range(5):
        one = enc(imgs[b:b + 1])
        # compare in network-output units (code / scale): translation is scaled x20
        assert float(((one[0] - full[b]) / enc.output_scale).abs().max()) < 1e-5
    assert float((full[0] - full[1]).abs().max()) > 1e-3   # and the code does depend on the image
    enc.eval()
    assert float(((enc(imgs) - full) / enc.output_scale).abs().max()) < 1e-6   # no batch statistics: eval = train


def test_predict_code_layout_resize_and_mode(model):
    code = Code.for_model(model)
    enc = _randomised(code, 32, seed=1)
    enc.train()
    nhwc = _images(2, 32, seed=4).permute(0, 2, 3, 1).contiguous()
    pc = enc.predict_code(nhwc)
    assert enc.training                                     # mode restored
    assert not pc.requires_grad
    assert _close(pc, enc(nhwc.permute(0, 3, 1, 2)), enc)
    assert _close(enc.predict_code(nhwc[0].numpy()), pc[:1], enc)   # (H, W, 3) NumPy
    # a crop of another size is resized to the training resolution: a linear ramp (exactly representable by
    # bilinear resampling away from the border) gives the code of the same ramp sampled at 32 px
    def ramp(S):
        t = (torch.arange(S) + 0.5) / S
        return torch.stack([t[None, :].expand(S, S), t[:, None].expand(S, S), 0.5 + 0 * t[None, :].expand(S, S)], -1)[None]
    assert _close(enc.predict_code(ramp(96)), enc.predict_code(ramp(32)), enc, 0.02)
    assert not _close(enc.predict_code(ramp(96)), enc.predict_code(torch.flip(ramp(32), [2])), enc, 0.2)


def test_codes_are_resolution_independent(backend, model):
    """predict_code's promise: a code renders the same face at any decoder size (focal scales with size)."""
    g = torch.Generator().manual_seed(0)
    code = Code.for_model(model).zeros(2)
    code[:, :3] = torch.randn(2, 3, generator=g) * 0.2
    code[:, 3:6] = torch.randn(2, 3, generator=g) * 10
    code[:, 6:20] = torch.randn(2, 14, generator=g)
    lm_small = mofa_tk.FaceDecoder(model, 64)(code)["landmarks2d"]
    lm_big = mofa_tk.FaceDecoder(model, 224)(code)["landmarks2d"]
    assert torch.allclose(lm_big, lm_small * (224 / 64), atol=1e-3)


def test_config_round_trip(model):
    code = Code.for_model(model)
    enc = _randomised(code, 40, seed=2)
    enc2 = Encoder.from_config(enc.config())
    enc2.load_state_dict(enc.state_dict())
    imgs = _images(2, 40)
    assert torch.equal(enc(imgs), enc2(imgs))
    assert enc2.config() == enc.config()
    small = Encoder(Code(3, 2, 0), 16, width=8, stages=2, grid=2, output_scale={"translation": 5.0})
    assert small(_images(1, 16)).shape == (1, 3 + 3 + 3 + 2 + 0 + 27)
    assert Encoder.from_config(small.config()).config() == small.config()


def test_errors(model):
    code = Code.for_model(model)
    enc = Encoder(code, 32)
    with pytest.raises(InputError, match="NHWC"):
        enc(torch.rand(1, 32, 32, 3))
    with pytest.raises(InputError, match="at least 8"):
        enc(torch.rand(1, 3, 4, 4))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        enc.predict_code(torch.rand(1, 32, 32, 3) * 255)
    with pytest.raises(InputError, match="uint8"):
        enc.predict_code(torch.zeros(1, 32, 32, 3, dtype=torch.uint8))
    with pytest.raises(InputError, match=r"\(B, H, W, 3\)"):
        enc.predict_code(torch.rand(1, 3, 32, 32))
    with pytest.raises(InputError, match="output_scale"):
        Encoder(code, 32, output_scale={"pose": 1.0})
    with pytest.raises(InputError, match="output_scale"):
        Encoder(code, 32, output_scale={"rotation": -1.0})
    with pytest.raises(InputError, match="width"):
        Encoder(code, 32, width=0)
    with pytest.raises(InputError, match="code"):
        Encoder("not a code", 32)
    with pytest.raises(InputError, match="image_size"):
        Encoder(code, 4)
