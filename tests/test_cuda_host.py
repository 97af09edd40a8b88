"""CUDA build checks that run without a GPU.

- The GPU kernels' own per-chunk code, run on the host (`on_host=True`), against independent
  references: PyTorch's CUTLASS conversion (bit for bit) and a numpy n:m selection.
- The "no CUDA device" / "cuSPARSELt not available" errors a GPU-less machine must give.
- cuSPARSELt's constraints, checked before any library call.
"""
import subprocess
import sys

import numpy as np
import pytest

from pysparse24 import _C
import pysparse24.cuda as pcuda

pytestmark = pytest.mark.skipif(not getattr(_C, "has_cuda_build", False),
                                reason="pysparse24 was built without CUDA (no nvcc or PYSPARSE24_CUDA=OFF)")

torch = pytest.importorskip("torch")
conv = pytest.importorskip("torch.sparse._semi_structured_conversions")

NUMPY = {"float32": np.float32, "float16": np.float16, "int8": np.int8}


def native():
    return _C.cuda


def random_matrix(rng, shape, dtype):
    x = rng.standard_normal(shape) * 40
    if dtype == "int8":
        return np.clip(np.round(x), -128, 127).astype(np.int8)
    return x.astype(NUMPY[dtype])


def reference_keep(x, n, m):
    """n largest |x| of each group of m along rows; ties keep the lower index (stable sort)."""
    groups = np.abs(x.astype(np.float64)).reshape(x.shape[0], -1, m)
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    return keep.reshape(x.shape)


def host_mask(x, n, m, row_stride=None):
    rows, cols = x.shape[0], x.shape[1] if row_stride is None else row_stride
    keep = np.full((x.shape[0], x.shape[1]), 7, np.uint8)  # poison: every byte must be written
    native().mask(x.ctypes.data, keep.ctypes.data, x.shape[0], x.shape[1], x.strides[0] // x.itemsize,
                  x.dtype.name, n, m, on_host=True)
    return keep


