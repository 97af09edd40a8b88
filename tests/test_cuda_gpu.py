"""GPU tests: every CUDA entry point on a real device, bit-exact against the CPU path and, for
cuSPARSELt, against float64 references. Skipped, with the reason, where there is no GPU."""

import numpy as np
import pytest

import pysparse24.cuda as pcuda

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not pcuda.is_available(), reason=pcuda.unavailable_reason() or "available"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device (CPU-only torch?)"),
]

from pysparse24.cuda import gemm_bench, ops  # noqa: E402

DTYPES = ["float32", "float16", "bfloat16", "int8", "float8_e4m3fn"]


def random_cuda(shape, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    if dtype == "int8":
        return torch.randint(-128, 128, shape, device="cuda", dtype=torch.int8, generator=g)
    return (torch.randn(shape, device="cuda", generator=g) * 4).to(getattr(torch, dtype))


def raw(a) -> bytes:
    """The raw bytes of a torch tensor or numpy array: bit-exact (and NaN-proof) comparisons."""
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
    return np.ascontiguousarray(a).tobytes()


def cpu_compress(x, fmt, prune):
    """The CPU path's (values, meta) for a CUDA tensor: the public API on the host copy."""
    import pysparse24

    c = pysparse24.compress(x.cpu(), format=fmt, prune=prune)
    return c.values, c.meta


def cpu_mask(x, n, m):
    import pysparse24

    return pysparse24.mask(x.cpu(), n=n, m=m)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
def test_mask_matches_cpu(dtype, n, m):
    x = random_cuda((96, 256), dtype, seed=n + m)
    got = ops.mask(x, n, m)
    assert got.is_cuda and got.dtype == torch.bool
    assert raw(got) == raw(torch.as_tensor(cpu_mask(x, n, m)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", ["packed", "cutlass"])
def test_compress_matches_cpu_and_roundtrips(dtype, fmt):
    x = random_cuda((128, 512), dtype, seed=3)
    values, meta = ops.compress(x, fmt, prune=True)
    expected_values, expected_meta = cpu_compress(x, fmt, prune=True)
    assert raw(values) == raw(expected_values)
    assert raw(meta) == raw(expected_meta)
    dense = ops.decompress(values, meta, x.shape, dtype, fmt)
    # Re-compressing the decompressed matrix without pruning gives the same bits back.
    again = ops.compress(dense, fmt, prune=False)
    assert raw(again[0]) == raw(values) and raw(again[1]) == raw(meta)


@pytest.mark.parametrize("fmt", ["packed", "cutlass"])
def test_every_output_element_is_written(fmt):
    """Outputs poisoned before the kernel (NaN / 0x7F) must be fully overwritten."""
    native = pcuda.native()
    x = random_cuda((64, 256), "float16", seed=5)
    rows, cols = x.shape
    meta_shape, meta_dtype = ops.meta_shape(rows, cols, "float16", fmt)
    for _ in range(2):  # the 16-byte path, then the scalar path on an unaligned copy
        values = torch.full((rows, cols // 2), float("nan"), dtype=torch.float16, device="cuda")
        meta = torch.full(meta_shape, 0x7F, dtype=getattr(torch, meta_dtype), device="cuda")
        native.compress(
            x.data_ptr(),
            values.data_ptr(),
            meta.data_ptr(),
            rows,
            cols,
            x.stride(0),
            "float16",
            fmt,
            True,
            stream=torch.cuda.current_stream().cuda_stream,
        )
        expected = ops.compress(x, fmt, prune=True)
        assert not torch.isnan(values).any()
        assert raw(values) == raw(expected[0])
        assert raw(meta) == raw(expected[1])
        dense = torch.full((rows, cols), float("nan"), dtype=torch.float16, device="cuda")
        native.decompress(
            values.data_ptr(),
            meta.data_ptr(),
            dense.data_ptr(),
            rows,
            cols,
            "float16",
            fmt,
            stream=torch.cuda.current_stream().cuda_stream,
        )
        assert not torch.isnan(dense).any()
        padded = torch.empty(rows, cols + 1, dtype=torch.float16, device="cuda")
        padded[:, 1:] = x
        x = padded[:, 1:]  # row stride cols + 1: no 16-byte accesses


def test_caller_owned_error_slots_do_not_wait():
    """With `errors=` the kernel records into the caller's device slots instead of raising."""
    native = pcuda.native()
    x = torch.zeros(32, 64, dtype=torch.float16, device="cuda")
    x[5, 8:11] = 1
    values = torch.empty(32, 32, dtype=torch.float16, device="cuda")
    meta = torch.empty(32, 8, dtype=torch.uint8, device="cuda")
    errors = torch.full((3,), -1, dtype=torch.int64, device="cuda")
    found = native.compress(
        x.data_ptr(),
        values.data_ptr(),
        meta.data_ptr(),
        32,
        64,
        64,
        "float16",
        "packed",
        False,
        stream=torch.cuda.current_stream().cuda_stream,
        errors=errors.data_ptr(),
    )
    assert found == (-1, -1, -1)  # says nothing: the slots hold the answer
    assert errors.tolist() == [-1, 5 * 16 + 2, -1]


def test_runs_on_the_callers_stream():
    x = random_cuda((256, 1024), "bfloat16", seed=7)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        values, meta = ops.compress(x, "cutlass", prune=True)
        dense = ops.decompress(values, meta, x.shape, "bfloat16", "cutlass")
    side.synchronize()
    keep = ops.mask(x, 2, 4)
    assert torch.equal(dense, torch.where(keep, x, torch.zeros_like(x)))


def test_gpu_errors_match_the_cpu_messages():
    import pysparse24

    x = torch.zeros(32, 64, dtype=torch.float16)
    x[5, 8:11] = 1
    for dense in (x, x.cuda()):  # the same message from either path
        with pytest.raises(ValueError, match=r"row 5, group 2 \(columns 8\.\.11\) has 3 non-zeros; the 2:4 pattern"):
            pysparse24.compress(dense, "packed")
    x[7, 9] = float("inf")
    for dense in (x, x.cuda()):
        with pytest.raises(ValueError, match=r"weight contains NaN or Inf at index \(7, 9\)"):
            pysparse24.mask(dense)


def test_public_api_routes_cuda_tensors_here():
    import pysparse24

    w = random_cuda((4, 32, 3, 3), "bfloat16", seed=11)  # conv weight: groups along dim 1
    keep = pysparse24.mask(w)
    assert keep.is_cuda and raw(keep) == raw(pysparse24.mask(w.cpu()))
    pruned = torch.where(keep, w, torch.zeros_like(w))
    assert pysparse24.is_sparse(pruned) and not pysparse24.is_sparse(w)
    assert ops.is_sparse(pruned, 2, 4, dim=1) == pysparse24.is_sparse(pruned.cpu())
    c = pysparse24.compress(random_cuda((64, 128), "float16", seed=12), "cutlass", prune=True)
    assert c.values.is_cuda and pysparse24.decompress(c).is_cuda


def test_cupy_arrays_give_cupy_arrays():
    cupy = pytest.importorskip("cupy")
    x = cupy.asarray(random_cuda((64, 128), "float16", seed=9).cpu().numpy())
    values, meta = ops.compress(x, "packed", prune=True)
    assert isinstance(values, cupy.ndarray) and isinstance(meta, cupy.ndarray)
    back = ops.decompress(values, meta, x.shape, "float16", "packed")
    assert isinstance(back, cupy.ndarray)
    keep = cupy.asnumpy(ops.mask(x, 2, 4))
    assert np.array_equal(cupy.asnumpy(back), np.where(keep, cupy.asnumpy(x), 0))


def test_empty_cuda_input_gets_the_cpu_message():
    import pysparse24

    for empty in (torch.empty(0, 8, device="cuda"), torch.empty(4, 0, device="cuda")):
        with pytest.raises(ValueError, match="weight is empty"):
            ops.mask(empty)
        with pytest.raises(ValueError, match="empty"):
            pysparse24.compress(empty.half(), "packed")


def test_kernels_index_past_2_31_elements():
    """Flat indices past 2^31 (int64 chunk and error indices): a NaN near the end is found at its
    (row, column), and the last rows compress like the first."""
    rows, cols = 65536, 32800  # 2.15e9 float16 elements, 4.3 GB
    if torch.cuda.mem_get_info()[0] < 3 * rows * cols * 2:
        pytest.skip("needs ~13 GB of free GPU memory")
    x = torch.ones(rows, cols, device="cuda", dtype=torch.float16)
    flat = rows * cols - 37
    x.view(-1)[flat] = float("nan")
    with pytest.raises(ValueError, match=rf"index \({flat // cols}, {flat % cols}\)"):
        ops.mask(x, 2, 4)
    x.view(-1)[flat] = 1
    values, meta = ops.compress(x, "packed", prune=True)
    assert torch.equal(values[-4:], torch.ones(4, cols // 2, dtype=torch.float16, device="cuda"))
    assert bool((meta[-4:] == 0x44).all())  # every group keeps (0, 1): code 0b0100 in both nibbles
    del x, values, meta
    torch.cuda.empty_cache()


# ---- cuSPARSELt ----------------------------------------------------------------------------------
_BUILD = pcuda.build_info()
needs_wrapper = pytest.mark.skipif(not _BUILD["cusparselt_wrapper"], reason=_BUILD["reason"] or "built")
cusparselt = pytest.importorskip("pysparse24.cuda.cusparselt")


def runs_here(input_dtype, output_dtype):
    """Whether the support table has this pair on this GPU and loaded cuSPARSELt."""
    spec = pcuda.native().GemmSpec(64, 64, 64, input_dtype, output_dtype, transpose_b=True)
    major, minor = torch.cuda.get_device_capability()
    v = cusparselt.version()
    try:
        spec.validate_support(major, minor, v[0] * 10000 + v[1] * 100 + v[2])
        return True
    except ValueError:
        return False


def sparse_weight(m, k, dtype, seed=0):
    """A random (m, k) matrix pruned 2:4 (1:2 for float32) with our mask kernel."""
    w = random_cuda((m, k), dtype, seed)
    n_keep, width = (1, 2) if dtype == "float32" else (2, 4)
    return torch.where(ops.mask(w, n_keep, width), w, torch.zeros_like(w))


TOLERANCE = {"float16": 2e-3, "bfloat16": 1.6e-2, "float32": 5e-3, "float8_e4m3fn": 1.6e-2}  # of max |D|


def assert_close_to_float64(d, reference, dtype):
    got = d.double().cpu()
    if dtype == "int8":
        assert torch.equal(got, reference)
        return
    scale = reference.abs().max().item()
    assert (got - reference).abs().max().item() <= TOLERANCE[dtype] * scale


@needs_wrapper
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "int8", "float8_e4m3fn"])
def test_matmul_matches_float64(dtype):
    m, n, k = 128, 64, 256
    out_dtype = "int32" if dtype == "int8" else None
    if not runs_here(dtype, out_dtype or cusparselt._DEFAULT_OUT[dtype]):
        with pytest.raises(ValueError, match="has no"):  # named before any library call
            cusparselt.SparseMatrix(sparse_weight(m, k, "float16").to(getattr(torch, dtype)))
        return
    w = sparse_weight(m, k, dtype)
    x = random_cuda((n, k), dtype, seed=1)  # B = x.T: column-major, the layout every dtype supports
    d = cusparselt.matmul(cusparselt.SparseMatrix(w), x, out_dtype=out_dtype, transpose_b=True)
    assert_close_to_float64(d, w.double().cpu() @ x.double().cpu().T, dtype)


@needs_wrapper
def test_support_table_agrees_with_the_library():
    """Every (input, output) pair, run past the table (check_support=False) on a small problem: the
    library must run exactly the pairs the table says run here, and those must be right."""
    native = pcuda.native()
    m, n, k = 128, 64, 256
    disagreements = []
    for row in cusparselt.support_table():
        dtype, out = row["input"], row["output"]
        expected = runs_here(dtype, out)
        try:
            if dtype == "int8":  # small values: every output dtype holds the sums (int8 out saturates: not compared)
                w = sparse_weight(m, k, "int8").clamp(-4, 4)
                x = torch.randint(-4, 5, (n, k), dtype=torch.int8, device="cuda")
            else:
                w = sparse_weight(m, k, "float16" if dtype == "float8_e4m3fn" else dtype).to(getattr(torch, dtype))
                x = random_cuda((n, k), dtype, seed=1)
            structured = native.StructuredMatrix(m, k, dtype, check_support=False)
            stream = torch.cuda.current_stream().cuda_stream
            size, buffer_size = structured.compressed_size()
            compressed = torch.empty(size, dtype=torch.uint8, device="cuda")
            buffer = torch.empty(max(buffer_size, 1), dtype=torch.uint8, device="cuda")
            structured.compress(w.data_ptr(), compressed.data_ptr(), buffer.data_ptr(), stream)
            plan = native.GemmPlan(native.GemmSpec(m, n, k, dtype, out, transpose_b=True), check_support=False)
            d = torch.empty(m, n, dtype=getattr(torch, out), device="cuda")
            workspace = torch.empty(max(plan.workspace_size, 1), dtype=torch.uint8, device="cuda")
            plan.matmul(
                compressed.data_ptr(),
                x.data_ptr(),
                d.data_ptr(),
                d.data_ptr(),
                1.0,
                0.0,
                0,
                workspace.data_ptr(),
                stream,
            )
            torch.cuda.synchronize()
            ran = True
            tolerance_of = {"int32": "int8", "float16": "float16", "bfloat16": "bfloat16", "float32": "float32"}
            if out in tolerance_of:
                assert_close_to_float64(d, w.double().cpu() @ x.double().cpu().T, tolerance_of[out])
        except pcuda.CudaError as e:
            ran, why = False, str(e)
        if ran != expected:
            disagreements.append(
                f"{dtype}->{out}: table says {'runs' if expected else 'no'}, library "
                f"{'ran it' if ran else 'refused: ' + why}"
            )
    assert not disagreements, "; ".join(disagreements)


@needs_wrapper
def test_int8_bias_is_read_as_float32():
    """cuSPARSELt reads an int8 problem's bias as float32 whatever the output: a float16 bias is
    converted, and the result carries the bias exactly."""
    m, n, k = 128, 64, 128
    w = sparse_weight(m, k, "int8").clamp(-8, 8)  # small sums: exact in float16
    x = torch.randint(-8, 8, (n, k), dtype=torch.int8, device="cuda")
    bias = torch.arange(m, dtype=torch.float16, device="cuda") * 0.5 + 1
    sparse = cusparselt.SparseMatrix(w)
    assert cusparselt.plan_for(sparse, n, out_dtype="float16", transpose_b=True, bias=True).spec.bias_dtype == "float32"
    d = cusparselt.matmul(sparse, x, out_dtype="float16", transpose_b=True, bias=bias)
    reference = w.double().cpu() @ x.double().cpu().T + bias.double().cpu()[:, None]
    assert torch.equal(d.double().cpu(), reference)


@needs_wrapper
def test_int8_with_row_major_b_is_refused_before_the_library():
    sparse = cusparselt.SparseMatrix(sparse_weight(128, 128, "int8"))
    with pytest.raises(ValueError, match=r"int8 only with the reduction dimension k contiguous"):
        cusparselt.matmul(sparse, torch.ones(128, 64, device="cuda", dtype=torch.int8), out_dtype="int32")


@needs_wrapper
def test_matmul_bias_alpha_beta_transpose():
    m, n, k = 64, 32, 128
    w = sparse_weight(m, k, "float16")
    x = random_cuda((n, k), "float16", seed=2)  # activations: D = W @ x.T
    c = random_cuda((m, n), "float16", seed=3)
    bias = random_cuda((m,), "float16", seed=4)
    d = cusparselt.matmul(cusparselt.SparseMatrix(w), x, transpose_b=True, bias=bias, alpha=0.5, beta=2.0, c=c)
    reference = 0.5 * (w.double() @ x.double().T) + 2.0 * c.double() + bias.double()[:, None]
    assert_close_to_float64(d, reference.cpu(), "float16")


@needs_wrapper
def test_prune_on_device_and_prune_check():
    w = random_cuda((64, 128), "float16", seed=5)
    with pytest.raises(ValueError, match="not 2:4 sparse"):
        cusparselt.SparseMatrix(w)
    pruned = cusparselt.SparseMatrix(w, prune=True)
    b = random_cuda((128, 16), "float16", seed=6)
    d = cusparselt.matmul(pruned, b)
    # cuSPARSELt's own pruning keeps two of every four, so D is a product with *some* 2:4 matrix:
    # check against ours, which keeps the two largest magnitudes (ties aside, the same choice).
    ours = torch.where(ops.mask(w, 2, 4), w, torch.zeros_like(w))
    assert_close_to_float64(d, (ours.double() @ b.double()).cpu(), "float16")


@needs_wrapper
def test_search_split_k_and_plan_cache():
    native = pcuda.native()
    m, n, k = 256, 128, 512
    a = cusparselt.SparseMatrix(sparse_weight(m, k, "float16"))
    b = random_cuda((k, n), "float16", seed=7)
    before = native.plan_cache_size()
    d = cusparselt.matmul(a, b, search=True)
    plan = cusparselt.plan_for(a, n)
    assert native.plan_cache_size() == before + 1 and plan is cusparselt.plan_for(a, n)
    assert 0 <= plan.algorithm < plan.max_algorithm
    plan.set_split_k(2, 1, 1)  # after search: three settings, one re-plan
    d2 = cusparselt.matmul(a, b)
    assert plan.split_k == (2, 1, 1)
    assert torch.allclose(d.float(), d2.float(), rtol=2e-3, atol=2e-2)


@needs_wrapper
def test_a_new_bias_keeps_the_searched_algorithm():
    """The bias pointer is set before the algorithm is chosen; binding another bias rebuilds the
    selection and plan, keeping what search and set_split_k chose."""
    m, n, k = 256, 128, 512
    w = sparse_weight(m, k, "float16", seed=8)
    a = cusparselt.SparseMatrix(w)
    x = random_cuda((n, k), "float16", seed=9)
    first, second = (random_cuda((m,), "float16", seed=s) for s in (10, 11))
    cusparselt.matmul(a, x, transpose_b=True, bias=first, search=True)
    plan = cusparselt.plan_for(a, n, transpose_b=True, bias=True)
    chosen = plan.algorithm
    d = cusparselt.matmul(a, x, transpose_b=True, bias=second)
    assert plan.algorithm == chosen
    assert_close_to_float64(d, (w.double() @ x.double().T + second.double()[:, None]).cpu(), "float16")


@needs_wrapper
def test_constraint_errors_before_the_library():
    with pytest.raises(ValueError, match="structured float16 matrix to be positive multiples of 16"):
        cusparselt.SparseMatrix(torch.ones(40, 64, dtype=torch.float16, device="cuda"))
    a = cusparselt.SparseMatrix(sparse_weight(64, 64, "float16"))
    storage = torch.zeros(64 * 64 + 1, dtype=torch.float16, device="cuda")
    misaligned = storage[1:].view(64, 64)  # 2 bytes off a 16-byte boundary
    with pytest.raises(ValueError, match="16-byte aligned"):
        cusparselt.matmul(a, misaligned)


@needs_wrapper
def test_gemm_bench_smoke():
    r = gemm_bench.time_gemm_pair(256, 256, 256, "float16", warmup=1, repeats=3)
    assert len(r["sparse_ms"]) == 3 and len(r["dense_ms"]) == 3
    assert all(t > 0 for t in r["sparse_ms"] + r["dense_ms"])
    s = gemm_bench.summarize(r["sparse_ms"], flops=r["flops"])
    assert s["p10_ms"] <= s["median_ms"] <= s["p90_ms"] and s["tflops"] > 0
    c = gemm_bench.time_compress(256, 1024, "float16", warmup=1, repeats=3)
    assert len(c["compress_ms"]) == 3 and c["compress_bytes"] > 0
