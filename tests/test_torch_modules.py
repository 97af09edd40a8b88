"""SparseLinear / SparseConv2d, the pysparse24:: custom ops and to_sparse_: outputs against the dense
pruned layer in float64 (exact for int8), conversion reports and errors, state_dict round trips
through safetensors, torch.compile / torch.export, and the torch semi-structured (cutlass) bridge."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.sparse._semi_structured_conversions import sparse_semi_structured_from_dense_cutlass
from torch_models import seeded

import pysparse24
import pysparse24.cuda as pcuda
from pysparse24.torch import SparseConv2d, SparseLinear, sparsify, to_sparse_

FLOATS = [torch.float32, torch.bfloat16]


def pruned_(module: nn.Module, rng) -> nn.Module:
    """Random weights (and bias) pruned 2:4 along the input channels, in place."""
    with torch.no_grad():
        w = torch.from_numpy(rng.standard_normal(tuple(module.weight.shape))).to(module.weight.dtype)
        module.weight.copy_(pysparse24.prune(w, dim=1))
        if module.bias is not None:
            module.bias.copy_(torch.from_numpy(rng.standard_normal(module.bias.shape[0])))
    return module.eval()


def random_input(rng, shape, dtype):
    return torch.from_numpy(rng.standard_normal(shape)).to(dtype)


def assert_matches_float64(got, want64, magnitude64, dtype):
    """|got - exact| within the output's rounding plus float32 accumulation over the reduction;
    `magnitude64` is sum |x| |w| (+ |b|), the scale of the accumulation error."""
    assert got.dtype == dtype
    rounding = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8}[dtype]
    bound = rounding * want64.abs() + 2.0**-17 * magnitude64
    err = (got.double() - want64).abs()
    assert (err <= bound).all(), f"max error {err.max().item():.3g}, excess {(err - bound).max().item():.3g}"


@pytest.mark.parametrize("dtype", FLOATS)
def test_linear_matches_float64(rng, dtype):
    seeded(rng)
    for _ in range(6):
        k, m = 8 * int(rng.integers(1, 40)), 8 * int(rng.integers(1, 9))
        lead = tuple(int(v) for v in rng.integers(1, 6, size=int(rng.integers(0, 3))))
        dense = pruned_(nn.Linear(k, m, bias=bool(rng.integers(2)), dtype=dtype), rng)
        x = random_input(rng, (*lead, k), dtype)
        with torch.no_grad():
            got = SparseLinear.from_dense(dense)(x)
        w, b = dense.weight.double(), None if dense.bias is None else dense.bias.double()
        assert got.shape == (*lead, m)
        assert_matches_float64(
            got, F.linear(x.double(), w, b), F.linear(x.double().abs(), w.abs(), None if b is None else b.abs()), dtype
        )


def conv_case(rng, dtype):
    c = 8 * int(rng.integers(1, 5))
    r, s = (int(v) for v in rng.choice([1, 3, 5], size=2))
    conv = nn.Conv2d(
        c,
        8 * int(rng.integers(1, 5)),
        (r, s),
        stride=tuple(int(v) for v in rng.integers(1, 3, 2)),
        padding=tuple(int(v) for v in rng.integers(0, 3, 2)),
        dilation=tuple(int(v) for v in rng.integers(1, 3, 2)),
        bias=bool(rng.integers(2)),
        dtype=dtype,
    )
    h, w = (int(v) for v in rng.integers(2 * max(r, s) + 1, 15, size=2))
    return pruned_(conv, rng), (int(rng.integers(1, 3)), c, h, w)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("channels_last", [True, False])
def test_conv2d_matches_float64_and_keeps_the_memory_format(rng, dtype, channels_last):
    seeded(rng)
    for _ in range(5):
        dense, shape = conv_case(rng, dtype)
        x = random_input(rng, shape, dtype)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        with torch.no_grad():
            got = SparseConv2d.from_dense(dense)(x)
        args = dict(stride=dense.stride, padding=dense.padding, dilation=dense.dilation)
        w, b = dense.weight.double(), None if dense.bias is None else dense.bias.double()
        want = F.conv2d(x.double(), w, b, **args)
        magnitude = F.conv2d(x.double().abs(), w.abs(), None if b is None else b.abs(), **args)
        assert got.shape == want.shape
        assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        assert_matches_float64(got, want, magnitude, dtype)


def test_1x1_conv_reads_a_channels_last_input_in_place(rng):
    """N = batch*H*W rows straight from the channels_last input: the im2col patches are a view."""
    from pysparse24.torch.ops import patches

    x = random_input(rng, (2, 16, 5, 7), torch.float32).to(memory_format=torch.channels_last)
    cols = patches(x.permute(0, 2, 3, 1), (1, 1), (1, 1), (0, 0), (1, 1), (5, 7))
    assert cols.shape == (70, 16) and cols.data_ptr() == x.data_ptr()


def test_int8_layers_are_exact(rng):
    """int8 weights and activations accumulate in int32, bias int32: equal to an int64 reference."""
    k, m = 64, 24
    w = pysparse24.prune(torch.from_numpy(rng.integers(-128, 128, (m, k), dtype=np.int8)))
    bias = torch.from_numpy(rng.integers(-(2**20), 2**20, m, dtype=np.int32))
    linear = nn.Linear(k, m)
    linear.weight, linear.bias = nn.Parameter(w, requires_grad=False), nn.Parameter(bias, requires_grad=False)
    x = torch.from_numpy(rng.integers(-128, 128, (3, 5, k), dtype=np.int8))
    got = SparseLinear.from_dense(linear)(x)
    assert got.dtype == torch.int32
    assert torch.equal(got.long(), x.long() @ w.long().T + bias.long())

    conv = nn.Conv2d(16, 8, 3, padding=1)
    wc = pysparse24.prune(torch.from_numpy(rng.integers(-128, 128, (8, 16, 3, 3), dtype=np.int8)), dim=1)
    conv.weight, conv.bias = nn.Parameter(wc, requires_grad=False), nn.Parameter(bias[:8], requires_grad=False)
    xc = torch.from_numpy(rng.integers(-128, 128, (1, 16, 6, 5), dtype=np.int8))
    got = SparseConv2d.from_dense(conv)(xc.to(memory_format=torch.channels_last))
    want = F.conv2d(xc.double(), wc.double(), bias[:8].double(), padding=1)  # exact: |sums| < 2^53
    assert got.dtype == torch.int32 and torch.equal(got.double(), want)


class Net(nn.Module):
    """conv (2:4) -> depthwise (stays dense) -> 1x1 conv (2:4) -> linear (2:4) -> head (out 10: dense)."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.conv = nn.Conv2d(8, 16, 3, padding=1, dtype=dtype)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16, dtype=dtype)
        self.pointwise = nn.Conv2d(16, 32, 1, dtype=dtype)
        self.fc = nn.Linear(32, 24, dtype=dtype)
        self.head = nn.Linear(24, 10, dtype=dtype)

    def forward(self, x):
        x = self.pointwise(F.relu(self.depthwise(F.relu(self.conv(x)))))
        return self.head(F.relu(self.fc(x.mean((2, 3)))))


