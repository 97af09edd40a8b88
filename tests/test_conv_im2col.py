"""Implicit im2col (pysparse24.matmul.conv2d_nhwc, the large-N kernels packing straight from an NHWC
input): bit-identical to the explicit patch matrix on every SIMD path, both within float32 accumulation
of a float64 F.conv2d, every output written, and the conv op taking it exactly where it applies."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_models import seeded

import pysparse24
from pysparse24 import _C
from pysparse24.matmul import conv2d_nhwc, large_n_regime
from pysparse24.torch import ops

DTYPES = [
    dtype
    for dtype, start in (("float32", _C.matmul_large_n), ("bfloat16", _C.matmul_large_n_bfloat16))
    if start  # 0: bfloat16 on CPUs with AVX-512 BF16 never runs the large-N kernels
]


def random_conv(rng, dtype: str, channels: int):
    """A random geometry (odd sizes, stride 1-2, padding 0-2, dilation 1-2, batch 1-3) whose output
    has enough pixels for the large-N regime, its NHWC input, a 2:4 weight (K, R*S*C) and a bias."""
    while True:
        r, s = (int(v) for v in rng.choice([1, 3, 5], size=2))
        stride, padding, dilation = (
            [int(v) for v in rng.integers(low, high, 2)] for low, high in ((1, 3), (0, 3), (1, 3))
        )
        h, w = (int(v) for v in rng.integers(5, 20, size=2))
        batch = int(rng.integers(1, 4))
        out_hw = [
            (size + 2 * p - d * (k - 1) - 1) // st + 1
            for size, k, st, p, d in zip((h, w), (r, s), stride, padding, dilation)
        ]
        if min(out_hw) >= 1 and large_n_regime(dtype, batch * out_hw[0] * out_hw[1]):
            break
    tdtype = getattr(torch, dtype)
    x = torch.randn(batch, h, w, channels).to(tdtype)
    weight = pysparse24.prune(torch.randn(8 * int(rng.integers(1, 5)), r * s * channels).to(tdtype))
    bias = torch.randn(weight.shape[0]).to(tdtype)
    return x, weight, bias, ([r, s], stride, padding, dilation), out_hw


def float64_conv(x_nhwc, weight, bias, geometry):
    """(N*OH*OW, M) results of F.conv2d in float64, and of |x| * |w| + |b| (the accumulation's scale)."""
    (r, s), stride, padding, dilation = geometry
    m, c = weight.shape[0], x_nhwc.shape[3]
    x = x_nhwc.permute(0, 3, 1, 2).double()
    w = weight.reshape(m, r, s, c).permute(0, 3, 1, 2).double()  # the K order is (r, s, c)
    args = dict(stride=stride, padding=padding, dilation=dilation)
    exact = F.conv2d(x, w, bias.double(), **args)
    scale = F.conv2d(x.abs(), w.abs(), bias.double().abs(), **args)
    return (y.permute(0, 2, 3, 1).reshape(-1, m) for y in (exact, scale))


@pytest.mark.parametrize("dtype", DTYPES)
def test_implicit_equals_the_explicit_patches_bit_for_bit_and_float64(rng, isa, dtype):
    seeded(rng)
    # channels: whole SIMD blocks (16, 32), a block and a rest (24, 40), fewer than a block (8)
    for channels in (8, 16, 24, 32, 40):
        x, weight, bias, geometry, out_hw = random_conv(rng, dtype, channels)
        c = pysparse24.compress(weight)
        implicit = conv2d_nhwc(x, c, bias, *geometry)
        explicit = pysparse24.linear(ops.patches(x, *geometry, out_hw), c, bias)
        bits = torch.int16 if x.dtype == torch.bfloat16 else torch.int32
        assert torch.equal(implicit.view(bits), explicit.view(bits)), f"{isa} {dtype} C={channels} {geometry}"
        exact, scale = float64_conv(x, weight, bias, geometry)
        rounding = 2.0**-8 if dtype == "bfloat16" else 2.0**-24
        err = (implicit.double() - exact).abs()
        assert (err <= rounding * exact.abs() + 2.0**-17 * scale).all(), f"max error {err.max().item():.3g}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_any_input_strides_and_thread_counts_give_the_same_bits(rng, dtype):
    """Channels not contiguous (an NCHW tensor's NHWC view: packed element by element) and 1 or 2
    threads: the same bits as a contiguous input on one thread."""
    seeded(rng)
    x, weight, bias, geometry, _ = random_conv(rng, dtype, 24)
    c = pysparse24.compress(weight)
    strided = x.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    assert strided.stride(3) != 1
    bits = torch.int16 if x.dtype == torch.bfloat16 else torch.int32
    want = conv2d_nhwc(x, c, bias, *geometry, threads=1).view(bits)
    for xx, threads in ((strided, 1), (x, 2), (strided, 2)):
        assert torch.equal(conv2d_nhwc(xx, c, bias, *geometry, threads=threads).view(bits), want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_output_element_is_written(rng, dtype):
    seeded(rng)
    x, weight, bias, geometry, out_hw = random_conv(rng, dtype, 32)
    c = pysparse24.compress(weight)
    n, m = x.shape[0] * out_hw[0] * out_hw[1], weight.shape[0]
    bits = np.uint16 if dtype == "bfloat16" else np.uint32
    out = np.full((n, m), 0x7FC1 if dtype == "bfloat16" else 0x7FC00001, dtype=bits)  # NaN
    _C.sparse_conv2d(
        c.values.view(torch.int16 if dtype == "bfloat16" else torch.int32).numpy(),
        c.meta.numpy(),
        x.view(torch.int16 if dtype == "bfloat16" else torch.int32).numpy(),
        out.T,
        dtype,
        None,
        0,
        *geometry,
    )
    got = torch.from_numpy(out.view(np.int16 if dtype == "bfloat16" else np.int32))
    want = conv2d_nhwc(x, c, None, *geometry)
    assert torch.equal(got, want.view(got.dtype))


def test_the_conv_op_takes_implicit_im2col_exactly_where_it_applies(rng, monkeypatch):
    """Large-N float regime: no patch matrix is built; few output pixels and int8: the explicit one
    (the kernels that read it). Either way the op equals the explicit computation bit for bit."""
    seeded(rng)
    built = []
    explicit_patches = ops.patches
    monkeypatch.setattr(ops, "patches", lambda *args: built.append(args[0].shape) or explicit_patches(*args))
    for dtype, size, implicit in (
        ("float32", 9, True),  # 81 output pixels
        ("float32", 3, False),  # 9: below the regime
        ("int8", 9, False),
    ) + ((("bfloat16", 9, True),) if "bfloat16" in DTYPES else ()):
        tdtype = getattr(torch, dtype)
        x = torch.randn(1, 16, size, size).mul(20 if dtype == "int8" else 1).to(tdtype)
        x = x.contiguous(memory_format=torch.channels_last)
        weight = pysparse24.prune(torch.randn(8, 9 * 16).mul(20 if dtype == "int8" else 1).to(tdtype))
        c = pysparse24.compress(weight)
        built.clear()
        got = torch.ops.pysparse24.conv2d(x, c.values, c.meta, None, [3, 3], [1, 1], [1, 1], [1, 1])
        assert bool(built) != implicit, (dtype, size)
        want = pysparse24.linear(
            explicit_patches(x.permute(0, 2, 3, 1), [3, 3], [1, 1], [1, 1], [1, 1], (size, size)), c
        )
        got = got.permute(0, 2, 3, 1).reshape(-1, 8)
        bits = torch.int16 if tdtype == torch.bfloat16 else torch.int32
        assert torch.equal(got.contiguous().view(bits), want.view(bits))


def test_bad_geometry_and_regime_are_clear_errors(rng):
    seeded(rng)
    x, weight, bias, geometry, _ = random_conv(rng, "float32", 16)
    c = pysparse24.compress(weight)
    pointwise = pysparse24.compress(pysparse24.prune(torch.randn(8, 16)))
    with pytest.raises(ValueError, match="large-N regime only"):  # at most 3 x 2 x 2 output pixels
        conv2d_nhwc(x[:, :2, :2], pointwise, None, [1, 1], [1, 1], [0, 0], [1, 1])
    with pytest.raises(ValueError, match="4-D"):
        conv2d_nhwc(x[0], c, bias, *geometry)
    wrong = [geometry[0][0] + 2, geometry[0][1]]
    with pytest.raises(ValueError, match="16 channels but the weight's"):
        conv2d_nhwc(x, c, bias, wrong, *geometry[1:])
    tall = [x.shape[1] + 1, 1]  # taller than the unpadded input
    cb = pysparse24.compress(pysparse24.prune(torch.randn(8, tall[0] * x.shape[3])))
    with pytest.raises(ValueError, match="smaller than the"):
        conv2d_nhwc(x, cb, None, tall, [1, 1], [0, 0], [1, 1])
    # The C++ entry checks on its own: sizes, and the kernel against the padded input.
    values, meta, xs = c.values.view(torch.int32).numpy(), c.meta.numpy(), x.view(torch.int32).numpy()
    out = np.zeros((weight.shape[0], 4096), dtype=np.uint32)
    with pytest.raises(ValueError, match="must be positive"):
        _C.sparse_conv2d(values, meta, xs, out, "float32", None, 0, geometry[0], [0, 1], [0, 0], [1, 1])
    with pytest.raises(ValueError, match="larger than the padded input"):
        _C.sparse_conv2d(
            cb.values.view(torch.int32).numpy(),
            cb.meta.numpy(),
            xs,
            out,
            "float32",
            None,
            0,
            tall,
            [1, 1],
            [0, 0],
            [1, 1],
        )
