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

import pysparse24.cuda as pcuda
from pysparse24 import _C

pytestmark = pytest.mark.skipif(
    not getattr(_C, "has_cuda_build", False),
    reason="pysparse24 was built without CUDA (no nvcc or PYSPARSE24_CUDA=OFF)",
)

torch = pytest.importorskip("torch")
conv = pytest.importorskip("torch.sparse._semi_structured_conversions")

from reference import DTYPES, random_weight, reference_mask  # noqa: E402  (tests/reference.py)

KIND = {name: i for i, name in enumerate(DTYPES)}  # ids of ps24::Kind
BITS = {4: np.uint32, 2: np.uint16, 1: np.uint8}


def native():
    return _C.cuda


def bits_of(x):
    return np.ascontiguousarray(x).view(BITS[x.itemsize])


def awkward_weight(rng, shape, dtype):
    """Random values plus what stresses selection: ties, zeros, -0.0 (for float types)."""
    w = random_weight(rng, shape, dtype, zero_fraction=0.2)
    w[0, :8] = w[0, 0]  # tied magnitudes: the lower index must win
    if dtype != "int8":
        w[1, 1::3] = -0.0
    return w


# The GPU kernels' bodies on the host (on_host=True) -----------------------------------------------
def host_mask(x, n, m):
    keep = np.full(x.shape, 7, np.uint8)  # poison: every byte must be written
    errors = native().mask(
        x.ctypes.data,
        keep.ctypes.data,
        x.shape[0],
        x.shape[1],
        x.strides[0] // x.itemsize,
        x.dtype.name,
        n,
        m,
        on_host=True,
    )
    return keep.astype(bool), errors


