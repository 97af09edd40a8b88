"""profiler.blocks: one definition per block -> torch module and ONNX graph that agree."""

import collections

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import pytest
import torch

from profiler.blocks import build_module, build_network, check_network, export_onnx, output_shape, random_input
from profiler.spec import LayerSpec

# Every op type, and each GPUNet family variant (SE, D family, groups, swish, stride 1/2, k 3/5).
ALL_OPS = [
    LayerSpec("head", (1, 3, 32, 32), 16, kernel=3, stride=2, act="swish"),
    LayerSpec("head", (2, 3, 30, 30), 16, kernel=3, stride=2, distill=True),
    LayerSpec("head_large", (1, 3, 32, 32), 16, kernel=3, stride=2, distill=True),
    LayerSpec("conv", (1, 16, 16, 16), 16, kernel=3, stride=1),
    LayerSpec("conv", (1, 16, 16, 16), 24, kernel=5, stride=2, act="swish"),
    LayerSpec("fused_irb", (1, 16, 16, 16), 16, kernel=3, stride=2, expansion=4, se=True),
    LayerSpec("fused_irb", (1, 16, 16, 16), 16, kernel=3, stride=1, expansion=2, act="swish"),
    LayerSpec("fused_irb", (1, 16, 16, 16), 24, kernel=3, stride=2, expansion=3, distill=True),
    LayerSpec("irb", (1, 16, 8, 8), 16, kernel=5, stride=1, expansion=3, se=True, act="swish"),
    LayerSpec("irb", (1, 16, 8, 8), 24, kernel=3, stride=2, expansion=4.5),
    LayerSpec("irb", (1, 16, 8, 8), 32, kernel=3, stride=2, expansion=4, groups=2, distill=True),
    LayerSpec("tail", (1, 32, 4, 4), 64),
    LayerSpec("tail", (1, 32, 4, 4), 64, distill=True),
    LayerSpec("conv2d", (1, 8, 12, 12), 16, kernel=3, groups=2, act="none"),
    LayerSpec("dwconv2d", (1, 8, 12, 12), 8, kernel=5, stride=2),
    LayerSpec("linear", (2, 32, 1, 1), 10, act="none"),
    LayerSpec("se", (1, 16, 6, 6), 16, expansion=2),
    LayerSpec("avgpool", (1, 8, 9, 9), 8, kernel=3, stride=2),
    LayerSpec("maxpool", (1, 8, 9, 9), 8, kernel=3, stride=2),
]


