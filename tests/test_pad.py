"""pad against torch.nn.functional.pad for zeros (constant), reflect, replicate and circular:
the padded output and the gradient of the input (the transpose of the padding map)."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as TF
from helpers import compare_with_torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import fixture_settings, normal, pad_cases

import minicond as mc

TORCH_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
              "circular": "circular"}


@fixture_settings
@given(data=st.data())
def test_pad_matches_torch(backend, size_limit, data):
    case = data.draw(pad_cases(size_limit), label="case")
    (x,) = normal(case.seed, case.x_shape)
    y_shape = mc.functional.pad(mc.tensor(x, dtype="float64", backend=backend), case.pad,
                                case.mode).shape
    assert y_shape == case.out_shape
    compare_with_torch(lambda x: mc.functional.pad(x, case.pad, case.mode),
                       lambda x: TF.pad(x, case.pad, mode=TORCH_MODE[case.mode]),
                       [x], backend=backend)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_pad_asymmetric_matches_torch(backend, mode):
    """Each side padded by a different amount, so a swapped side or axis cannot pass."""
    (x,) = normal(4, (2, 2, 4, 5))
    pad = (1, 3, 2, 0)   # (left, right, top, bottom)
    compare_with_torch(lambda x: mc.functional.pad(x, pad, mode),
                       lambda x: TF.pad(x, pad, mode=TORCH_MODE[mode]),
                       [x], backend=backend)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_pad_int_pads_every_side(backend, mode):
    (x,) = normal(5, (1, 2, 3, 4))
    compare_with_torch(lambda x: mc.functional.pad(x, 2, mode),
                       lambda x: TF.pad(x, (2, 2, 2, 2), mode=TORCH_MODE[mode]),
                       [x], backend=backend)


def test_pad_constant_is_an_alias_of_zeros(backend):
    (x,) = normal(6, (1, 1, 3, 3))
    xt = mc.tensor(x, dtype="float64", backend=backend)
    np.testing.assert_array_equal(mc.functional.pad(xt, (1, 0, 2, 1), "constant").numpy(),
                                  mc.functional.pad(xt, (1, 0, 2, 1), "zeros").numpy())
    compare_with_torch(lambda x: mc.functional.pad(x, (1, 0, 2, 1), "constant"),
                       lambda x: TF.pad(x, (1, 0, 2, 1), mode="constant"),
                       [x], backend=backend)


def test_circular_pad_of_the_full_size_matches_torch(backend):
    """Circular padding may be as large as the input (the boundary case reflect forbids)."""
    (x,) = normal(8, (1, 2, 3, 2))
    pad = (2, 2, 3, 3)
    compare_with_torch(lambda x: mc.functional.pad(x, pad, "circular"),
                       lambda x: TF.pad(x, pad, mode="circular"),
                       [x], backend=backend)
    assert mc.functional.pad(mc.tensor(x, backend=backend), pad, "circular").shape == (
        1, 2, 9, 6)
