"""pysparse24.matmul / linear: against float64 references, on every SIMD path, with poisoned outputs."""

import ml_dtypes
import numpy as np
import pytest
import torch

import pysparse24
from pysparse24 import _C

PATHS = [
    isa
    for isa in ("scalar", "avx2", "avx512")
    if ["scalar", "avx2", "avx512"].index(isa) <= ["scalar", "avx2", "avx512"].index(_C.best_isa())
]
# (M, K, N): GEMV, N=2 (the GEMV tiles), odd N, K with short tail blocks for every ISA (K/2 not a multiple of 16 / 64),
# non-square, and enough rows for several row tiles and both threads.
# float32 with N >= _C.matmul_large_n takes the large-N kernels: N not a multiple of any panel width,
# several K blocks, rows not a multiple of the row tile, and more rows than one thread's block;
# 13x8200x70: packed X larger than one L2 chunk, so every row block is decoded once per chunk.
SHAPES = [
    (1, 8, 1),
    (29, 520, 2),
    (7, 40, 3),
    (33, 136, 9),
    (64, 1032, 17),
    (13, 4104, 1),
    (130, 256, 70),
    (5, 8, 32),
    (45, 2056, 97),
    (13, 8200, 70),
]


@pytest.fixture(autouse=True)
def restore_isa():
    yield
    _C.set_isa("auto")


def random_sparse(rng, M, K, dtype):
    if dtype == "int8":
        dense = rng.integers(-128, 128, (M, K)).astype(np.int8)
    else:
        dense = rng.standard_normal((M, K)).astype(np.float32)
        if dtype == "bfloat16":
            dense = dense.astype(ml_dtypes.bfloat16)
    return pysparse24.prune(dense)


def random_x(rng, shape, dtype):
    if dtype == "int8":
        return rng.integers(-128, 128, shape).astype(np.int8)
    x = rng.standard_normal(shape).astype(np.float32)
    return x.astype(ml_dtypes.bfloat16) if dtype == "bfloat16" else x


def poisoned(shape, dtype):
    if dtype == "int8":  # int32 results
        return np.full(shape, 0x7F7F7F7F, dtype=np.int32)
    return np.full(shape, np.nan, dtype=ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32)


