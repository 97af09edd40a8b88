"""Bad input gets a clear exception naming the problem; odd-but-valid input is handled correctly."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import DTYPES, numpy_dtype, random_weight, reference_mask

import pysparse24
from pysparse24 import Compressed


def test_wrong_rank():
    with pytest.raises(ValueError, match="2-D"):
        pysparse24.compress(np.ones((2, 4, 8), np.float16))
    with pytest.raises(ValueError, match="scalar"):
        pysparse24.mask(np.array(3.0, dtype=np.float32))
    with pytest.raises(ValueError, match="2-D"):
        pysparse24.mask_2d(np.ones(16, np.float32))


def test_dimension_not_divisible():
    with pytest.raises(ValueError, match="not divisible by the group size m=4"):
        pysparse24.mask(np.ones((3, 6), np.float32))
    with pytest.raises(ValueError, match=r"columns divisible by 8; got shape \(4, 12\)"):
        pysparse24.compress(np.zeros((4, 12), np.float16))
    with pytest.raises(ValueError, match="rows divisible by 32"):
        pysparse24.compress(np.zeros((16, 64), np.float16), format="cutlass")
    with pytest.raises(ValueError, match="columns divisible by 32"):  # PyTorch's reference crashes here
        pysparse24.compress(np.zeros((32, 16), np.float16), format="cutlass")
    with pytest.raises(ValueError, match="divisible by 4"):
        pysparse24.mask_2d(np.ones((4, 6), np.float32))


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.complex64, np.uint8, np.bool_])
def test_unsupported_dtype(dtype):
    with pytest.raises(TypeError, match="unsupported dtype"):
        pysparse24.mask(np.ones((4, 8), dtype))
    with pytest.raises(TypeError, match="unsupported dtype"):
        pysparse24.compress(np.ones((4, 8), dtype))


def test_not_an_array():
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        pysparse24.compress([[1.0, 0.0, 0.0, 2.0] * 2])


def test_bad_pattern_and_format():
    with pytest.raises(ValueError, match="between 1 and 16"):
        pysparse24.mask(np.ones((2, 32), np.float32), 2, 32)
    with pytest.raises(ValueError, match="n must be between"):
        pysparse24.mask(np.ones((2, 8), np.float32), 5, 4)
    with pytest.raises(ValueError, match="unknown format"):
        pysparse24.compress(np.ones((2, 8), np.float32), format="csr")
    with pytest.raises(ValueError, match="dim 2 is out of range"):
        pysparse24.mask(np.ones((4, 8), np.float32), dim=2)


def test_empty_arrays():
    with pytest.raises(ValueError, match="empty"):
        pysparse24.mask(np.ones((0, 8), np.float32))
    with pytest.raises(ValueError, match="empty"):
        pysparse24.compress(np.ones((0, 8), np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_nan_and_inf_are_named(isa, bad, dtype):
    w = np.ones((5, 64), numpy_dtype(dtype))
    w[3, 37] = bad
    for call in (
        lambda: pysparse24.mask(w),
        lambda: pysparse24.compress(w, prune=True),
        lambda: pysparse24.compress(w),
    ):
        with pytest.raises(ValueError, match=r"NaN or Inf at index \(3, 37\)"):
            call()


def test_nan_position_is_in_the_callers_coordinates():
    w = np.ones((8, 16, 3, 3), np.float32)
    w[2, 5, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"\(2, 5, 1, 0\)"):
        pysparse24.mask(w)


def test_float8_nan_is_named():
    w = np.ones((2, 8), numpy_dtype("float8_e4m3fn"))
    w[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"\(1, 2\)"):
        pysparse24.mask(w)


def test_overfull_group_names_row_and_group(isa):
    w = pysparse24.prune(np.random.default_rng().standard_normal((6, 64)).astype(np.float16))
    w[4, 21] = w[4, 22] = w[4, 23] = 1  # group 5 of row 4 now has 3 non-zeros...
    w[4, 20] = 0
    w[5, 0:4] = 2  # ...and a later row has 4: the first one is reported
    with pytest.raises(
        ValueError, match=r"row 4, group 5 \(columns 20..23\) has 3 non-zeros; the 2:4 pattern allows at most 2"
    ):
        pysparse24.compress(w)
    with pytest.raises(ValueError, match="row 4, group 5"):
        pysparse24.compress(torch.from_numpy(w), format="packed")


def test_non_contiguous_and_negative_strides(rng, isa):
    base = random_weight(rng, (16, 64), "float16")
    for view in (base[::-1], base[:, ::-1], base[::2], base.T.copy().T, base[:, 8:40]):
        expected = pysparse24.mask(np.ascontiguousarray(view))
        np.testing.assert_array_equal(pysparse24.mask(view), expected)
        c = pysparse24.compress(view, prune=True)
        np.testing.assert_array_equal(pysparse24.decompress(c), pysparse24.prune(np.ascontiguousarray(view)))
    t = torch.from_numpy(base).t()  # non-contiguous torch view
    np.testing.assert_array_equal(pysparse24.mask(t).numpy(), reference_mask(base.T.copy(), 2, 4))


def test_read_only_input_is_fine_and_untouched(rng):
    w = random_weight(rng, (8, 32), "float32")
    w.setflags(write=False)
    before = w.copy()
    c = pysparse24.compress(w, prune=True)
    np.testing.assert_array_equal(w, before)
    np.testing.assert_array_equal(pysparse24.decompress(c), pysparse24.prune(before))


def test_compressed_fields_must_agree(rng):
    c = pysparse24.compress(random_weight(rng, (8, 32), "float16"), prune=True)
    with pytest.raises(ValueError, match="values have shape"):
        Compressed(c.values[:, :8], c.meta, c.shape, c.dtype, c.format)
    with pytest.raises(ValueError, match="meta has shape"):
        Compressed(c.values, c.meta[:4], c.shape, c.dtype, c.format)
    with pytest.raises(ValueError, match="values have dtype float32"):
        Compressed(c.values.astype(np.float32), c.meta, c.shape, c.dtype, c.format)
    with pytest.raises(ValueError, match="meta has dtype int16"):
        Compressed(c.values, c.meta.astype(np.int16), c.shape, c.dtype, c.format)
    with pytest.raises(ValueError, match="both be numpy arrays or both torch"):
        Compressed(c.values, torch.from_numpy(c.meta), c.shape, c.dtype, c.format)
    with pytest.raises(ValueError, match="unknown format"):
        Compressed(c.values, c.meta, c.shape, c.dtype, "coo")
    with pytest.raises(TypeError, match="pysparse24.Compressed"):
        pysparse24.decompress((c.values, c.meta))


def test_corrupt_metadata_is_detected(rng, isa):
    c = pysparse24.compress(random_weight(rng, (4, 64), "float16"), prune=True)
    meta = c.meta.copy()
    meta[2, 3] = (meta[2, 3] & 0xF0) | 0x5  # idx0 == idx1 == 1
    with pytest.raises(ValueError, match=r"corrupt metadata: group 38"):
        pysparse24.decompress(Compressed(c.values, meta, c.shape, c.dtype, c.format))


@pytest.mark.parametrize("where", [0, 5, 77, 250])
def test_matmul_rejects_metadata_decompress_rejects(rng, where):
    """matmul reads the codes without decoding checks; it must refuse what decompress refuses
    (all-0xFF nibbles, idx0 == idx1, idx0 > idx1) instead of computing with it. `where` covers the
    vectorized words and the tail bytes of the scan."""
    dtype = "float32"
    w = pysparse24.prune(random_weight(rng, (4, 504), dtype))
    c = pysparse24.compress(w)
    x = random_weight(rng, (504, 3), dtype)
    np.testing.assert_allclose(pysparse24.matmul(c, x), w.astype(np.float64) @ x, rtol=1e-5, atol=1e-4)
    for code in (0xF, 0x5, 0x1):  # (3, 3), (1, 1), idx0 = 1 > idx1 = 0
        meta = c.meta.copy()
        row, nibble = divmod(where, meta.shape[1] * 2)
        meta[row, nibble // 2] = (meta[row, nibble // 2] & (0xF0 if nibble % 2 == 0 else 0x0F)) | (
            code << (4 * (nibble % 2))
        )
        bad = Compressed(c.values, meta, c.shape, c.dtype, c.format)
        for run in (
            lambda: pysparse24.decompress(bad),
            lambda: pysparse24.matmul(bad, x),
            lambda: pysparse24.linear(np.ascontiguousarray(x.T), bad),
        ):
            with pytest.raises(ValueError, match=f"corrupt metadata: group {where} "):
                run()
    meta = np.full_like(c.meta, 0xFF)
    with pytest.raises(ValueError, match="corrupt metadata: group 0 "):
        pysparse24.matmul(Compressed(c.values, meta, c.shape, c.dtype, c.format), x)


# ---- byte order and alignment: the kernels read raw bits, so _arrays.to_raw makes them native -----


def _big_endian(a):
    return a.astype(a.dtype.newbyteorder(">"))


def _misaligned(a):
    """An equal array whose data starts one byte into a buffer (flags.aligned is False)."""
    view = np.frombuffer(bytearray(a.nbytes + 1), dtype=a.dtype, offset=1, count=a.size).reshape(a.shape)
    view[...] = a
    assert not view.flags.aligned or a.itemsize == 1
    return view


@pytest.mark.parametrize("odd", [_big_endian, _misaligned])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_big_endian_and_misaligned_inputs_give_native_results(rng, odd, dtype):
    w = random_weight(rng, (8, 64), dtype, zero_fraction=0.1)
    ow = odd(w)
    np.testing.assert_array_equal(ow, w)  # same values, other layout
    np.testing.assert_array_equal(pysparse24.mask(ow), pysparse24.mask(w))
    np.testing.assert_array_equal(pysparse24.mask_2d(ow), pysparse24.mask_2d(w))
    np.testing.assert_array_equal(pysparse24.prune(ow), pysparse24.prune(w))
    assert pysparse24.is_sparse(odd(pysparse24.prune(w)))
    assert pysparse24.is_sparse(ow) == pysparse24.is_sparse(w)
    c = pysparse24.compress(ow, prune=True)
    np.testing.assert_array_equal(pysparse24.decompress(c), pysparse24.prune(w))
    for fmt in ("packed", "cutlass"):
        c = pysparse24.compress(random_weight(rng, (32, 64), dtype), format=fmt, prune=True)
        plain = pysparse24.decompress(c)
        odd_c = Compressed(odd(c.values), odd(c.meta), c.shape, c.dtype, c.format)
        np.testing.assert_array_equal(pysparse24.decompress(odd_c), plain)


def test_big_endian_nan_is_not_invented():
    """'>f4' bits read as little-endian ones are other numbers (1.0..32.0 become denormals): the
    magnitudes, and so the kept elements, were wrong, and some values read as NaN."""
    w = np.arange(1, 33, dtype=">f4").reshape(2, 16)
    expected = np.where(np.arange(16) % 4 >= 2, np.arange(1, 33, dtype=np.float32).reshape(2, 16), 0)
    np.testing.assert_array_equal(pysparse24.prune(w), expected)
    nan_bits = np.full((1, 4), np.nan, dtype=">f4")
    with pytest.raises(ValueError, match="NaN or Inf"):
        pysparse24.mask(nan_bits)


@pytest.mark.parametrize("odd", [_big_endian, _misaligned])
def test_matmul_with_big_endian_or_misaligned_operands(rng, odd):
    w = pysparse24.prune(random_weight(rng, (16, 64), "float32"))
    c = pysparse24.compress(w)
    x = random_weight(rng, (64, 5), "float32")
    bias = random_weight(rng, (16,), "float32")
    expected = w.astype(np.float64) @ x
    odd_c = Compressed(odd(c.values), odd(c.meta), c.shape, c.dtype, c.format)
    np.testing.assert_allclose(pysparse24.matmul(odd_c, odd(x)), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(
        pysparse24.linear(odd(np.ascontiguousarray(x.T)), c, odd(bias)), expected.T + bias, rtol=1e-5, atol=1e-4
    )
    wi = pysparse24.prune(random_weight(rng, (16, 64), "int8"))
    xi = random_weight(rng, (64, 3), "int8")
    bias_i = rng.integers(-1000, 1000, 16).astype(np.int32)
    np.testing.assert_array_equal(
        pysparse24.linear(odd(np.ascontiguousarray(xi.T)), pysparse24.compress(wi), odd(bias_i)),
        (wi.astype(np.int64) @ xi).T + bias_i,
    )


def test_matmul_refuses_an_out_it_cannot_write_in_place(rng):
    """Writing into a byte-swapped copy would lose the result: refuse instead."""
    c = pysparse24.compress(pysparse24.prune(random_weight(rng, (8, 32), "float32")))
    x = random_weight(rng, (32, 2), "float32")
    for out in (np.empty((8, 2), ">f4"), _misaligned(np.zeros((8, 2), np.float32))):
        with pytest.raises(ValueError, match="native byte order and aligned"):
            pysparse24.matmul(c, x, out=out)


# ---- fuzz: random shapes, dtypes, strides through the bindings ---------------------------------


@st.composite
def weights(draw):
    dtype = draw(st.sampled_from(DTYPES))
    rows = draw(st.integers(1, 12))
    cols = 8 * draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    zero_fraction = draw(st.sampled_from([0.0, 0.3, 0.8]))
    w = random_weight(np.random.default_rng(seed), (rows * 2, cols * 2), dtype, zero_fraction)
    row_step, col_step = draw(st.sampled_from([1, -1, 2])), draw(st.sampled_from([1, -1, 2]))
    return w[::row_step, ::col_step][:rows, :cols]


@settings(max_examples=150, deadline=None)
@given(w=weights(), isa=st.sampled_from(["scalar", "avx2", "avx512"]), fmt=st.sampled_from(["packed", "cutlass"]))
def test_fuzz_round_trip(w, isa, fmt):
    try:
        pysparse24._C.set_isa(isa)
    except ValueError:
        return  # this CPU lacks the path
    try:
        np.testing.assert_array_equal(pysparse24.mask(w), reference_mask(np.ascontiguousarray(w), 2, 4))
        pruned = pysparse24.prune(w)
        try:
            c = pysparse24.compress(w, format=fmt, prune=True)
        except ValueError as exc:  # only the format's shape rules may refuse
            assert "divisible" in str(exc)
            return
        expected = pysparse24.prune(w, 1, 2) if c.pattern == "1:2" else pruned
        np.testing.assert_array_equal(pysparse24.decompress(c).view(np.uint8), expected.view(np.uint8))
    finally:
        pysparse24._C.set_isa("auto")


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(-2, 70),
    cols=st.integers(-2, 70),
    kind=st.integers(-1, 7),
    fmt=st.sampled_from(["packed", "cutlass", "bogus"]),
    prune=st.booleans(),
)
def test_fuzz_raw_bindings_never_crash(rows, cols, kind, fmt, prune):
    """The bindings themselves (below the Python checks) reject bad shapes and kinds with ValueError."""
    itemsize = {0: 4, 1: 2, 2: 2}.get(kind, 1)
    x = np.ones((max(rows, 0), max(cols, 0)), dtype={4: np.uint32, 2: np.uint16, 1: np.uint8}[itemsize])
    try:
        values, meta, _, _ = pysparse24._C.compress(x, kind, fmt, prune)
    except ValueError:
        return
    pysparse24._C.decompress(values, meta, kind, fmt, x.shape[0], x.shape[1])
