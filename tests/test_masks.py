import numpy as np
import pytest
import torch
from reference import DTYPES, magnitudes, numpy_dtype, random_weight, reference_mask

import pysparse24


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", [(2, 4), (1, 2), (1, 4), (3, 8), (4, 16), (5, 16), (2, 2)])
def test_mask_matches_reference(rng, isa, dtype, n, m):
    rows, cols = int(rng.integers(1, 9)), m * int(rng.integers(1, 40))
    w = random_weight(rng, (rows, cols), dtype, zero_fraction=0.1)
    got = pysparse24.mask(w, n, m)
    assert got.dtype == np.bool_ and got.shape == w.shape
    np.testing.assert_array_equal(got, reference_mask(w, n, m))


def test_ties_break_toward_lower_index(isa):
    w = np.array([[1, 1, 1, 1, -2, 2, 2, -2, 0, 0, 0, 0, 3, -3, 1, -1]], dtype=np.float16)
    expected = [[1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0]]
    np.testing.assert_array_equal(pysparse24.mask(w), np.array(expected, dtype=bool))


def test_int8_minus_128_is_the_largest_magnitude(isa):
    w = np.array([[127, -128, 5, -127]], dtype=np.int8)
    np.testing.assert_array_equal(pysparse24.mask(w), [[True, True, False, False]])


def test_conv_weight_groups_run_along_input_channels(rng):
    w = random_weight(rng, (8, 16, 3, 3), "float32")
    got = pysparse24.mask(w)  # default dim for 4-D: C
    as_rows = np.moveaxis(w, 1, -1).reshape(-1, 16)
    expected = np.moveaxis(reference_mask(as_rows, 2, 4).reshape(8, 3, 3, 16), -1, 1)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(pysparse24.mask(w, dim=1), got)
    assert pysparse24.is_sparse(pysparse24.prune(w), dim=1)


def test_explicit_dim_on_a_matrix(rng):
    w = random_weight(rng, (16, 6), "float16")
    np.testing.assert_array_equal(pysparse24.mask(w, dim=0), reference_mask(w.T.copy(), 2, 4).T)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int8])
def test_torch_in_torch_out(rng, dtype):
    w = torch.from_numpy(rng.standard_normal((16, 32)).astype(np.float32) * 20).to(dtype)
    keep = pysparse24.mask(w)
    assert isinstance(keep, torch.Tensor) and keep.dtype == torch.bool
    np.testing.assert_array_equal(keep.numpy(), reference_mask(w.float().numpy(), 2, 4))
    pruned = pysparse24.prune(w)
    assert isinstance(pruned, torch.Tensor) and pruned.dtype == dtype
    assert torch.equal(pruned, torch.where(keep, w, torch.zeros((), dtype=dtype)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_prune_then_is_sparse(rng, dtype):
    w = random_weight(rng, (8, 64), dtype)
    assert not pysparse24.is_sparse(w)  # dense random data is not 2:4
    p = pysparse24.prune(w)
    assert p.dtype == w.dtype and pysparse24.is_sparse(p)
    kept = reference_mask(w, 2, 4)
    np.testing.assert_array_equal(p.view(np.uint8)[np.repeat(~kept, w.itemsize, axis=1)], 0)  # +0 bits
    np.testing.assert_array_equal(magnitudes(p)[kept], magnitudes(w)[kept])
    assert pysparse24.is_sparse(pysparse24.prune(w, 1, 2), 1, 2)


def test_negative_zero_counts_as_zero():
    w = np.array([[-0.0, -0.0, -0.0, 1.0]], dtype=np.float32)
    assert pysparse24.is_sparse(w)


# ---- 4x4 blocks, 2:4 along rows and columns ----------------------------------------------------


def _fits(p):
    return (p.sum(0) <= 2).all() and (p.sum(1) <= 2).all()


def _maximal_patterns():
    """Every 4x4 0/1 block with at most two ones per row and column to which no one can be added."""
    import itertools

    blocks = [np.array(bits).reshape(4, 4) for bits in itertools.product([0, 1], repeat=16)]
    fitting = [p for p in blocks if _fits(p)]
    return [
        p
        for p in fitting
        if all(p.flat[b] or not _fits(p + np.eye(1, 16, b, dtype=int).reshape(4, 4)) for b in range(16))
    ]


MAXIMAL = _maximal_patterns()


def test_pattern_counts():
    assert len(MAXIMAL) == 186
    assert sum(1 for p in MAXIMAL if p.sum() == 8) == 90


@pytest.mark.parametrize("method", ["greedy", "exhaustive"])
def test_mask_2d_is_2to4_both_ways(rng, method):
    w = random_weight(rng, (16, 32), "float16")
    keep = pysparse24.mask_2d(w, method)
    blocks = keep.reshape(4, 4, 8, 4).transpose(0, 2, 1, 3)
    assert (blocks.sum(-1) <= 2).all() and (blocks.sum(-2) <= 2).all()
    assert pysparse24.is_sparse(np.where(keep, w, 0)) and pysparse24.is_sparse(np.where(keep, w, 0).T.copy())


def test_mask_2d_greedy_matches_pytorch_reference(rng):
    from torch.sparse._semi_structured_conversions import _sparse_semi_structured_tile

    w = torch.from_numpy(rng.standard_normal((32, 64)).astype(np.float32))
    expected = _sparse_semi_structured_tile(w.abs().clone()) != 0
    np.testing.assert_array_equal(pysparse24.mask_2d(w.numpy(), "greedy"), expected.numpy())


def test_mask_2d_exhaustive_is_the_best_pattern(rng):
    w = random_weight(rng, (8, 8), "float32")
    keep = pysparse24.mask_2d(w, "exhaustive")
    patterns = MAXIMAL
    mags = magnitudes(w)
    for br in range(2):
        for bc in range(2):
            block = mags[4 * br : 4 * br + 4, 4 * bc : 4 * bc + 4]
            best = max(float((block * p).sum()) for p in patterns)
            chosen = keep[4 * br : 4 * br + 4, 4 * bc : 4 * bc + 4]
            assert float((block * chosen).sum()) == pytest.approx(best, rel=1e-12)
    greedy = pysparse24.mask_2d(w, "greedy")
    assert (mags * keep).sum() >= (mags * greedy).sum() - 1e-9  # greedy ends in a maximal pattern too


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float8_e4m3fn"])
def test_mask_2d_exhaustive_uses_true_magnitudes(rng, dtype):
    w = random_weight(rng, (4, 4), dtype)
    keep = pysparse24.mask_2d(w, "exhaustive")
    mags = magnitudes(w)
    best = max(float((mags * p).sum()) for p in MAXIMAL)
    assert float((mags * keep).sum()) == pytest.approx(best)


def test_numpy_dtype_helper_covers_all():
    assert [numpy_dtype(d).itemsize for d in DTYPES] == [4, 2, 2, 1, 1, 1]
