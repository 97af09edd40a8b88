"""GPU timing for the GEMM microbenchmark: cuSPARSELt 2:4 sparse vs dense cuBLAS (torch) on the
same shapes, and the compress kernel's bandwidth against a device-to-device copy.

Every timed run is bracketed by CUDA events on the current stream, after the L2 cache was flushed
(a buffer twice the L2 size is overwritten), following warm-up runs. The functions return raw
per-run times; `summarize` turns them into median / p10 / p90, TFLOP/s and the speedup.
"""

from __future__ import annotations

from pysparse24 import _arrays, timing
from pysparse24.cuda import cusparselt, ops, require_device
from pysparse24.groups import cusparselt_padded
from pysparse24.timing import cuda_event_sampler, fixed_count


def _torch():
    import torch

    require_device()
    if not torch.cuda.is_available():
        raise cusparselt.UnavailableError("no CUDA device visible to torch")
    return torch


class _L2Flusher:
    def __init__(self, torch):
        size = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
        self._buffer = torch.empty(max(2 * size, 1 << 20), dtype=torch.uint8, device="cuda")

    def __call__(self):
        self._buffer.fill_(1)


def _time(torch, fn, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of `repeats` runs of fn (CUDA events), each after an L2 flush."""
    return fixed_count(cuda_event_sampler(fn, before=_L2Flusher(torch)), warmup, repeats)


def _random(torch, shape, dtype: str, gen):
    """Random values of `dtype` on the GPU (never zeros: timing on zeros flatters the hardware)."""
    if dtype == "int8":
        return torch.randint(-127, 128, shape, device="cuda", dtype=torch.int8, generator=gen)
    return torch.randn(shape, device="cuda", generator=gen).to(getattr(torch, dtype))


def _operands(torch, m: int, n: int, k: int, dtype: str):
    """Random A (m, k) and B stored as (n, k) (a Linear layer's weight and activations), of `dtype`."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    return _random(torch, (m, k), dtype, gen), _random(torch, (n, k), dtype, gen)


def _dense_fn(torch, a, b_nk, dtype: str):
    """The cuBLAS product A @ B (B = b_nk.T, column-major) torch offers for this dtype."""
    b = b_nk.t()
    if dtype == "int8":
        return lambda: torch._int_mm(a, b)
    if dtype == "float8_e4m3fn":
        one = torch.ones((), device="cuda")
        return lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    return lambda: torch.matmul(a, b)


def padded_n(N: int, dtype: str) -> int:
    """N rounded up to what cuSPARSELt takes for B and D (16 for 8-bit inputs, 8 for 16-bit, 4 for
    32-bit): a decode step (N = 1) runs padded, as PyTorch's semi-structured path pads it."""
    return cusparselt_padded(N, _arrays.KINDS[dtype][1])


def time_gemm_pair(
    M: int, N: int, K: int, dtype: str = "float16", warmup: int = 10, repeats: int = 50, search: bool = True
) -> dict:
    """Per-run milliseconds of the dense (cuBLAS) and 2:4 sparse (cuSPARSELt) (M, K) @ (K, N) product,
    B stored column-major (as (N, K) row-major: the activations of a Linear layer, D = W @ X.T).

    float32 runs TF32 on both sides (cuSPARSELt's float32 is TF32 1:2). search=True lets cuSPARSELt
    pick its fastest algorithm for the shape first (cuBLAS uses its heuristics). The sparse side
    runs N padded to `padded_n` (reported as N_sparse); the dense side runs the true N. A dense
    baseline torch cannot run (e.g. int8 / float8 at N = 1) is reported as dense_error, not raised.
    """
    torch = _torch()
    previous_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        a, b = _operands(torch, M, N, K, dtype)
        dense_ms, dense_error = None, None
        try:
            dense_ms = _time(torch, _dense_fn(torch, a, b, dtype), warmup, repeats)  # the dense model's weight
        except RuntimeError as e:  # cuBLAS / torch refuses this shape or dtype
            dense_error = str(e).splitlines()[0]
        N_sparse = padded_n(N, dtype)
        if N_sparse != N:
            b = torch.cat([b, _random(torch, (N_sparse - N, K), dtype, torch.Generator(device="cuda").manual_seed(2))])
        n_keep, width = (1, 2) if dtype == "float32" else (2, 4)  # float32 is 1:2 on sparse tensor cores
        pruned = torch.where(ops.mask(a, n_keep, width), a, torch.zeros_like(a))
        sparse_a = cusparselt.SparseMatrix(pruned)  # prune-checked on the GPU, then compressed
        out_dtype = "int32" if dtype == "int8" else None  # the same accumulator output as torch._int_mm
        d = cusparselt.matmul(sparse_a, b, out_dtype=out_dtype, transpose_b=True, search=search)
        plan = cusparselt.plan_for(sparse_a, N_sparse, out_dtype=out_dtype, transpose_b=True)
        # Time the plan itself with buffers made once, as cuBLAS is timed without Python-side set-up.
        workspace = torch.empty(max(plan.workspace_size, 1), dtype=torch.uint8, device="cuda")
        stream = torch.cuda.current_stream().cuda_stream

        def run():
            plan.matmul(
                sparse_a.compressed.address,
                b.data_ptr(),
                d.data_ptr(),
                d.data_ptr(),
                1.0,
                0.0,
                0,
                workspace.data_ptr(),
                stream,
            )

        sparse_ms = _time(torch, run, warmup, repeats)
        _check_agreement(torch, d, pruned, b, dtype)
        return {
            "M": M,
            "N": N,
            "K": K,
            "dtype": dtype,
            "N_sparse": N_sparse,
            "dense_ms": dense_ms,
            "dense_error": dense_error,
            "sparse_ms": sparse_ms,
            "flops": 2.0 * M * N * K,  # dense-equivalent work, so TFLOP/s compare directly
            "algorithm": plan.algorithm,
            "device": torch.cuda.get_device_name(),
            "cusparselt": ".".join(map(str, cusparselt.version())),
        }
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32


def _check_agreement(torch, d, pruned, b_nk, dtype: str) -> None:
    """A benchmark of a wrong kernel is worthless: D must match the pruned product (float64 on the
    GPU; int8 exactly), within the output type's rounding."""
    reference = pruned.double() @ b_nk.double().t()
    error = (d.double() - reference).abs().max().item()
    scale = reference.abs().max().item() + 1e-30
    tolerance = {"int8": 0.0, "float16": 2e-3, "float32": 5e-3}.get(dtype, 2.0**-6)  # bf16, fp8 -> bf16 out
    if error > tolerance * scale:
        raise RuntimeError(
            f"cuSPARSELt and the float64 reference disagree for {dtype}: max error {error:.3g} vs scale {scale:.3g}"
        )


def time_compress(
    M: int, K: int, dtype: str = "float16", format: str = "packed", warmup: int = 5, repeats: int = 20
) -> dict:
    """Per-run milliseconds of the compress kernel (prune=True) and of a device-to-device copy of
    the same input. The kernel is timed through the native call with its outputs made once and its
    error slots in device memory, so no host round trip sits inside the events; the slots are
    checked afterwards and the output against ops.compress.

    Bytes moved: compress reads the input and writes half of it plus the metadata; the copy reads
    and writes the input once each. GB/s = bytes / time.
    """
    torch = _torch()
    native = require_device()
    x = _random(torch, (M, K), dtype, torch.Generator(device="cuda").manual_seed(1))
    values = torch.empty(M, K // 2, dtype=x.dtype, device="cuda")
    meta_shape, meta_dtype = ops.meta_shape(M, K, dtype, format)
    meta = torch.empty(meta_shape, dtype=getattr(torch, meta_dtype), device="cuda")
    errors = torch.full((3,), -1, dtype=torch.int64, device="cuda")  # all ones: nothing recorded
    stream = torch.cuda.current_stream().cuda_stream
    compress_ms = _time(
        torch,
        lambda: native.compress(
            x.data_ptr(),
            values.data_ptr(),
            meta.data_ptr(),
            M,
            K,
            K,
            dtype,
            format,
            True,
            stream=stream,
            errors=errors.data_ptr(),
        ),
        warmup,
        repeats,
    )
    if not bool((errors == -1).all()):
        raise RuntimeError(f"the compress kernel recorded bad input while timed: {errors.tolist()}")
    expected_values, expected_meta = ops.compress(x, format, prune=True)
    if not (
        torch.equal(values.view(torch.uint8), expected_values.view(torch.uint8)) and torch.equal(meta, expected_meta)
    ):
        raise RuntimeError("the timed compress kernel's output differs from ops.compress")
    copy_target = torch.empty_like(x)
    copy_ms = _time(torch, lambda: copy_target.copy_(x), warmup, repeats)
    return {
        "M": M,
        "K": K,
        "dtype": dtype,
        "format": format,
        "compress_ms": compress_ms,
        "copy_ms": copy_ms,
        "compress_bytes": x.nbytes + values.nbytes + meta.nbytes,
        "copy_bytes": 2 * x.nbytes,
        "device": torch.cuda.get_device_name(),
    }


def summarize(times_ms: list[float], flops: float | None = None, nbytes: float | None = None) -> dict:
    """median / p10 / p90 in ms (pysparse24.timing.summarize), and TFLOP/s or GB/s at the median."""
    out = timing.summarize(times_ms)
    median = out["median_ms"]
    if flops is not None:
        out["tflops"] = flops / (median * 1e-3) / 1e12
    if nbytes is not None:
        out["gbps"] = nbytes / (median * 1e-3) / 1e9
    return out


__all__ = ["time_gemm_pair", "time_compress", "summarize", "padded_n"]