def _torch_out(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _ort_out(onnx_bytes, x):
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


@pytest.mark.parametrize("spec", ALL_OPS, ids=lambda s: f"{s.op}-k{s.kernel}s{s.stride}-d{int(s.distill)}")
def test_torch_and_onnxruntime_agree_and_output_shape_is_exact(spec):
    x = random_input(spec.in_shape, seed=11)
    want = _torch_out(build_module(spec), x)  # same seed -> same weights as export_onnx(spec)
    got = _ort_out(export_onnx(spec), x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    n, c, h, w = output_shape(spec)
    assert want.reshape(n, -1).shape[1] == c * h * w and (want.ndim == 2 or want.shape == (n, c, h, w))


def test_batchnorm_is_folded_and_residual_follows_the_published_rule():
    irb = LayerSpec("irb", (1, 16, 8, 8), 16, kernel=3, expansion=2)
    ops = collections.Counter(n.op_type for n in onnx.load_from_string(export_onnx(irb)).graph.node)
    assert "BatchNormalization" not in ops and ops["Conv"] == 3 and ops["Add"] == 1
    x = torch.from_numpy(random_input(irb.in_shape, seed=2))
    module = build_module(irb)
    with torch.no_grad():
        torch.testing.assert_close(module(x), module.body(x) + x)
    assert not build_module(irb.replace(stride=2)).use_shortcut
    assert not build_module(irb.replace(out_channels=24)).use_shortcut
    # GPUNet's ConvBnAct has no skip even when it could have one.
    conv_ops = {n.op_type for n in onnx.load_from_string(export_onnx(irb.replace(op="conv"))).graph.node}
    assert "Add" not in conv_ops


def test_published_gpunet_quirks():
    # Non-D blocks round mid channels to multiples of 8; the D family uses C * e exactly.
    assert LayerSpec("irb", (1, 704, 7, 7), 704, kernel=5, expansion=3.82).mid_channels == 2688
    assert LayerSpec("irb", (1, 704, 7, 7), 704, kernel=5, expansion=3.82, distill=True).mid_channels == 2689
    # EdgeResidual's "same" padding is 0 at stride 2: 160 px -> 79 px (GPUNet-0 stage 2).
    fused = LayerSpec("fused_irb", (1, 32, 160, 160), 32, kernel=3, stride=2, expansion=5)
    assert output_shape(fused) == (1, 32, 79, 79)
    assert output_shape(fused.replace(distill=True)) == (1, 32, 80, 80)
    conv = build_module(fused).body[0][0]
    assert conv.padding == (0, 0) and conv.out_channels == 160


def test_network_chains_shapes_and_matches_onnxruntime():
    head = LayerSpec("head", (1, 3, 32, 32), 16, kernel=3, stride=2)
    fused = LayerSpec("fused_irb", output_shape(head), 24, kernel=3, stride=2, expansion=2)
    irb = LayerSpec("irb", output_shape(fused), 24, kernel=3, expansion=3, se=True)
    tail = LayerSpec("tail", output_shape(irb), 64)
    net = [head, fused, irb, tail]
    x = random_input(head.in_shape, seed=4)
    want = _torch_out(build_network(net), x)
    np.testing.assert_allclose(_ort_out(export_onnx(net), x), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert want.shape == (1, 1000)

    wrong = irb.replace(in_shape=(1, 24, 8, 8))  # ceil(15 / 2): not what the fused block produces
    with pytest.raises(ValueError, match="layer 2 expects input"):
        check_network([head, fused, wrong])
    with pytest.raises(ValueError, match="last layer"):
        check_network([LayerSpec("linear", (1, 8, 1, 1), 8), LayerSpec("linear", (1, 8, 1, 1), 8)])
    with pytest.raises(ValueError, match="at least one"):
        check_network([])


@pytest.mark.parametrize(
    "spec, message",
    [
        (LayerSpec("irb", (1, 16, 8, 8), 16, act="swish", distill=True), "ReLU-only"),
        (LayerSpec("conv", (1, 16, 8, 8), 16, se=True), "se=True"),
        (LayerSpec("irb", (1, 16, 8, 8), 16, groups=2), "groups"),
        (LayerSpec("maxpool", (1, 16, 8, 8), 8, kernel=3), "keeps the channel count"),
        (LayerSpec("linear", (1, 16, 2, 2), 8), r"\(N, C, 1, 1\)"),
        (LayerSpec("fused_irb", (1, 16, 3, 3), 16, kernel=5, stride=2), "larger than"),
        (LayerSpec("head_large", (1, 3, 32, 32), 16, kernel=4, stride=2, distill=True), "odd kernels"),
    ],
)
def test_unsupported_blocks_are_refused_with_a_reason(spec, message):
    with pytest.raises(ValueError, match=message):
        build_module(spec)
    with pytest.raises(ValueError, match=message):
        output_shape(spec)


def test_reduced_precision_graphs(tmp_path):
    spec = LayerSpec("irb", (1, 16, 8, 8), 16, kernel=3, expansion=2, act="swish")
    x = random_input(spec.in_shape, seed=8)
    want = _torch_out(build_module(spec), x)

    fp16 = onnx.load_from_string(export_onnx(spec.replace(precision="fp16")))
    assert {i.data_type for i in fp16.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16

    path = tmp_path / "int8.onnx"
    int8 = export_onnx(spec.replace(precision="int8"), path)
    assert path.read_bytes() == int8
    ops = collections.Counter(n.op_type for n in onnx.load_from_string(int8).graph.node)
    assert ops["QuantizeLinear"] >= 3 and ops["DequantizeLinear"] >= 6
    got = _ort_out(int8, x)
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()  # int8 error, not a different network


def test_export_of_a_plain_module_needs_its_input_shape():
    module = build_module(LayerSpec("conv2d", (1, 4, 8, 8), 8, kernel=3))
    with pytest.raises(ValueError, match="input_shape"):
        export_onnx(module)
    x = random_input((1, 4, 8, 8), seed=1)
    np.testing.assert_allclose(
        _ort_out(export_onnx(module, input_shape=(1, 4, 8, 8)), x), _torch_out(module, x), rtol=1e-4, atol=1e-5
    )
    with pytest.raises(TypeError):
        output_shape("conv")


def test_two_four_sparsity():
    import pysparse24

    spec = LayerSpec("irb", (1, 16, 8, 8), 16, kernel=3, expansion=2, sparsity="2:4")
    if not hasattr(pysparse24, "prune"):
        with pytest.raises(NotImplementedError, match="pysparse24.prune"):
            build_module(spec)
        return
    module = build_module(spec)
    pointwise = [
        m for m in module.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels % 4 == 0 and m.groups == 1
    ]
    assert len(pointwise) == 2
    for conv in pointwise:
        groups = conv.weight.detach().movedim(1, -1).reshape(-1, 4)
        assert ((groups != 0).sum(dim=1) == 2).all()
    # The graph TensorRT gets keeps the pattern through BN folding, and still computes the same thing.
    graph = onnx.load_from_string(export_onnx(spec)).graph
    weights = [
        onnx.numpy_helper.to_array(i) for i in graph.initializer if i.dims[1:] == [16, 1, 1] or i.dims[1:] == [32, 1, 1]
    ]
    assert len(weights) == 2
    for w in weights:
        assert ((np.moveaxis(w, 1, -1).reshape(-1, 4) != 0).sum(axis=1) == 2).all()
    x = random_input(spec.in_shape, seed=3)
    np.testing.assert_allclose(_ort_out(export_onnx(spec), x), _torch_out(module, x), rtol=1e-4, atol=1e-5)
