"""interpolate and nn.Upsample against PyTorch: "nearest" and "bilinear" (align_corners both
ways), by size or by scale factor; output and gradient in float64 under a random cotangent,
finite differences over every element, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import compare_with_torch, gradcheck
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import fixture_settings

import minicond as mc
import minicond.functional as F

interp_settings = settings(fixture_settings, max_examples=20)
SCALES = [0.5, 0.6, 1.0, 1.3, 1.5, 2.0, 2.1, 2.5, 3.0, 7 / 3]


@st.composite
def options(draw, size_limit):
    mode = draw(st.sampled_from(["nearest", "bilinear"]))
    align = None if mode == "nearest" else draw(st.sampled_from([None, False, True]))
    if draw(st.booleans()):
        by = {"size": (draw(st.integers(1, 2 * size_limit)), draw(st.integers(1, 2 * size_limit)))}
    else:
        by = {"scale_factor": draw(st.sampled_from(SCALES) | st.tuples(
            st.sampled_from(SCALES), st.sampled_from(SCALES))),
              "recompute_scale_factor": draw(st.sampled_from([None, True]))}
    return {"mode": mode, "align_corners": align, **by}


@interp_settings
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_interpolate_matches_torch(backend, size_limit, data, seed):
    H, W = data.draw(st.integers(1, size_limit)), data.draw(st.integers(1, size_limit))
    kw = data.draw(options(size_limit))
    sf = kw.get("scale_factor")
    if sf is not None:
        sh, sw = sf if isinstance(sf, tuple) else (sf, sf)
        if int(H * sh) < 1 or int(W * sw) < 1:
            return  # PyTorch refuses an empty output as well (tested below)
    x = np.random.default_rng(seed).standard_normal((2, 2, H, W))
    compare_with_torch(lambda t: F.interpolate(t, **kw),
                       lambda t: torch.nn.functional.interpolate(t, **kw), [x], backend,
                       rtol=1e-12, atol=1e-12)
    if backend == "numpy":  # the same two matmuls on every backend, compared above
        gradcheck(lambda t: F.interpolate(t, **kw), [x[:1, :1]], backend)


def test_nearest_source_indices_match_torch_exactly_in_float32():
    """PyTorch computes nearest's source index in float32; every pair of sizes up to 12 → 30
    and a set of scale factors pick the same source pixels."""
    for n in range(1, 13):
        x = np.arange(n, dtype=np.float32).reshape(1, 1, 1, n)
        for m in range(1, 31):
            y = F.interpolate(mc.tensor(x), size=(1, m)).numpy()
            ref = torch.nn.functional.interpolate(torch.tensor(x), size=(1, m)).numpy()
            np.testing.assert_array_equal(y, ref, err_msg=f"{n} -> {m}")
        for s in SCALES + [1.1, 2.9, 0.34, 4.0001]:
            if int(n * s) < 1:
                continue
            y = F.interpolate(mc.tensor(x), scale_factor=(1, s)).numpy()
            ref = torch.nn.functional.interpolate(torch.tensor(x), scale_factor=(1, s)).numpy()
            np.testing.assert_array_equal(y, ref, err_msg=f"{n} x {s}")


def test_upsample_module_is_interpolate():
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 5)).astype(np.float32)
    for kw in ({"scale_factor": 2}, {"size": (4, 9), "mode": "bilinear"},
               {"scale_factor": 1.5, "mode": "bilinear", "align_corners": True}):
        up = mc.nn.Upsample(**kw)
        np.testing.assert_allclose(up(mc.tensor(x)).numpy(),
                                   torch.nn.Upsample(**kw)(torch.tensor(x)).numpy(),
                                   rtol=1e-6, atol=1e-6)
    assert "scale_factor=2" in repr(mc.nn.Upsample(scale_factor=2))


def test_errors_name_the_argument():
    x = mc.tensor(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="interpolate: give exactly one of size and "
                                         "scale_factor"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="interpolate: give exactly one"):
        F.interpolate(x, size=2, scale_factor=2)
    with pytest.raises(ValueError, match=r"interpolate: mode='bicubic' is not supported"):
        F.interpolate(x, size=2, mode="bicubic")
    with pytest.raises(ValueError, match="interpolate: align_corners=True can only be set "
                                         "with mode 'bilinear'"):
        F.interpolate(x, size=2, align_corners=True)
    with pytest.raises(ValueError, match=r"interpolate: scale_factor=0.1 makes the output "
                                         "0x0 from 4x4"):
        F.interpolate(x, scale_factor=0.1)
    with pytest.raises(ValueError, match=r"interpolate: size=\(0, 2\) must be positive"):
        F.interpolate(x, size=(0, 2))
    with pytest.raises(TypeError, match=r"interpolate: size=2.5 must hold ints"):
        F.interpolate(x, size=2.5)
    with pytest.raises(ValueError, match=r"interpolate: x must be 4-D"):
        F.interpolate(mc.tensor(np.zeros((1, 4, 4))), size=2)
    with pytest.raises(ValueError, match="Upsample: give exactly one"):
        mc.nn.Upsample()
    with pytest.raises(ValueError, match=r"Upsample: mode='area' is not supported"):
        mc.nn.Upsample(size=2, mode="area")