def assert_close_to_reference(y, w, x, dtype):
    """float32: within accumulation error of the float64 product; bfloat16: plus one rounding of
    the result to bfloat16; int8: exact."""
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    ref = w64 @ x64
    got = np.asarray(y).astype(np.float64)
    assert np.all(np.isfinite(got))
    if dtype == "int8":
        np.testing.assert_array_equal(got, ref)
        return
    scale = np.abs(w64) @ np.abs(x64)  # bound on the size of rounding errors in any order
    tolerance = 1e-6 * scale * np.sqrt(w.shape[1]) + 1e-30
    if dtype == "bfloat16":
        tolerance = tolerance + np.abs(ref) * 2.0**-8
    assert np.all(np.abs(got - ref) <= tolerance), np.max(np.abs(got - ref) / tolerance)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_path_matches_reference_and_each_other(dtype, shape):
    M, K, N = shape
    rng = np.random.default_rng(abs(hash((dtype, shape))) % 2**32)
    w = random_sparse(rng, M, K, dtype)
    c = pysparse24.compress(w)
    x = random_x(rng, (K, N), dtype)
    results = {}
    for isa in PATHS:
        _C.set_isa(isa)
        out = poisoned((M, N), dtype)
        assert pysparse24.matmul(c, x, out=out) is out
        assert_close_to_reference(out, w, x, dtype)
        results[isa] = out
    for isa in PATHS:  # one summation order for all paths: bit-identical results
        np.testing.assert_array_equal(results[isa].view(np.uint8), results["scalar"].view(np.uint8))


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("M, N", [(1, 1), (8, 4), (8, 8)])  # a GEMV row; a 4 x 4 tile; full pair tiles
def test_int8_sum_wraps_like_int32_on_every_path(isa, M, N):
    # K/2 * 128 * 128 > 2**31: the int32 sum overflows; every path wraps it the same way.
    K = 2 * 140_000
    w = np.zeros((M, K), dtype=np.int8)
    w[:, 0::4] = -128
    w[:, 1::4] = -128
    x = np.full((K, N), -128, dtype=np.int8)
    _C.set_isa(isa)
    y = pysparse24.matmul(pysparse24.compress(w), x)
    expected = np.int64(K // 2) * 128 * 128
    np.testing.assert_array_equal(y, np.full((M, N), np.int64(expected).astype(np.int32)))  # the low 32 bits


def test_gemv_with_1d_x_and_default_output():
    rng = np.random.default_rng(1)
    w = random_sparse(rng, 40, 96, "float32")
    x = random_x(rng, (96,), "float32")
    y = pysparse24.matmul(pysparse24.compress(w), x)
    assert y.shape == (40,) and y.dtype == np.float32
    assert_close_to_reference(y[:, None], w, x[:, None], "float32")


def test_torch_tensors_in_torch_out_float32_and_bfloat16():
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        w = pysparse24.prune(torch.randn(48, 160).to(dtype))
        x = torch.randn(160, 5).to(dtype)
        y = pysparse24.matmul(pysparse24.compress(w), x)
        assert isinstance(y, torch.Tensor) and y.dtype == dtype and y.shape == (48, 5)
        ref = w.double() @ x.double()
        torch.testing.assert_close(y.double(), ref, rtol=2**-7, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("K, N", [(64, 7), (200, 70)])  # X packed in one tile / in 64 x 64 tiles
def test_strided_x_and_out_views(dtype, K, N):
    rng = np.random.default_rng(2)
    w = random_sparse(rng, 24, K, dtype)
    c = pysparse24.compress(w)
    x = random_x(rng, (N, K), dtype).T  # (K, N), columns contiguous
    out_big = poisoned((24, 2 * N), dtype)
    out = out_big[:, ::2]
    pysparse24.matmul(c, x, out=out)
    np.testing.assert_array_equal(out, pysparse24.matmul(c, np.ascontiguousarray(x)))
    assert_close_to_reference(out, w, x, dtype)
    gaps = np.ascontiguousarray(out_big[:, 1::2])
    np.testing.assert_array_equal(gaps.view(np.uint8), poisoned((24, N), dtype).view(np.uint8))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("n", [1, 9])  # GEMV tiles; 4 x 4 tiles (int8: per-thread decoded panels)
def test_threads_do_not_change_results(dtype, n):
    rng = np.random.default_rng()
    M, K = 300, 4104  # M*N*K above the size at which the kernels go parallel
    w = random_sparse(rng, M, K, dtype)
    c = pysparse24.compress(w)
    x = random_x(rng, (K, n), dtype)
    one, two = pysparse24.matmul(c, x, threads=1), pysparse24.matmul(c, x, threads=2)
    np.testing.assert_array_equal(np.asarray(one).view(np.uint8), np.asarray(two).view(np.uint8))
    assert_close_to_reference(two, w, x, dtype)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        pysparse24.matmul(c, x, threads=0)


def test_out_may_alias_x():
    # X is copied before the product, so writing the result over x is safe.
    rng = np.random.default_rng(10)
    w = random_sparse(rng, 64, 64, "float32")
    c = pysparse24.compress(w)
    x = random_x(rng, (64, 5), "float32")
    expected = pysparse24.matmul(c, x)
    pysparse24.matmul(c, x, out=x)
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_linear_matches_torch_linear(dtype):
    torch.manual_seed(4)
    tdtype = getattr(torch, dtype)
    if dtype == "int8":
        w = pysparse24.prune(torch.randint(-128, 128, (36, 72), dtype=torch.int8))
        x = torch.randint(-128, 128, (2, 3, 72), dtype=torch.int8)
        bias = torch.randint(-1000, 1000, (36,), dtype=torch.int32)
    else:
        w = pysparse24.prune(torch.randn(36, 72).to(tdtype))
        x = torch.randn(2, 3, 72).to(tdtype)
        bias = torch.randn(36).to(tdtype)
    y = pysparse24.linear(x, pysparse24.compress(w), bias)
    assert y.shape == (2, 3, 36)
    ref = torch.nn.functional.linear(x.double(), w.double(), bias.double())
    if dtype == "int8":
        assert y.dtype == torch.int32
        torch.testing.assert_close(y.double(), ref, rtol=0, atol=0)
    else:
        assert y.dtype == tdtype
        torch.testing.assert_close(y.double(), ref, rtol=2**-7 if dtype == "bfloat16" else 1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("shape", [(16, 64, 16), (40, 72, 37), (113, 160, 100)], ids=lambda s: "x".join(map(str, s)))
def test_linear_orientation_on_every_path(dtype, shape):
    # y (N, M) = x (N, K) @ W.T, both row-major: X's columns and the output's rows are contiguous,
    # which the large-N kernels transpose in blocks (edges: K % 16 = 8, N and M not multiples of 16,
    # M over one 96-row block). Same bits on every path and as the (K, N) orientation.
    M, K, N = shape
    rng = np.random.default_rng(abs(hash(("linear", dtype, shape))) % 2**32)
    w = random_sparse(rng, M, K, dtype)
    c = pysparse24.compress(w)
    x = random_x(rng, (N, K), dtype)
    bias = rng.integers(-1000, 1000, M).astype(np.int32) if dtype == "int8" else random_x(rng, (M,), dtype)
    plain = pysparse24.matmul(c, np.ascontiguousarray(x.T))
    results = {}
    for isa in PATHS:
        _C.set_isa(isa)
        out = poisoned((N, M), dtype)
        pysparse24.matmul(c, x.T, out=out.T)
        np.testing.assert_array_equal(out.view(np.uint8), np.ascontiguousarray(plain.T).view(np.uint8))
        y = pysparse24.linear(x, c, bias)
        with_bias = np.concatenate([w.astype(np.float64), bias[:, None].astype(np.float64)], axis=1)
        assert_close_to_reference(y.T, with_bias, np.concatenate([x.T.astype(np.float64), np.ones((1, N))]), dtype)
        results[isa] = y
    for isa in PATHS:
        np.testing.assert_array_equal(results[isa].view(np.uint8), results["scalar"].view(np.uint8))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_whole_and_per_panel_x_packing_give_the_same_bits(dtype):
    # The large-N kernels pack X whole before the product or panel by panel, fused with it (the
    # default picks by where the weight and the packed X fit in cache): the same packed values in the
    # same summation order, so the same bits on every path and thread count, in both orientations of
    # x (columns contiguous: block transposes; rows contiguous: element by element), and within
    # float32 accumulation of float64. 200 rows: three 96-row blocks; K % 16 = 8; N = 150: panels of
    # 64, 64 and 22 columns.
    if large_n(dtype) is None:
        pytest.skip("bfloat16 has no large-N regime on a CPU with AVX-512 BF16")
    M, K, N = 200, 264, 150
    rng = np.random.default_rng(1414)
    w = random_sparse(rng, M, K, dtype)
    c = pysparse24.compress(w)
    x = random_x(rng, (N, K), dtype)
    bias = random_x(rng, (M,), dtype).astype(np.float32)  # the binding takes a float32 bias for bfloat16
    raw = (lambda a: a.view(np.int16)) if dtype == "bfloat16" else (lambda a: a)
    results = {}
    for isa in PATHS:
        _C.set_isa(isa)
        for orientation, x_kn in (("columns", x.T), ("rows", np.ascontiguousarray(x.T))):
            for packing in ("whole", "panel", "auto"):
                for threads in (1, 2):
                    out = poisoned((N, M), dtype)
                    _C.sparse_matmul(raw(c.values), c.meta, raw(x_kn), raw(out).T, dtype, bias, threads, packing)
                    results[isa, orientation, packing, threads] = out
    first = next(iter(results.values()))
    for key, out in results.items():
        np.testing.assert_array_equal(out.view(np.uint8), first.view(np.uint8), err_msg=str(key))
    with_bias = np.concatenate([w.astype(np.float64), bias[:, None].astype(np.float64)], axis=1)
    assert_close_to_reference(first.T, with_bias, np.concatenate([x.T.astype(np.float64), np.ones((1, N))]), dtype)
    with pytest.raises(ValueError, match="x_packing"):
        _C.sparse_matmul(raw(c.values), c.meta, raw(x.T), raw(first).T, dtype, bias, 1, "fused")


def test_linear_without_bias_numpy():
    rng = np.random.default_rng(5)
    w = random_sparse(rng, 20, 32, "float32")
    x = random_x(rng, (6, 32), "float32")
    y = pysparse24.linear(x, pysparse24.compress(w))
    assert_close_to_reference(y.T, w, x.T, "float32")


# ---- errors ----------------------------------------------------------------------------------


@pytest.fixture
def weight():
    rng = np.random.default_rng(6)
    return pysparse24.compress(random_sparse(rng, 16, 32, "float32"))


def test_wrong_inner_dimension_is_a_clear_error(weight):
    with pytest.raises(ValueError, match="needs K=32"):
        pysparse24.matmul(weight, np.ones((24, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(\.\.\., 32\)"):
        pysparse24.linear(np.ones((3, 24), np.float32), weight)


def test_dtype_mismatch_is_a_type_error(weight):
    with pytest.raises(TypeError, match="dtype float64 but the weight is float32"):
        pysparse24.matmul(weight, np.ones((32, 3)))


def test_bad_out_is_rejected(weight):
    x = np.ones((32, 3), np.float32)
    with pytest.raises(ValueError, match="out must have shape"):
        pysparse24.matmul(weight, x, out=np.empty((16, 4), np.float32))
    with pytest.raises(TypeError, match="out must have dtype float32"):
        pysparse24.matmul(weight, x, out=np.empty((16, 3), np.float64))
    with pytest.raises(TypeError, match="same kind"):
        pysparse24.matmul(weight, x, out=torch.empty(16, 3))


def test_bad_bias_is_rejected(weight):
    x = np.ones((2, 32), np.float32)
    with pytest.raises(ValueError, match="bias must have shape"):
        pysparse24.linear(x, weight, np.ones(15, np.float32))


def test_other_formats_and_objects_are_rejected(weight):
    rng = np.random.default_rng(7)
    cutlass = pysparse24.compress(random_sparse(rng, 32, 32, "bfloat16"), format="cutlass")
    with pytest.raises(ValueError, match="format='packed'"):
        pysparse24.matmul(cutlass, np.ones((32, 1), ml_dtypes.bfloat16))
    with pytest.raises(TypeError, match="Compressed"):
        pysparse24.matmul(np.ones((16, 32), np.float32), np.ones((32, 1), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        pysparse24.matmul(weight, np.ones((32, 1, 1), np.float32))


def test_unsupported_weight_dtype_is_rejected():
    w = pysparse24.prune(np.random.default_rng(8).standard_normal((8, 16)).astype(np.float16))
    with pytest.raises(ValueError, match="supports float32, bfloat16, int8"):
        pysparse24.matmul(pysparse24.compress(w), np.ones((16, 1), np.float16))


def test_low_level_binding_checks_shapes():
    values = np.ones((4, 8), np.float32)
    meta = np.zeros((4, 2), np.uint8)
    with pytest.raises(ValueError, match="x has 8 rows but the weight has K = 16"):
        _C.sparse_matmul(values, meta, np.ones((8, 1), np.float32), np.empty((4, 1), np.float32), "float32")
    with pytest.raises(ValueError, match="meta must have K/8"):
        _C.sparse_matmul(
            values, np.zeros((4, 3), np.uint8), np.ones((16, 1), np.float32), np.empty((4, 1), np.float32), "float32"
        )
    with pytest.raises(ValueError, match="unsupported dtype"):
        _C.sparse_matmul(values, meta, np.ones((16, 1), np.float32), np.empty((4, 1), np.float32), "float16")
    with pytest.raises(ValueError, match="multiple of 8"):
        _C.sparse_matmul(
            np.ones((4, 6), np.float32),
            np.zeros((4, 2), np.uint8),
            np.ones((12, 1), np.float32),
            np.empty((4, 1), np.float32),
            "float32",
        )


def bfloat16_bits_alike_on_every_path(c, x):
    """matmul(c, x) on every SIMD path, asserted bit-identical; returns the bits."""
    results = []
    for isa in PATHS:
        _C.set_isa(isa)
        results.append(pysparse24.matmul(c, x).view(np.uint16))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    return results[0]


# 1, 3: the lane kernels (on CPUs without AVX-512 BF16, bf16_widened_tile: the row pairs and the
# column pairs); 40: the large-N kernels where the regime covers bfloat16.
@pytest.mark.parametrize("n", [1, 3, 5, 40])
def test_bfloat16_denormals_follow_one_rule_on_every_path(n):
    # Products and partial sums in the float32 denormal range, and denormal bfloat16 inputs: every
    # path reads denormal inputs as zero and treats denormal partial sums alike (the lane kernels
    # flush them, the vdpbf16ps rule; the large-N regime keeps them: csrc/cpu/matmul.h).
    rng = np.random.default_rng(9)
    w = (rng.standard_normal((21, 264)) * 1e-19).astype(np.float32)
    w[:, ::7] = 3e-39  # a denormal bfloat16 after rounding
    x = (rng.standard_normal((264, n)) * 1e-19).astype(np.float32)
    x[::5] = -2e-39
    w = pysparse24.prune(w.astype(ml_dtypes.bfloat16))
    x = x.astype(ml_dtypes.bfloat16)
    c = pysparse24.compress(w)
    bits = bfloat16_bits_alike_on_every_path(c, x)
    assert np.any(bits & 0x7FFF)  # not everything flushed: the test exercises real sums


@pytest.mark.parametrize("n", [8, 40])
def test_bfloat16_nan_and_inf_round_alike_on_every_path(n):
    # Full 8 x 4 tiles round their results to bfloat16 as vectors: a NaN column, an infinity
    # column and sums that overflow to infinity must come out as the scalar path's bits.
    rng = np.random.default_rng(10)
    w = random_sparse(rng, 16, 128, "bfloat16")
    c = pysparse24.compress(w)
    x = random_x(rng, (128, n), "bfloat16")
    x[:, 1] = np.nan
    x[:, 2] = np.inf
    x[:, 3] = ml_dtypes.bfloat16(3e38)  # finite inputs, sums past float32's range
    y = bfloat16_bits_alike_on_every_path(c, x).view(ml_dtypes.bfloat16).astype(np.float32)
    assert np.all(np.isnan(y[:, 1])) and np.all(np.isfinite(y[:, [0, 4, 5, 6, 7]]))
    assert np.all(np.isinf(y[:, 3]) | np.isnan(y[:, 3]))


def large_n(dtype):
    """First N of the large-N regime for dtype; None where it never applies (matmul.h)."""
    return _C.matmul_large_n if dtype == "float32" else (_C.matmul_large_n_bfloat16 or None)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_batch_invariant_each_column_equals_its_gemv(dtype):
    # One summation order per output element whatever N and the tiling (below the large-N regime):
    # serving a request alone or inside a batch gives the same bits.
    n = 13 if large_n(dtype) is None else min(13, large_n(dtype) - 1)
    assert n >= 4
    rng = np.random.default_rng(11)
    w = random_sparse(rng, 37, 264, dtype)
    c = pysparse24.compress(w)
    x = random_x(rng, (264, n), dtype)
    batched = pysparse24.matmul(c, x)
    for j in range(x.shape[1]):
        np.testing.assert_array_equal(
            pysparse24.matmul(c, np.ascontiguousarray(x[:, j])).view(np.uint8),
            np.ascontiguousarray(batched[:, j]).view(np.uint8),
        )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_batch_invariant_within_the_large_n_regime(dtype):
    # From N = large_n(dtype) on, one running sum per output element: any batch of at least that
    # many columns gives each column the same bits (only the regime boundary changes them).
    n_min = large_n(dtype)
    if n_min is None:
        pytest.skip("bfloat16 has no large-N regime on a CPU with AVX-512 BF16")
    rng = np.random.default_rng(12)
    w = random_sparse(rng, 70, 1032, dtype)
    c = pysparse24.compress(w)
    x = random_x(rng, (1032, 2 * n_min + 37), dtype)
    batched = pysparse24.matmul(c, x)
    for start, width in [(0, n_min), (5, n_min + 1), (n_min + 20, n_min + 17)]:
        part = pysparse24.matmul(c, np.ascontiguousarray(x[:, start : start + width]))
        np.testing.assert_array_equal(part.view(np.uint8), batched[:, start : start + width].view(np.uint8))


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("n", [5, 40])  # both float32 regimes; bfloat16 4 x 4 and pair tiles
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_empty_reduction_writes_the_bias(isa, n, dtype):
    _C.set_isa(isa)
    M = 11  # a full 8-row block of int8/bfloat16 pair tiles and a ragged one
    if dtype == "int8":
        element, out, bias = np.int8, np.full((M, n), 0x7F7F7F7F, np.int32), np.arange(M, dtype=np.int32) - 4
    else:
        element = np.float32 if dtype == "float32" else ml_dtypes.bfloat16
        out = poisoned((M, n), dtype)
        bias = (np.arange(M, dtype=np.float32) - 4) * 0.5
    _C.sparse_matmul(np.zeros((M, 0), element), np.zeros((M, 0), np.uint8), np.zeros((0, n), element), out, dtype, bias)
    np.testing.assert_array_equal(np.asarray(out, np.float64), np.repeat(bias[:, None], n, axis=1))


def _as_torch(a: np.ndarray) -> torch.Tensor:
    return (
        torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)
        if a.dtype == ml_dtypes.bfloat16
        else torch.from_numpy(a)
    )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("lead", [(), (1,), (2, 3)])
def test_linear_torch_fast_path_equals_the_numpy_path(dtype, lead):
    """torch CPU tensors take run_torch_linear (operands by address), numpy arrays the general path:
    the same bits, for 1-D to 3-D x, a non-contiguous x and weight view, and a bias."""
    rng = np.random.default_rng(11)
    w = random_sparse(rng, 40, 96, dtype)
    x = random_x(rng, (*lead, 2 * 96), dtype)[..., ::2]  # non-contiguous rows
    bias = rng.integers(-99, 99, 40).astype(np.int32) if dtype == "int8" else random_x(rng, (40,), dtype)
    c = pysparse24.compress(w)
    want = pysparse24.linear(x, c, bias)
    values = torch.cat([_as_torch(c.values)] * 2, dim=1)[:, : c.values.shape[1]]  # a strided view
    ct = pysparse24.Compressed(values, torch.from_numpy(c.meta), c.shape, c.dtype, c.format)
    got = pysparse24.linear(_as_torch(x), ct, _as_torch(bias))
    assert tuple(got.shape) == (*lead, 40)
    got_bits = got.view(torch.int16) if dtype == "bfloat16" else got
    np.testing.assert_array_equal(got_bits.numpy().view(np.uint8), np.asarray(want).view(np.uint8))


def test_linear_torch_fast_path_rechecks_a_weight_changed_in_place():
    """The fast path remembers a checked weight; an in-place change to its metadata is checked again."""
    rng = np.random.default_rng(12)
    c = pysparse24.compress(torch.from_numpy(random_sparse(rng, 8, 64, "float32")))
    x = torch.from_numpy(random_x(rng, (3, 64), "float32"))
    want = pysparse24.linear(x, c)
    good = int(c.meta[1, 2])
    c.meta[1, 2] = 0xFF  # codes (3, 3): no valid pair
    with pytest.raises(ValueError, match="corrupt metadata: group 20 "):
        pysparse24.linear(x, c)
    c.meta[1, 2] = good
    assert torch.equal(pysparse24.linear(x, c), want)
