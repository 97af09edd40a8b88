import numpy as np
import pytest
import torch
from reference import DTYPES, random_weight, reference_packed
from torch.sparse._semi_structured_conversions import (
    sparse_semi_structured_from_dense_cutlass,
    sparse_semi_structured_to_dense_cutlass,
)

import pysparse24

TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.int8, "float32": torch.float32}


def bits(a):
    a = a.numpy() if isinstance(a, torch.Tensor) and a.dtype != torch.bfloat16 else a
    if isinstance(a, torch.Tensor):
        return a.view(torch.int16).numpy()
    return a.view({4: np.uint32, 2: np.uint16, 1: np.uint8}[a.itemsize])


# ---- packed ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_layout_matches_its_definition(rng, isa, dtype):
    rows, cols = int(rng.integers(1, 20)), 8 * int(rng.integers(1, 30))
    w = pysparse24.prune(random_weight(rng, (rows, cols), dtype, zero_fraction=0.2))
    c = pysparse24.compress(w)
    values, meta = reference_packed(w)
    assert c.format == "packed" and c.dtype == dtype and c.shape == (rows, cols)
    np.testing.assert_array_equal(bits(c.values), bits(values))
    np.testing.assert_array_equal(c.meta, meta)
    np.testing.assert_array_equal(bits(pysparse24.decompress(c)), bits(w))


@pytest.mark.parametrize("dtype", DTYPES)
def test_prune_true_equals_prune_then_compress(rng, isa, dtype):
    w = random_weight(rng, (16, 96), dtype)
    a, b = pysparse24.compress(w, prune=True), pysparse24.compress(pysparse24.prune(w))
    np.testing.assert_array_equal(bits(a.values), bits(b.values))
    np.testing.assert_array_equal(a.meta, b.meta)


def test_every_isa_gives_identical_bytes(rng):
    w = random_weight(rng, (33, 8 * 37), "float16", zero_fraction=0.3)  # tails past full registers
    outputs = []
    for isa in ("scalar", "avx2", "avx512"):
        try:
            pysparse24._C.set_isa(isa)
        except ValueError:
            continue
        c = pysparse24.compress(w, prune=True)
        outputs.append((bits(c.values).copy(), c.meta.copy(), pysparse24.mask(w)))
    pysparse24._C.set_isa("auto")
    for other in outputs[1:]:
        for x, y in zip(outputs[0], other):
            np.testing.assert_array_equal(x, y)


def test_packed_handles_groups_with_fewer_than_two_nonzeros(isa):
    w = np.zeros((1, 16), dtype=np.float16)
    w[0, 3] = 5  # group 0: one non-zero at the end
    w[0, 9] = -1  # group 2: one non-zero
    c = pysparse24.compress(w)
    np.testing.assert_array_equal(pysparse24.decompress(c), w)
    assert c.meta[0, 0] & 0xF == (0 | 3 << 2)  # lowest-index zero is kept beside the non-zero


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "int8"])
def test_packed_torch_in_torch_out(rng, dtype):
    w = torch.from_numpy(rng.standard_normal((8, 32)).astype(np.float32) * 10).to(TORCH_DTYPES[dtype])
    c = pysparse24.compress(w, prune=True)
    assert isinstance(c.values, torch.Tensor) and c.values.dtype == w.dtype and c.meta.dtype == torch.uint8
    assert torch.equal(pysparse24.decompress(c), pysparse24.prune(w))


# ---- cutlass: bit-identical to PyTorch's reference conversion ----------------------------------


def _cutlass_case(rng, dtype, zero_fraction):
    row_multiple, col_multiple = {"int8": (16, 64), "float32": (32, 16)}.get(dtype, (32, 32))
    shape = (row_multiple * int(rng.integers(1, 5)), col_multiple * int(rng.integers(1, 7)))
    w = torch.from_numpy(random_weight(rng, shape, "int8" if dtype == "int8" else "float32", zero_fraction))
    w = w.to(TORCH_DTYPES[dtype])
    pattern = (1, 2) if dtype == "float32" else (2, 4)
    return pysparse24.prune(w, *pattern)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int8", "float32"])