def sparsified_net(rng, dtype=torch.float32):
    seeded(rng)
    net = Net(dtype).eval()
    sparsify(net)
    return net


def test_to_sparse_after_sparsify_matches_the_masked_model_and_reports(rng):
    net = sparsified_net(rng)
    x = random_input(rng, (2, 8, 9, 9), torch.float32).to(memory_format=torch.channels_last)
    with torch.no_grad():
        want = net(x)
        report = to_sparse_(net)
        got = net(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert [r.name for r in report.converted] == ["conv", "pointwise", "fc"]
    assert isinstance(net.conv, SparseConv2d) and isinstance(net.pointwise, SparseConv2d)
    assert isinstance(net.fc, SparseLinear) and type(net.head) is nn.Linear and type(net.depthwise) is nn.Conv2d
    skipped = {r.name: r.skipped for r in report.skipped}
    assert "grouped convolution" in skipped["depthwise"] and "output channels" in skipped["head"]
    assert "im2col" in report[0].kernel and "1x1" in report[2].kernel
    assert "depthwise" in str(report)
    assert not [key for key in net.state_dict() if key.startswith(("conv.", "pointwise.", "fc.")) and "weight" in key]


def test_default_mode_skips_a_layer_that_is_not_2to4_and_names_its_first_bad_group(rng):
    seeded(rng)
    net = Net().eval()
    for name in ("conv", "pointwise", "fc"):
        pruned_(net.get_submodule(name), rng)
    with torch.no_grad():
        net.conv.weight[5, 4:8, 1, 2] = torch.tensor([1.0, 1.0, 1.0, 0.0])  # 3 non-zeros at kernel (1, 2)
    report = to_sparse_(net)
    reason = next(r.skipped for r in report if r.name == "conv")
    # Group 11 of the (K, R*S*C) row: kernel position 1*3 + 2 = 5, two groups of four channels each.
    assert "output channel 5, group 11 (input channels 4..7 at kernel position (1, 2)) has 3 non-zeros" in reason
    assert type(net.conv) is nn.Conv2d and isinstance(net.fc, SparseLinear)
    with pytest.raises(ValueError, match=r"'conv'.*output channel 5, group 11"):
        to_sparse_(net, layers=["conv"])


def test_explicit_layers_convert_exactly_those_and_refuse_bad_names(rng):
    net = sparsified_net(rng)
    report = to_sparse_(net, layers=(name for name in ["fc"]))  # any iterable of names
    assert [r.name for r in report.converted] == ["fc"]
    assert type(net.conv).__name__ == "ParametrizedConv2d"  # untouched
    with pytest.raises(ValueError, match="'nope' is not in the model"):
        to_sparse_(net, layers=["nope"])
    with pytest.raises(ValueError, match="'depthwise'.*grouped convolution"):
        to_sparse_(net, layers=["depthwise"])
    with pytest.raises(TypeError, match="iterable of layer names"):
        to_sparse_(net, layers="conv")
    assert type(net.conv).__name__ == "ParametrizedConv2d"  # a refused request swaps nothing


@pytest.mark.parametrize("dtype", FLOATS)
def test_state_dict_round_trips_through_safetensors(rng, dtype, tmp_path):
    net = sparsified_net(rng, dtype)
    to_sparse_(net)
    state = net.state_dict()
    assert {"conv.values", "conv.meta", "fc.values", "fc.meta"} <= set(state)
    assert not {"conv.weight", "fc.weight", "conv.parametrizations.weight.original"} & set(state)
    save_file(state, tmp_path / "net.safetensors")

    fresh = sparsified_net(np.random.default_rng(rng.integers(2**32)), dtype)  # other random weights
    to_sparse_(fresh)
    fresh.load_state_dict(load_file(tmp_path / "net.safetensors"))
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key
    x = random_input(rng, (1, 8, 7, 7), dtype)
    with torch.no_grad():
        assert torch.equal(fresh(x), net(x))


def test_input_that_requires_grad_is_an_error(rng):
    layer = SparseLinear.from_dense(pruned_(nn.Linear(16, 8), rng))
    x = random_input(rng, (2, 16), torch.float32).requires_grad_()
    with pytest.raises(RuntimeError, match="inference-only"):
        layer(x)
    conv = SparseConv2d.from_dense(pruned_(nn.Conv2d(8, 8, 1), rng))
    with pytest.raises(RuntimeError, match="inference-only"):
        conv(random_input(rng, (1, 8, 3, 3), torch.float32).requires_grad_())
    with torch.no_grad():
        assert layer(x).shape == (2, 8)
    with torch.inference_mode():
        assert layer(x).shape == (2, 8)


def test_corrupt_metadata_loaded_after_a_call_is_an_error(rng):
    """The op's kernel checks a weight once and remembers it; a state_dict load (an in-place copy)
    with corrupt metadata is checked again."""
    layer = SparseLinear.from_dense(pruned_(nn.Linear(16, 8), rng))
    x = random_input(rng, (1, 16), torch.float32)
    with torch.no_grad():
        want = layer(x)
        state = {k: v.clone() for k, v in layer.state_dict().items()}
        good = int(state["meta"][3, 1])
        state["meta"][3, 1] = 0x55  # codes (1, 1)
        layer.load_state_dict(state)
        with pytest.raises(ValueError, match="corrupt metadata: group 14 "):
            layer(x)
        state["meta"][3, 1] = good
        layer.load_state_dict(state)
        assert torch.equal(layer(x), want)


def test_bad_inputs_name_the_problem(rng):
    layer = SparseLinear.from_dense(pruned_(nn.Linear(16, 8), rng))
    with pytest.raises(TypeError, match="dtype torch.bfloat16 but the sparse weight is torch.float32"):
        layer(torch.zeros(2, 16, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match=r"needs \(\.\.\., 16\)"):
        layer(torch.zeros(2, 12))
    conv = SparseConv2d.from_dense(pruned_(nn.Conv2d(8, 8, 3), rng))
    with pytest.raises(ValueError, match="16 channels"):
        conv(torch.zeros(1, 16, 5, 5))
    with pytest.raises(ValueError, match="smaller than the"):
        conv(torch.zeros(1, 8, 2, 2))
    with pytest.raises(ValueError, match="not 2:4|non-zeros"):
        SparseLinear.from_dense(nn.Linear(16, 8))  # random dense weight
    with pytest.raises(TypeError, match="expects an nn.Linear"):
        SparseLinear.from_dense(nn.Conv2d(8, 8, 1))


@pytest.mark.parametrize("mode", ["compile", "export"])
def test_compile_fullgraph_and_export(rng, mode):
    net = sparsified_net(rng)
    to_sparse_(net)
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager", dynamic=True)
    for memory_format, shape in (
        (torch.channels_last, (2, 8, 6, 6)),
        (torch.contiguous_format, (2, 8, 6, 6)),
        (torch.channels_last, (3, 8, 9, 7)),
    ):
        x = random_input(rng, shape, torch.float32).to(memory_format=memory_format)
        with torch.no_grad():
            want = net(x)
            if mode == "compile":
                got = compiled(x)
            else:
                program = torch.export.export(net, (x,))
                targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
                assert {"pysparse24.linear.default", "pysparse24.conv2d.default"} <= targets
                got = program.module()(x)
        assert torch.equal(got, want)


@pytest.mark.parametrize(
    "kernel, stride, padding, hw",
    [
        (3, 2, 1, (7, 5)),
        (1, 1, 0, (7, 5)),  # pointwise: channels_last input is the GEMM operand
        (1, 1, 0, (1, 1)),  # squeeze-excite: one pixel, both layouts at once
        (3, 1, 0, (3, 3)),  # a 1x1 output from a 3x3 kernel
    ],
)
def test_conv_fake_strides_and_values_match_the_real_output(rng, kernel, stride, padding, hw):
    """Compiled graphs trust the fake implementation's strides: they must be the real ones."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    dense = pruned_(nn.Conv2d(8, 16, kernel, stride=stride, padding=padding), rng)
    conv = SparseConv2d.from_dense(dense)
    for memory_format in (torch.channels_last, torch.contiguous_format):
        x = random_input(rng, (2, 8, *hw), torch.float32).to(memory_format=memory_format)
        with torch.no_grad():
            real = conv(x)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = torch.ops.pysparse24.conv2d(
                mode.from_tensor(x),
                mode.from_tensor(conv.values),
                mode.from_tensor(conv.meta),
                mode.from_tensor(conv.bias),
                [kernel, kernel],
                [stride, stride],
                [padding, padding],
                [1, 1],
            )
        assert (fake.shape, fake.stride(), fake.dtype) == (real.shape, real.stride(), real.dtype)
        w, b = dense.weight.double(), dense.bias.double()
        want = F.conv2d(x.double(), w, b, stride=stride, padding=padding)
        magnitude = F.conv2d(x.double().abs(), w.abs(), b.abs(), stride=stride, padding=padding)
        assert_matches_float64(real, want, magnitude, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int8])
def test_cutlass_weights_round_trip_through_torch_semi_structured(rng, dtype):
    rows, cols = (32, 64) if dtype != torch.int8 else (32, 128)
    if dtype == torch.int8:
        dense = torch.from_numpy(rng.integers(-128, 128, (rows, cols), dtype=np.int8))
    else:
        dense = random_input(rng, (rows, cols), dtype)
    c = pysparse24.compress(dense, format="cutlass", prune=True)
    t = c.to_torch_semi_structured()
    assert isinstance(t, torch.sparse.SparseSemiStructuredTensorCUTLASS) and t.shape == dense.shape
    if dtype == torch.float32:  # torch's own float32 decoder round-trips through half (see test_compress)
        torch.testing.assert_close(t.to_dense(), pysparse24.decompress(c), rtol=2**-10, atol=0)
    else:
        assert torch.equal(t.to_dense(), pysparse24.decompress(c))  # torch's own (pure Python) decoder
    back = pysparse24.Compressed.from_torch_semi_structured(t)
    assert torch.equal(back.values, c.values) and torch.equal(back.meta, c.meta) and back.shape == c.shape

    # And from torch's reference conversion into ours.
    packed, meta = sparse_semi_structured_from_dense_cutlass(pysparse24.decompress(c))
    ours = pysparse24.Compressed.from_torch_semi_structured(
        torch.sparse.SparseSemiStructuredTensorCUTLASS(dense.shape, packed, meta, None, None, None)
    )
    assert torch.equal(pysparse24.decompress(ours), pysparse24.decompress(c))
    with pytest.raises(ValueError, match="cutlass layout"):
        pysparse24.compress(pysparse24.prune(dense), format="packed").to_torch_semi_structured()


class HostCusparselt:
    """pysparse24.cuda.cusparselt's documented contract on the host: SparseMatrix(dense) holds A (m, k);
    matmul(A, B, transpose_b=True) = A @ B.T (+ bias per row), in out_dtype (default: A's dtype), with
    the shape and alignment rules of csrc/cuda/gemm_spec.cpp checked."""

    def __init__(self):
        self.built = 0

    def SparseMatrix(self, dense, check=True):
        self.built += 1
        multiple = 32 // dense.element_size()
        assert dense.shape[0] % multiple == 0 and dense.shape[1] % multiple == 0
        assert pysparse24.is_sparse(dense) and not check  # decompress wrote it: no second check
        return dense

    def matmul(self, a, b, *, transpose_b=False, bias=None, out_dtype=None):
        out = getattr(torch, out_dtype) if out_dtype else a.dtype
        assert transpose_b and b.is_contiguous() and b.data_ptr() % 16 == 0
        assert b.shape[0] % (16 // b.element_size()) == 0 and b.shape[0] % (16 // out.itemsize) == 0
        d = a.double() @ b.double().T + (0 if bias is None else bias.double()[:, None])
        return d.to(out)


def host_case(rng, dtype, rows, cols):
    if dtype == torch.int8:
        w = pysparse24.prune(torch.from_numpy(rng.integers(-127, 128, (rows, cols), dtype=np.int8)))  # negatable
        x = torch.from_numpy(rng.integers(-128, 128, (2, 3, cols), dtype=np.int8))
        return w, x, torch.from_numpy(rng.integers(-1000, 1000, rows, dtype=np.int32))
    return (
        pysparse24.prune(random_input(rng, (rows, cols), dtype)),
        random_input(rng, (2, 3, cols), dtype),
        random_input(rng, (rows,), dtype),
    )


@pytest.mark.parametrize(
    "dtype, rows, cols, sparse",
    [
        (torch.float32, 32, 64, False),
        (torch.bfloat16, 32, 64, True),
        (torch.bfloat16, 24, 64, False),
        (torch.int8, 32, 64, True),
    ],
)
def test_gpu_path_uses_the_cusparselt_contract(rng, dtype, rows, cols, sparse, monkeypatch):
    """The CUDA branch's use of the wrapper (6 rows padded to the multiple, transposes, int32 output
    and bias, dense fallback for float32 and for shapes cuSPARSELt refuses, the prepared-weight
    cache), run on the host against the wrapper's documented contract, as far as no GPU allows."""
    from pysparse24.cuda import cusparselt
    from pysparse24.torch import ops

    host = HostCusparselt()
    monkeypatch.setattr(cusparselt, "SparseMatrix", host.SparseMatrix)
    monkeypatch.setattr(cusparselt, "matmul", host.matmul)
    w, x, bias = host_case(rng, dtype, rows, cols)
    c = pysparse24.compress(w)
    values, meta = c.values.clone(), c.meta.clone()
    assert (ops.gpu_dense_reason(values) is None) == sparse
    tolerance = dict(rtol=1e-5 if dtype == torch.float32 else 1e-2, atol=1e-4)
    got = ops._cuda_linear(x, values, meta, bias)
    want = (x.double() @ w.double().T + bias.double()).to(ops.result_dtype(dtype))
    assert got.shape == (2, 3, rows) and got.dtype == ops.result_dtype(dtype) and got.is_contiguous()
    torch.testing.assert_close(got, want, **tolerance)

    ops._cuda_linear(x, values, meta, None)
    values.neg_()
    flipped = ops._cuda_linear(x, values, meta, None)  # an in-place update is seen, not a stale cache entry
    torch.testing.assert_close(flipped, (-(x.double() @ w.double().T)).to(ops.result_dtype(dtype)), **tolerance)
    assert host.built == (2 if sparse else 0)  # built once per weight version


def test_gpu_int8_weight_cuSPARSELt_refuses_is_an_error(rng):
    from pysparse24.torch import ops

    w, x, _ = host_case(rng, torch.int8, 16, 64)
    c = pysparse24.compress(w)
    with pytest.raises(ValueError, match="multiples of 32, not 16x64"):
        ops._cuda_linear(x, c.values, c.meta, None)


def gpu_test(test):
    for mark in (
        pytest.mark.gpu,
        pytest.mark.skipif(not pcuda.is_available(), reason=pcuda.unavailable_reason() or "available"),
        pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device (CPU-only torch?)"),
    ):
        test = mark(test)
    return test


@gpu_test
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_modules_match_the_cpu(rng, dtype):
    """bfloat16 through cuSPARSELt, float32 through the decompressed dense weight (cuSPARSELt's is 1:2)."""
    net = sparsified_net(rng, dtype)
    to_sparse_(net)
    x = random_input(rng, (2, 8, 16, 16), dtype).to(memory_format=torch.channels_last)
    with torch.no_grad():
        want = net(x)
        got = net.cuda()(x.cuda())
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got.cpu(), want, **tolerance)


@gpu_test
def test_torch_semi_structured_on_gpu_matches_ours(rng):
    dense = pysparse24.prune(random_input(rng, (128, 128), torch.float16)).cuda()
    torch.sparse.SparseSemiStructuredTensor._FORCE_CUTLASS = True
    try:
        t = torch.sparse.to_sparse_semi_structured(dense)
    finally:
        torch.sparse.SparseSemiStructuredTensor._FORCE_CUTLASS = False
    c = pysparse24.compress(dense.cpu(), format="cutlass")
    assert torch.equal(t.packed.cpu(), c.values) and torch.equal(t.meta.cpu(), c.meta)
    ours = pysparse24.Compressed(c.values.cuda(), c.meta.cuda(), c.shape, c.dtype, "cutlass")
    x = random_input(rng, (128, 64), torch.float16).cuda()
    torch.testing.assert_close(ours.to_torch_semi_structured() @ x, dense @ x)