def host_compress(x, fmt, prune):
    rows, cols = x.shape
    meta_rows, meta_cols, word = native().meta_layout(rows, cols, x.dtype.name, fmt)
    values = np.full((rows, cols // 2), 0x55, np.uint8).view(x.dtype) if x.itemsize == 1 else \
        np.full((rows, cols // 2), np.nan if x.dtype.kind == "f" else 99, x.dtype)
    meta = np.full((meta_rows, meta_cols), 0x5A, {1: np.uint8, 2: np.int16, 4: np.int32}[word])
    native().compress(x.ctypes.data, values.ctypes.data, meta.ctypes.data, rows, cols, x.strides[0] // x.itemsize,
                      x.dtype.name, fmt, prune, on_host=True)
    return values, meta


def host_decompress(values, meta, rows, cols, fmt):
    dense = np.full((rows, cols), 99, values.dtype)
    native().decompress(values.ctypes.data, meta.ctypes.data, dense.ctypes.data, rows, cols, values.dtype.name,
                        fmt, on_host=True)
    return dense


def prune_for_cutlass(x):
    """2:4 (1:2 for float32) by magnitude, ties to the lower index: what compress(prune=True) keeps."""
    width = 2 if x.dtype == np.float32 else 4
    return np.where(reference_keep(x, width // 2, width), x, 0).astype(x.dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (2, 8), (3, 6), (1, 2)])
def test_mask_matches_numpy_selection(dtype, n, m):
    rng = np.random.default_rng(n * 100 + m)
    x = random_matrix(rng, (24, 48), dtype)
    x[0, :m] = x[0, 0]  # a tied group: the lower indices must win
    assert (host_mask(x, n, m) == reference_keep(x, n, m)).all()


def test_mask_strided_rows_use_the_scalar_path():
    rng = np.random.default_rng(1)
    big = random_matrix(rng, (16, 40), "float16")
    view = big[:, 4:36]  # row stride 40, unaligned start: no 16-byte path
    assert (host_mask(view, 2, 4) == reference_keep(np.ascontiguousarray(view), 2, 4)).all()


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_cutlass_compress_is_bit_identical_to_pytorch(dtype):
    rng = np.random.default_rng(2)
    rows, cols = 64, 256
    pruned = prune_for_cutlass(random_matrix(rng, (rows, cols), dtype))
    pruned[3, :8] = 0  # groups with fewer than two non-zeros: PyTorch's choice of zero positions
    expected_values, expected_meta = conv.sparse_semi_structured_from_dense_cutlass(torch.from_numpy(pruned))
    values, meta = host_compress(pruned, "cutlass", prune=False)
    assert values.tobytes() == expected_values.numpy().tobytes()
    assert meta.tobytes() == expected_meta.numpy().tobytes()
    assert (host_decompress(values, meta, rows, cols, "cutlass") == pruned).all()


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_cutlass_prune_equals_prune_then_compress(dtype):
    rng = np.random.default_rng(3)
    x = random_matrix(rng, (32, 128), dtype)
    assert all(a.tobytes() == b.tobytes() for a, b in
               zip(host_compress(x, "cutlass", True), host_compress(prune_for_cutlass(x), "cutlass", False)))


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("cols", [64, 72])  # 72: a partial last chunk for 16/8-bit types
def test_packed_layout_and_roundtrip(dtype, cols):
    rng = np.random.default_rng(4)
    x = random_matrix(rng, (8, cols), dtype)
    values, meta = host_compress(x, "packed", prune=True)
    keep = reference_keep(x, 2, 4)
    assert (values == x[keep].reshape(8, cols // 2)).all()  # kept values in ascending column order
    idx = np.nonzero(keep.reshape(8, -1, 4))[2].reshape(8, -1, 2)
    codes = (idx[..., 0] | idx[..., 1] << 2).astype(np.uint8)
    assert (meta == (codes[:, 0::2] | codes[:, 1::2] << 4)).all()
    assert (host_decompress(values, meta, 8, cols, "packed") == np.where(keep, x, 0)).all()


def test_too_many_nonzeros_names_the_first_bad_group():
    x = np.zeros((4, 16), np.float16)
    x[2, 8:11] = 1
    x[3, 0:4] = 1
    with pytest.raises(ValueError, match=r"row 2, columns 8\.\.11: more than 2 non-zeros"):
        host_compress(x, "packed", prune=False)
    x32 = np.zeros((32, 16), np.float32)
    x32[5, 6:8] = 1
    with pytest.raises(ValueError, match=r"row 5, columns 6\.\.7: more than 1 non-zeros in a group of 2"):
        host_compress(x32, "cutlass", prune=False)


def test_nan_is_rejected():
    x = np.ones((2, 8), np.float16)
    x[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"row 1, columns 4\.\.7: NaN"):
        host_mask(x, 2, 4)


def test_corrupt_metadata_is_rejected():
    values = np.ones((2, 4), np.float16)
    meta = np.array([[0x44], [0x4F]], np.uint8)  # 0xF names position 3 twice
    with pytest.raises(ValueError, match=r"row 1, columns 0\.\.3: corrupt packed metadata"):
        host_decompress(values, meta, 2, 8, "packed")


def test_shape_errors():
    x = np.ones((30, 64), np.float16)
    with pytest.raises(ValueError, match="rows % 32"):
        host_compress(x, "cutlass", prune=True)
    with pytest.raises(ValueError, match="multiple of 8"):
        host_compress(np.ones((4, 12), np.float16), "packed", prune=True)
    with pytest.raises(ValueError, match="not a multiple of m"):
        host_mask(np.ones((4, 10), np.float16), 2, 4)
    with pytest.raises(ValueError, match="unsupported dtype"):
        native().mask(0, 0, 1, 4, 4, "float64", 2, 4, on_host=True)


# ---- what a machine without a GPU must say -------------------------------------------------------
needs_no_gpu = pytest.mark.skipif(pcuda.is_available(), reason="a CUDA device is present")


@needs_no_gpu
def test_gpu_entry_points_say_there_is_no_device():
    from pysparse24.cuda import ops

    assert pcuda.unavailable_reason().startswith("no CUDA device")
    with pytest.raises(pcuda.UnavailableError, match="no CUDA device"):
        ops.mask(torch.ones(4, 4), 2, 4)
    with pytest.raises(pcuda.UnavailableError, match="no CUDA device"):
        native().compress(0, 0, 0, 32, 64, 64, "float16", "packed", True)  # device run, no device


def test_cusparselt_loads_from_the_wheel_or_says_why():
    from pysparse24.cuda import cusparselt

    try:
        path = cusparselt.load()
    except pcuda.UnavailableError as e:
        assert "cuSPARSELt not available" in str(e)
        pytest.skip(f"no cuSPARSELt here: {e}")
    assert "libcusparseLt" in path
    assert cusparselt.version() >= (0, 6, 0)


def test_cusparselt_missing_library_message():
    # A fresh interpreter, so that no library is loaded yet.
    code = ("import pysparse24._C as C, sys\n"
            "try:\n    C.cuda.load_cusparselt(['/nonexistent/libcusparseLt.so.0'])\n"
            "except C.cuda.UnavailableError as e:\n    print(e); sys.exit(0)\n"
            "sys.exit(1)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "cuSPARSELt not available" in out.stdout and "/nonexistent/libcusparseLt.so.0" in out.stdout


@needs_no_gpu
def test_cusparselt_objects_need_a_device():
    from pysparse24.cuda import cusparselt

    try:
        cusparselt.load()
    except pcuda.UnavailableError:
        pytest.skip("no cuSPARSELt here")
    with pytest.raises(pcuda.UnavailableError, match="no CUDA device"):
        native().GemmPlan(native().GemmSpec(64, 64, 64, "float16", "float16"))
    with pytest.raises(pcuda.UnavailableError, match="no CUDA device"):
        cusparselt.SparseMatrix(torch.ones(64, 64))


# ---- cuSPARSELt constraints, checked before the library is called --------------------------------
def spec(*args, **kwargs):
    return native().GemmSpec(*args, **kwargs)


def test_gemm_spec_accepts_supported_problems():
    for s in [spec(64, 64, 64, "float16", "float16"), spec(32, 16, 32, "float32", "float32"),
              spec(64, 32, 64, "int8", "int32"), spec(64, 64, 64, "float8_e4m3fn", "bfloat16"),
              spec(128, 8, 64, "bfloat16", "bfloat16", transpose_b=True, has_bias=True)]:
        s.validate()
    assert spec(64, 8, 32, "float16", "float16", transpose_b=True).key == "64x8x32:float16->float16:NT:row"


@pytest.mark.parametrize("args,message", [
    ((48, 64, 64, "int8", "int8"), r"structured \(sparse\) A to be a positive multiple of 32 for int8; m \(rows of A\) = 48"),
    ((64, 64, 40, "float16", "float16"), r"multiple of 16 for float16; k \(columns of A\) = 40"),
    ((64, 12, 64, "float16", "float16"), r"dense B to be a positive multiple of 8 for float16; columns of B = 12"),
    ((64, 64, 64, "float16", "float32"), r"does not multiply float16 into float32"),
    ((64, 64, 64, "float64", "float64"), r"no dtype 'float64'"),
])
def test_gemm_spec_names_the_broken_constraint(args, message):
    with pytest.raises(ValueError, match=message):
        spec(*args).validate()


def test_architecture_and_alignment_checks():
    spec(64, 64, 64, "float16", "float16").validate_arch(8, 0)
    with pytest.raises(ValueError, match=r"compute capability 8.0 or newer\); this GPU is 7.5"):
        spec(64, 64, 64, "float16", "float16").validate_arch(7, 5)
    with pytest.raises(ValueError, match=r"float8_e4m3fn sparse GEMM needs compute capability 8.9"):
        spec(64, 64, 64, "float8_e4m3fn", "float16").validate_arch(8, 6)
    spec(64, 64, 64, "float8_e4m3fn", "float16").validate_arch(9, 0)
    native().validate_alignment(0x1000, "B")
    with pytest.raises(ValueError, match="16-byte aligned pointers; B is at 0x1008"):
        native().validate_alignment(0x1008, "B")