@pytest.mark.parametrize("zero_fraction", [0.0, 0.5, 0.9])
def test_cutlass_is_bit_identical_to_pytorch(rng, isa, dtype, zero_fraction):
    for _ in range(3):  # several random shapes per case
        w = _cutlass_case(rng, dtype, zero_fraction)
        c = pysparse24.compress(w, format="cutlass")
        ref_values, ref_meta = sparse_semi_structured_from_dense_cutlass(w)
        assert c.values.dtype == ref_values.dtype and c.meta.dtype == ref_meta.dtype
        assert torch.equal(c.values.view(torch.uint8), ref_values.view(torch.uint8))
        assert torch.equal(c.meta, ref_meta)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int8", "float32"])
def test_cutlass_decompress_is_bit_exact(rng, isa, dtype):
    w = _cutlass_case(rng, dtype, 0.3)
    c = pysparse24.compress(w, format="cutlass")
    assert torch.equal(pysparse24.decompress(c).view(torch.uint8), w.view(torch.uint8))
    if dtype != "float32":  # PyTorch's own float32 path round-trips through half and is not exact
        assert torch.equal(sparse_semi_structured_to_dense_cutlass(c.values, c.meta), w)


def test_cutlass_float32_is_one_of_two(rng):
    w = torch.randn(32, 16)
    with pytest.raises(ValueError, match="1:2 pattern allows at most 1"):
        pysparse24.compress(pysparse24.prune(w), format="cutlass")  # 2:4 is not enough for fp32
    c = pysparse24.compress(w, format="cutlass", prune=True)
    assert c.pattern == "1:2"
    assert torch.equal(pysparse24.decompress(c), pysparse24.prune(w, 1, 2))


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "float8_e5m2"])
def test_float8_cutlass_round_trip(rng, dtype):
    w = pysparse24.prune(random_weight(rng, (32, 128), dtype, zero_fraction=0.2))
    # float8 rounds tiny negatives to -0.0; in a group with fewer than two non-zeros the cutlass
    # layout names PyTorch's zero positions (test_cutlass_keeps_negative_zeros_like_pytorch), so a
    # kept -0.0 may come back +0.0. Every other bit must round-trip.
    w[w == 0] = 0
    c = pysparse24.compress(w, format="cutlass")
    assert c.meta.dtype == np.int32
    np.testing.assert_array_equal(bits(pysparse24.decompress(c)), bits(w))


def test_sizes():
    w = pysparse24.prune(np.random.default_rng().standard_normal((64, 128)).astype(np.float16))
    c = pysparse24.compress(w)
    assert c.nbytes == 64 * 64 * 2 + 64 * 16 and c.dense_nbytes == 64 * 128 * 2
    assert c.nbytes / c.dense_nbytes == pytest.approx(0.5625)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cutlass_keeps_negative_zeros_like_pytorch(rng, isa, dtype):
    w = _cutlass_case(rng, dtype, 0.8)
    w[w == 0] = -0.0  # many groups with fewer than two non-zeros, their zeros negative
    for pruned_first in (True, False):
        dense = pysparse24.prune(w) if pruned_first else w
        ref_values, ref_meta = sparse_semi_structured_from_dense_cutlass(dense)
        c = pysparse24.compress(w, format="cutlass", prune=pruned_first)
        assert torch.equal(c.values.view(torch.int16), ref_values.view(torch.int16))
        assert torch.equal(c.meta, ref_meta)


def test_torch_float8_round_trip(rng):
    w = torch.from_numpy(rng.standard_normal((32, 128)).astype(np.float32)).to(torch.float8_e4m3fn)
    c = pysparse24.compress(w, prune=True)
    assert c.values.dtype == torch.float8_e4m3fn
    assert torch.equal(pysparse24.decompress(c).view(torch.uint8), pysparse24.prune(w).view(torch.uint8))