def host_compress(x, fmt, prune):
    rows, cols = x.shape
    meta_rows, meta_cols, word = native().meta_layout(rows, cols, x.dtype.name, fmt)
    values = np.full((rows, cols // 2), 0xA5, np.uint8 if x.itemsize == 1 else BITS[x.itemsize]).view(x.dtype)
    meta = np.full((meta_rows, meta_cols), 0x5A, {1: np.uint8, 2: np.int16, 4: np.int32}[word])
    errors = native().compress(
        x.ctypes.data,
        values.ctypes.data,
        meta.ctypes.data,
        rows,
        cols,
        x.strides[0] // x.itemsize,
        x.dtype.name,
        fmt,
        prune,
        on_host=True,
    )
    return values, meta, errors


def host_decompress(values, meta, rows, cols, fmt):
    dense = np.full((rows, cols), 0xA5, BITS[values.itemsize]).view(values.dtype)
    errors = native().decompress(
        values.ctypes.data, meta.ctypes.data, dense.ctypes.data, rows, cols, values.dtype.name, fmt, on_host=True
    )
    return dense, errors


# Against the CPU path (the lead's kernels): bit for bit, errors at the same index ------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (2, 8), (3, 6), (1, 2), (5, 16)])
def test_mask_matches_cpu(rng, dtype, n, m):
    x = awkward_weight(rng, (24, 96), dtype)
    keep, errors = host_mask(x, n, m)
    cpu_keep, cpu_nonfinite = _C.mask_nm(bits_of(x), KIND[dtype], n, m)
    assert np.array_equal(keep, cpu_keep) and errors == (-1, -1, -1) and cpu_nonfinite == -1


def test_mask_strided_rows_use_the_scalar_path(rng):
    big = random_weight(rng, (16, 40), "float16")
    view = big[:, 4:36]  # row stride 40, start 8 bytes in: no 16-byte path
    keep, _ = host_mask(view, 2, 4)
    assert np.array_equal(keep, _C.mask_nm(bits_of(view), KIND["float16"], 2, 4)[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", ["packed", "cutlass"])
def test_compress_and_decompress_match_cpu(rng, dtype, fmt):
    rows, cols = 64, 256
    x = awkward_weight(rng, (rows, cols), dtype)
    for prune in (True, False):
        source = x if prune else host_decompress(*host_compress(x, fmt, True)[:2], rows, cols, fmt)[0]
        source[3, :8] = 0  # groups with fewer non-zeros than kept slots (PyTorch's zero choice in cutlass)
        values, meta, errors = host_compress(source, fmt, prune)
        cpu_values, cpu_meta, cpu_nonfinite, cpu_overfull = _C.compress(bits_of(source), KIND[dtype], fmt, prune)
        assert values.tobytes() == np.asarray(cpu_values).tobytes(), (fmt, prune)
        assert meta.tobytes() == np.asarray(cpu_meta).tobytes(), (fmt, prune)
        assert errors == (-1, -1, -1) and (cpu_nonfinite, cpu_overfull) == (-1, -1)
        dense, errors = host_decompress(values, meta, rows, cols, fmt)
        cpu_dense, cpu_bad = _C.decompress(np.asarray(cpu_values), np.asarray(cpu_meta), KIND[dtype], fmt, rows, cols)
        assert dense.tobytes() == np.asarray(cpu_dense).tobytes() and errors == (-1, -1, -1) and cpu_bad == -1


# Raw bit patterns with ties, zeros of both signs and extreme magnitudes, per dtype.
TIE_BITS = {
    "float16": [0x0000, 0x8000, 0x0001, 0x3C00, 0xBC00, 0x4000, 0xFBFF],
    "bfloat16": [0x0000, 0x8000, 0x0001, 0x3F80, 0xBF80, 0x4000, 0xFF7F],
    "int8": [0x00, 0x01, 0xFF, 0x02, 0xFE, 0x80, 0x7F],  # 0, 1, -1, 2, -2, -128, 127
    "float8_e4m3fn": [0x00, 0x80, 0x01, 0x38, 0xB8, 0x40, 0xFE],
    "float8_e5m2": [0x00, 0x80, 0x01, 0x3C, 0xBC, 0x40, 0xFB],
}


@pytest.mark.parametrize("dtype", list(TIE_BITS))
@pytest.mark.parametrize("fmt", ["packed", "cutlass"])
def test_every_group_of_tied_values_selects_like_the_cpu_path(dtype, fmt):
    """All 7^4 groups of four drawn from TIE_BITS: the word-wise, branch-free selection of the GPU
    kernels (on the host) against the CPU path, bit for bit, pruned and (after pruning) unpruned."""
    import itertools

    from reference import numpy_dtype

    bits = np.array(list(itertools.product(TIE_BITS[dtype], repeat=4)), dtype=np.uint16 if "16" in dtype else np.uint8)
    cols = 64
    rows = -(-bits.size // cols // 32) * 32  # whole cutlass row blocks, zero groups after the last
    padded = np.zeros(rows * cols, bits.dtype)
    padded[: bits.size] = bits.ravel()
    x = padded.reshape(rows, cols).view(numpy_dtype(dtype))
    for prune in (True, False):
        source = x if prune else host_decompress(*host_compress(x, fmt, True)[:2], rows, cols, fmt)[0]
        values, meta, errors = host_compress(source, fmt, prune)
        cpu_values, cpu_meta, cpu_nonfinite, cpu_overfull = _C.compress(bits_of(source), KIND[dtype], fmt, prune)
        assert values.tobytes() == np.asarray(cpu_values).tobytes(), prune
        assert meta.tobytes() == np.asarray(cpu_meta).tobytes(), prune
        assert errors == (-1, -1, -1) and (cpu_nonfinite, cpu_overfull) == (-1, -1)


@pytest.mark.parametrize("dtype", ["float16", "int8", "float8_e4m3fn"])
@pytest.mark.parametrize("fmt", ["packed", "cutlass"])
def test_first_error_of_a_chunk_is_found_where_the_cpu_path_finds_it(rng, dtype, fmt):
    """Non-finite elements and over-full groups at every position of a chunk (the word-wise kernels
    find the first of each with bit tricks over eight words)."""
    from reference import numpy_dtype

    rows, cols = 32, 128
    per_chunk = 32 // numpy_dtype(dtype).itemsize
    for position in range(0, per_chunk, 3):
        x = random_weight(rng, (rows, cols), dtype)
        pruned = host_decompress(*host_compress(x, fmt, True)[:2], rows, cols, fmt)[0]
        if dtype != "int8":
            pruned[5, per_chunk + position] = np.inf if dtype == "float16" else np.nan
            pruned[9, position] = np.nan
        group = (per_chunk + position) // 4 * 4
        pruned[2, group : group + 3] = 3 if dtype == "int8" else 1  # three non-zeros, before every NaN row
        _, _, errors = host_compress(pruned, fmt, prune=False)
        _, _, nonfinite, overfull = _C.compress(bits_of(pruned), KIND[dtype], fmt, False)
        assert errors[:2] == (nonfinite, overfull)
        assert overfull == 2 * cols // 4 + group // 4
        assert nonfinite == (-1 if dtype == "int8" else 5 * cols + per_chunk + position)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", ["packed", "cutlass"])
def test_strided_input_takes_the_scalar_path_with_the_same_result(rng, dtype, fmt):
    rows, cols = 32, 128
    padded = random_weight(rng, (rows, cols + 3), dtype)
    view = padded[:, 3:]  # rows 3 elements apart from 16-byte alignment: no vector accesses
    values, meta, errors = host_compress(view, fmt, prune=True)
    cpu_values, cpu_meta, _, _ = _C.compress(bits_of(view), KIND[dtype], fmt, True)
    assert values.tobytes() == np.asarray(cpu_values).tobytes() and meta.tobytes() == np.asarray(cpu_meta).tobytes()
    assert errors == (-1, -1, -1)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_cutlass_is_bit_identical_to_pytorch(rng, dtype):
    pruned = host_decompress(
        *host_compress(random_weight(rng, (64, 256), dtype), "cutlass", True)[:2], 64, 256, "cutlass"
    )[0]
    expected_values, expected_meta = conv.sparse_semi_structured_from_dense_cutlass(torch.from_numpy(pruned))
    values, meta, _ = host_compress(pruned, "cutlass", prune=False)
    assert values.tobytes() == expected_values.numpy().tobytes()
    assert meta.tobytes() == expected_meta.numpy().tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("cols", [64, 72])  # 72: a partial last chunk for 16/8-bit types
def test_packed_layout_from_its_definition(rng, dtype, cols):
    x = random_weight(rng, (8, cols), dtype)
    values, meta, _ = host_compress(x, "packed", prune=True)
    keep = reference_mask(x, 2, 4)
    assert np.array_equal(values, x[keep].reshape(8, cols // 2))  # ascending column order
    idx = np.nonzero(keep.reshape(8, -1, 4))[2].reshape(8, -1, 2)
    codes = (idx[..., 0] | idx[..., 1] << 2).astype(np.uint8)
    assert np.array_equal(meta, codes[:, 0::2] | codes[:, 1::2] << 4)


def test_errors_are_found_at_the_cpu_path_index():
    x = np.zeros((32, 64), np.float16)
    x[2, 8:11] = 1
    x[3, 0:4] = 1
    x[5, 13] = np.inf
    x[7, 2] = np.nan
    _, _, errors = host_compress(x, "packed", prune=False)
    _, _, nonfinite, overfull = _C.compress(bits_of(x), KIND["float16"], "packed", False)
    assert errors[:2] == (nonfinite, overfull) == (5 * 64 + 13, 2 * 16 + 2)
    assert host_mask(x, 2, 4)[1][0] == _C.mask_nm(bits_of(x), KIND["float16"], 2, 4)[1] == 5 * 64 + 13
    x32 = np.zeros((32, 16), np.float32)
    x32[5, 6:8] = 1
    assert (
        host_compress(x32, "cutlass", prune=False)[2][1]
        == _C.compress(bits_of(x32), 0, "cutlass", False)[3]
        == 5 * 8 + 3
    )
    values = np.ones((2, 4), np.float16)
    meta = np.array([[0x44], [0x4F]], np.uint8)  # 0xF names position 3 twice
    assert (
        host_decompress(values, meta, 2, 8, "packed")[1][2]
        == _C.decompress(values.view(np.uint16), meta, 1, "packed", 2, 8)[1]
        == 2
    )


def test_shape_errors():
    with pytest.raises(ValueError, match="rows % 32"):
        host_compress(np.ones((30, 64), np.float16), "cutlass", prune=True)
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

    assert cusparselt.minimum_version() == (0, 8, 0)
    try:
        path = cusparselt.load()
    except pcuda.UnavailableError as e:
        assert "cuSPARSELt not available" in str(e)
        pytest.skip(f"no cuSPARSELt here: {e}")
    assert "libcusparseLt" in path
    assert cusparselt.version() >= cusparselt.minimum_version()


def test_build_info_says_what_was_built_and_why_not():
    info = pcuda.build_info()
    assert info["cuda_kernels"] is True
    assert info["cusparselt_wrapper"] == native().has_cusparselt_build
    assert (info["reason"] == "") == info["cusparselt_wrapper"]
    assert info["archs"] and all(a.isdigit() for a in info["archs"].split(","))
    assert info["cusparselt_minimum"] == "0.8.0"
    if info["cusparselt_wrapper"]:
        header = tuple(int(v) for v in info["cusparselt_header"].split("."))
        assert header >= (0, 8, 0) and info["cusparselt_include"]
    else:
        assert info["reason"].startswith("the cuSPARSELt wrapper was not built: ")


# ---- the cuSPARSELt header search (csrc/cuda/find_cusparselt.cmake) on fake wheel layouts ---------
def fake_header(folder, version, needs_cusparse):
    folder.mkdir(parents=True)
    major, minor, patch = version
    include = '#include "cusparse.h"' if needs_cusparse else '#include "cusparseLt_cusparse_stub.h"'
    (folder / "cusparseLt.h").write_text(
        f"{include}\n#define CUSPARSELT_VER_MAJOR {major}\n"
        f"#define CUSPARSELT_VER_MINOR {minor}\n#define CUSPARSELT_VER_PATCH {patch}\n"
    )


def find_cusparselt(root):
    import shutil
    from pathlib import Path

    if not shutil.which("cmake"):
        pytest.skip("no cmake")
    script = Path(__file__).resolve().parents[1] / "csrc" / "cuda" / "find_cusparselt.cmake"
    out = subprocess.run(
        ["cmake", f"-DPYSPARSE24_CUSPARSELT_ROOT={root}", "-DCUDAToolkit_INCLUDE_DIRS=/nonexistent", "-P", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(line.split("=", 1) for line in out.stderr.splitlines() if "=" in line)


def test_header_search_finds_the_0_8_layout_with_cusparse_beside_it(tmp_path):
    fake_header(tmp_path / "nvidia" / "cusparselt" / "include", (0, 8, 0), needs_cusparse=True)
    (tmp_path / "nvidia" / "cu13" / "include").mkdir(parents=True)
    (tmp_path / "nvidia" / "cu13" / "include" / "cusparse.h").write_text("")
    found = find_cusparselt(tmp_path)
    assert found["why"] == "" and found["version"] == "0.8.0"
    assert found["includes"].split(";") == [str(tmp_path / "nvidia" / d / "include") for d in ("cusparselt", "cu13")]


def test_header_search_says_why_without_cusparse(tmp_path):
    fake_header(tmp_path / "nvidia" / "cusparselt" / "include", (0, 8, 1), needs_cusparse=True)
    found = find_cusparselt(tmp_path)
    assert "(cuSPARSELt 0.8.1) includes cusparse.h, found neither beside it" in found["why"]
    assert "pip install nvidia-cusparse" in found["why"]


def test_header_search_finds_the_0_10_layout_alone(tmp_path):
    fake_header(tmp_path / "nvidia" / "cu13" / "include", (0, 10, 0), needs_cusparse=False)
    found = find_cusparselt(tmp_path)
    assert found["why"] == "" and found["version"] == "0.10.0"
    assert found["includes"] == str(tmp_path / "nvidia" / "cu13" / "include")


def test_header_search_refuses_a_header_older_than_the_minimum(tmp_path):
    fake_header(tmp_path / "nvidia" / "cu13" / "include", (0, 6, 3), needs_cusparse=False)
    assert "is cuSPARSELt 0.6.3; pysparse24 needs 0.8.0 or newer" in find_cusparselt(tmp_path)["why"]
    assert "no cusparseLt.h found" in find_cusparselt(tmp_path / "elsewhere")["why"]


def test_cusparselt_missing_library_message():
    # A fresh interpreter, so that no library is loaded yet.
    code = (
        "import pysparse24._C as C, sys\n"
        "try:\n    C.cuda.load_cusparselt(['/nonexistent/libcusparseLt.so.0'])\n"
        "except C.cuda.UnavailableError as e:\n    print(e); sys.exit(0)\n"
        "sys.exit(1)\n"
    )
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
    for s in [
        spec(64, 64, 64, "float16", "float16"),
        spec(32, 16, 32, "float32", "float32"),
        spec(64, 32, 64, "int8", "int32", transpose_b=True),
        spec(64, 64, 64, "float8_e4m3fn", "bfloat16", transpose_b=True),
        spec(128, 8, 64, "bfloat16", "bfloat16", transpose_b=True, has_bias=True),
    ]:
        s.validate()
    assert spec(64, 8, 32, "float16", "float16", transpose_b=True).key == "64x8x32:float16->float16:NT:row"


@pytest.mark.parametrize(
    "args,message",
    [
        (
            (48, 64, 64, "int8", "int8", False, True),
            r"structured \(sparse\) A to be a positive multiple of 32 for int8; m \(rows of A\) = 48",
        ),
        (
            (64, 64, 64, "int8", "int32"),
            r"int8 only with the reduction dimension k contiguous in both A and B: store B as \(n, k\) and pass transpose_b=True",
        ),
        ((64, 64, 64, "float8_e4m3fn", "float16"), r"float8_e4m3fn only with the reduction dimension k contiguous"),
        ((64, 64, 40, "float16", "float16"), r"multiple of 16 for float16; k \(columns of A\) = 40"),
        ((64, 12, 64, "float16", "float16"), r"dense B to be a positive multiple of 8 for float16; columns of B = 12"),
        ((64, 64, 64, "float16", "float32"), r"does not multiply float16 into float32"),
        ((64, 64, 64, "float64", "float64"), r"no dtype 'float64'"),
    ],
)
def test_gemm_spec_names_the_broken_constraint(args, message):
    with pytest.raises(ValueError, match=message):
        spec(*args).validate()


def test_support_table_by_dtype_compute_capability_and_version():
    spec(64, 64, 64, "float16", "float16").validate_support(8, 0)
    with pytest.raises(ValueError, match=r"compute capability 8.0 or newer\); this GPU is 7.5"):
        spec(64, 64, 64, "float16", "float16").validate_support(7, 5)
    fp8 = spec(64, 64, 64, "float8_e4m3fn", "float16", transpose_b=True)
    with pytest.raises(
        ValueError,
        match=r"has no float8_e4m3fn->float16 sparse GEMM on compute capability 8.6 "
        r"\(it needs compute capability 8.9 or newer",
    ):
        fp8.validate_support(8, 6)
    fp8.validate_support(9, 0)
    fp8.validate_support(8, 9, 800)
    with pytest.raises(ValueError, match=r"cuSPARSELt 0.7.1 has no float8_e4m3fn->float16 .* cuSPARSELt 0.8.0\+"):
        fp8.validate_support(8, 9, 701)
    tf32 = spec(32, 16, 32, "float32", "float32")
    tf32.validate_support(8, 6)
    with pytest.raises(
        ValueError,
        match=r"has no float32->float32 sparse GEMM on compute capability 9.0 .*"
        r"Supported here: float16->float16, bfloat16->bfloat16, int8->int8",
    ):
        tf32.validate_support(9, 0, 800)


def test_support_table_is_the_one_home_of_the_dtype_pairs():
    from pysparse24.cuda import cusparselt

    table = cusparselt.support_table()
    pairs = {(row["input"], row["output"]) for row in table}
    assert ("float32", "float32") in pairs and ("int8", "float16") in pairs and len(pairs) == len(table) == 10
    for row in table:  # every row validates; its own lower bound is the first GPU that runs it
        s = spec(64, 64, 64, row["input"], row["output"], transpose_b=True)
        s.validate()
        s.validate_support(*row["min_cc"])
        if row["below_cc"]:
            with pytest.raises(ValueError, match="has no"):
                s.validate_support(*row["below_cc"])
    for missing in [("float16", "float32"), ("bfloat16", "float16"), ("float8_e4m3fn", "float8_e4m3fn")]:
        with pytest.raises(ValueError, match="does not multiply"):
            spec(64, 64, 64, *missing, transpose_b=True).validate()


def test_bias_dtype_is_what_cusparselt_reads():
    assert spec(64, 64, 64, "int8", "float16", transpose_b=True).bias_dtype == "float32"
    assert spec(64, 64, 64, "int8", "int32", transpose_b=True).bias_dtype == "float32"
    assert spec(64, 64, 64, "int8", "int8", transpose_b=True).bias_dtype == "float32"
    assert spec(64, 64, 64, "float16", "float16").bias_dtype == "float16"
    assert spec(64, 64, 64, "float8_e4m3fn", "bfloat16", transpose_b=True).bias_dtype == "bfloat16"


def test_element_count_of_torch_and_numpy_like_arrays():
    """The empty-input check: a torch tensor's .size is a method, so `x.size == 0` never held."""
    from pysparse24.cuda import arrays

    assert arrays.element_count(torch.empty(0, 8)) == 0 and arrays.element_count(torch.empty(3, 8)) == 24
    assert arrays.element_count(np.empty((0, 8))) == 0


def test_alignment_checks():
    native().validate_alignment(0x1000, "B")
    with pytest.raises(ValueError, match="16-byte aligned pointers; B is at 0x1008"):
        native().validate_alignment(0x1008, "B")


def test_rows_along_a_dim_and_back():
    """The N-D mask path: the reduction dim moved last as rows of a matrix, then restored."""
    from pysparse24.cuda import arrays

    x = torch.arange(2 * 8 * 3 * 3).reshape(2, 8, 3, 3)  # conv weight (K, C, R, S), groups along C
    matrix, moved_shape = arrays.rows_along(x, 1)
    assert tuple(matrix.shape) == (18, 8) and torch.equal(matrix[1], x[0, :, 0, 1])
    wrapped = arrays.DeviceArray(matrix, "torch", 0, tuple(matrix.shape), 8, "int64", 0)
    back = arrays.restore_rows(wrapped, moved_shape, 1)
    assert back.is_contiguous() and torch.equal(back, x)
