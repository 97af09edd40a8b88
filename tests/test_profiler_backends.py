"""profiler.backends: one measure() interface; TensorRT up to the engine build (timing: test_timing.py)."""

import collections
import importlib.util
import json
import os
import sys
import types

import onnx
import pytest

from profiler.backends import BackendUnavailable, TimingPolicy, get_backend
from profiler.backends.base import pin_cpus
from profiler.backends.tensorrt_backend import (
    build_engine,
    build_plan,
    layer_tactics,
    onnx_for_plan,
    require_sparse_tactic,
)
from profiler.blocks import output_shape
from profiler.spec import LayerSpec


@pytest.fixture(autouse=True)
def restore_cpu_affinity():
    """Backends pin the process to CPUs; give the rest of the test session all of them back."""
    cpus = os.sched_getaffinity(0)
    yield
    os.sched_setaffinity(0, cpus)


FAST = TimingPolicy(warmup_min=3, warmup_s=0.0, min_repeats=20, min_time_s=0.0, budget_s=0.5)
HEAD = LayerSpec("head", (1, 3, 32, 32), 16, kernel=3, stride=2)
IRB = LayerSpec("irb", output_shape(HEAD), 16, kernel=3, expansion=2)


def test_pinning():
    allowed = sorted(os.sched_getaffinity(0))
    assert pin_cpus(1, None) is None and sorted(os.sched_getaffinity(0)) == allowed
    pinned = pin_cpus(1)
    assert len(pinned) == 1 and pinned[0] in allowed and os.sched_getaffinity(0) == set(pinned)
    os.sched_setaffinity(0, allowed)
    assert pin_cpus(99, [allowed[-1]]) == [allowed[-1]]
    with pytest.raises(ValueError, match="cannot pin"):
        pin_cpus(1, [10_000])


# ------------------------------------------------------------------------------ real backends
@pytest.mark.parametrize("name", ["onnxruntime", "torch"])
def test_cpu_backends_measure_layers_and_networks(name):
    backend = get_backend(name, policy=FAST, threads=1)
    layer = backend.measure(IRB)
    net = backend.measure_network([HEAD, IRB])
    for stats in (layer, net):
        assert 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms and stats.n >= 20 and stats.warmup >= 3
    ctx = backend.context()
    assert ctx["backend"] == name and ctx["threads"] == 1 and ctx["precision"] == "fp32" and ctx["batch"] == 1
    assert ctx["device"] and ctx["runtime"].startswith(name) and ctx["pinned"] is True
    with pytest.raises(ValueError, match="batch 1"):
        backend.measure(IRB.replace(in_shape=(2, 16, 16, 16)))
    with pytest.raises(ValueError, match="fp32"):
        backend.measure(IRB.replace(precision="fp16"))


def test_onnxruntime_int8_and_option_errors():
    backend = get_backend("onnxruntime", precision="int8", policy=FAST)
    assert backend.measure(IRB.replace(precision="int8")).median_ms > 0
    assert backend.context()["provider"] == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="CUDA execution provider"):
        get_backend("onnxruntime", precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="threads"):
        get_backend("onnxruntime", threads=0)
    with pytest.raises(ValueError, match="int8"):
        get_backend("torch", precision="int8")
    with pytest.raises(ValueError, match="unknown backend"):
        get_backend("tflite")


# ------------------------------------------------------------------------------ TensorRT
def test_tensorrt_build_plan():
    assert build_plan("fp32", "dense", 10) == build_plan("fp32", "dense", 10)
    p = build_plan("fp16", "dense", 10)
    assert (p.onnx_precision, p.builder_flags, p.strongly_typed) == ("fp32", ("FP16",), False)
    p = build_plan("int8", "2:4", 10)
    assert (p.onnx_precision, p.builder_flags, p.strongly_typed) == ("int8", ("INT8", "SPARSE_WEIGHTS"), False)
    p = build_plan("fp16", "2:4", 11)  # 11.x: no FP16 flag, the graph carries fp16
    assert (p.onnx_precision, p.builder_flags, p.strongly_typed) == ("fp16", ("SPARSE_WEIGHTS",), True)
    assert build_plan("fp32", "dense", 11).builder_flags == ()
    with pytest.raises(ValueError, match="TensorRT 8"):
        build_plan("fp16", "dense", 8)
    with pytest.raises(ValueError):
        build_plan("bf16", "dense", 10)


def test_tensorrt_consumes_the_graph_of_its_plan():
    specs = [HEAD.replace(precision="fp16"), IRB.replace(precision="fp16")]
    weak = onnx.load_from_string(onnx_for_plan(specs, build_plan("fp16", "dense", 10)))
    strong = onnx.load_from_string(onnx_for_plan(specs, build_plan("fp16", "dense", 11)))
    assert {i.data_type for i in weak.graph.initializer} == {onnx.TensorProto.FLOAT}
    assert {i.data_type for i in strong.graph.initializer} == {onnx.TensorProto.FLOAT16}
    int8 = onnx.load_from_string(onnx_for_plan([IRB.replace(precision="int8")], build_plan("int8", "dense", 11)))
    ops = collections.Counter(n.op_type for n in int8.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["Conv"] == 3 and "BatchNormalization" not in ops


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_absent_is_a_clear_error():
    with pytest.raises(BackendUnavailable, match="TensorRT 10 or 11"):
        get_backend("tensorrt")


def _recording_tensorrt(log):
    """A stand-in `tensorrt` module recording what build_engine asks of it (TensorRT 10 API names)."""

    class Config:
        def set_memory_pool_limit(self, pool, size):
            log["workspace"] = size

        def set_flag(self, flag):
            log.setdefault("flags", []).append(flag)

        def create_timing_cache(self, data):
            log["cache_in"] = bytes(data)
            return "cache"

        def set_timing_cache(self, cache, ignore_mismatch):
            log["cache_set"] = cache

        def get_timing_cache(self):
            return types.SimpleNamespace(serialize=lambda: b"timings-v2")

    class Parser:
        def __init__(self, network, logger):
            pass

        def parse(self, data):
            log["onnx"] = data
            return True

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            log["network_flags"] = flags
            return "network"

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            log["verbosity"] = config.profiling_verbosity
            return b"plan"

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return ("engine", data)

    return types.SimpleNamespace(
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Builder=Builder,
        OnnxParser=Parser,
        Runtime=Runtime,
        BuilderFlag=types.SimpleNamespace(FP16="FP16", INT8="INT8", SPARSE_WEIGHTS="SPARSE_WEIGHTS"),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=1),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="ws"),
        ProfilingVerbosity=types.SimpleNamespace(DETAILED="detailed"),
    )


def test_tensorrt_engine_build_sets_the_plan(monkeypatch, tmp_path):
    log = {}
    monkeypatch.setitem(sys.modules, "tensorrt", _recording_tensorrt(log))
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"timings-v1")
    plan = build_plan("fp16", "2:4", 11)
    engine = build_engine(b"onnx-bytes", plan, str(cache), workspace_bytes=123)
    assert engine == ("engine", b"plan")
    assert log["flags"] == ["SPARSE_WEIGHTS"] and log["network_flags"] == 1 << 1 and log["workspace"] == 123
    assert log["verbosity"] == "detailed"  # the layer information then names each layer's tactic
    assert log["cache_in"] == b"timings-v1" and cache.read_bytes() == b"timings-v2"
    build_engine(b"onnx", build_plan("fp16", "dense", 10), None)
    assert log["flags"][-1] == "FP16" and log["network_flags"] == 0


@pytest.mark.gpu
def test_torch_cuda_backend_times_with_cuda_events():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here")
    backend = get_backend("torch", device="cuda", precision="fp16", policy=FAST)
    specs = [HEAD.replace(precision="fp16"), IRB.replace(precision="fp16")]
    layer, net = backend.measure(specs[1]), backend.measure_network(specs)
    assert 0 < layer.p10_ms <= layer.median_ms <= layer.p90_ms and net.median_ms > 0
    ctx = backend.context()
    assert ctx["device_kind"] == "cuda" and ctx["device"] and ctx["cuda_runtime"]


# ------------------------------------------------------------------------------ 2:4 executors
def test_onnxruntime_refuses_2_4_and_records_no_sparse_executor():
    backend = get_backend("onnxruntime", policy=FAST)
    with pytest.raises(ValueError, match="onnxruntime backend cannot execute 2:4"):
        backend.measure(IRB.replace(sparsity="2:4"))
    with pytest.raises(ValueError, match="cannot execute 2:4"):
        backend.runner([HEAD.replace(sparsity="2:4"), IRB.replace(sparsity="2:4")])
    assert "sparse_executor" not in backend.context()


# Engine layer information as IEngineInspector.get_engine_information(LayerInformationFormat.JSON) prints
# it for an engine built with ProfilingVerbosity.DETAILED and SPARSE_WEIGHTS (field names from the
# TensorRT documentation and trt-engine-explorer; tactic names of TensorRT's sparse "sptensor" kernels).
ENGINE_INFO = json.dumps(
    {
        "Layers": [
            {
                "Name": "Reformatting CopyNode for Input Tensor 0 to /0/conv/Conv",
                "LayerType": "Reformat",
                "Inputs": [
                    {
                        "Name": "input",
                        "Location": "Device",
                        "Dimensions": [1, 64, 56, 56],
                        "Format/Datatype": "Row major linear FP32",
                    }
                ],
                "Outputs": [
                    {
                        "Name": "Reformatted Input Tensor 0 to /0/conv/Conv",
                        "Location": "Device",
                        "Dimensions": [1, 64, 56, 56],
                        "Format/Datatype": "Channel major FP16 format where channel % 8 == 0",
                    }
                ],
                "ParameterType": "Reformat",
                "Origin": "REFORMAT",
                "TacticValue": "0x00000000000003e8",
                "StreamId": 0,
                "Metadata": "",
            },
            {
                "Name": "/0/conv/Conv + /0/act/Relu",
                "LayerType": "CaskConvolution",
                "Inputs": [{"Name": "Reformatted Input Tensor 0 to /0/conv/Conv", "Dimensions": [1, 64, 56, 56]}],
                "Outputs": [{"Name": "/0/act/Relu_output_0", "Dimensions": [1, 256, 56, 56]}],
                "ParameterType": "Convolution",
                "Kernel": [1, 1],
                "PaddingMode": "kEXPLICIT_ROUND_DOWN",
                "PrePadding": [0, 0],
                "PostPadding": [0, 0],
                "Stride": [1, 1],
                "Dilation": [1, 1],
                "OutMaps": 256,
                "Groups": 1,
                "Weights": {"Type": "Half", "Count": 16384},
                "Bias": {"Type": "Float", "Count": 256},
                "HasBias": 1,
                "HasReLU": 1,
                "HasSparseWeights": 1,
                "AllowSparse": 1,
                "Activation": "RELU",
                "TacticName": "sm80_xmma_fprop_sparse_conv_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize128x128x64_"
                "stage3_warpsize2x2x1_g1_sptensor16x8x32_t1r1s1",
                "TacticValue": "0x5a4b30c1e99f2d07",
                "StreamId": 0,
                "Metadata": "[ONNX Layer: /0/conv/Conv]",
            },
            {
                "Name": "/1/conv/Conv",
                "LayerType": "CaskConvolution",
                "ParameterType": "Convolution",
                "Groups": 256,
                "AllowSparse": 0,
                "TacticName": "sm80_xmma_fprop_direct_group_f16f16_f32_f32_nhwckrsc_nhwc_hmma_k64c64r3s3_"
                "stride1x1_tile16x64x32",
                "TacticValue": "0x0a8a1e7c44a1bd10",
            },
            {
                "Name": "/2/Gemm",
                "LayerType": "CaskGemmConvolution",
                "ParameterType": "Convolution",
                "AllowSparse": 1,
                "TacticName": "sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x256x64_warpgroupsize1x1x1_execute_segment_k_off_"
                "kernel_trt",
                "TacticValue": "0x0000000000020327",
            },
            {"Name": "{ForeignNode[/3/Add]}", "LayerType": "Myelin", "ParameterType": "Myelin"},
        ],
        "Bindings": ["input", "output"],
    }
)


def test_tensorrt_layer_information_names_the_sparse_tactics():
    tactics = layer_tactics(ENGINE_INFO)
    assert [t.kind for t in tactics] == ["Reformat", "Convolution", "Convolution", "Convolution", "Myelin"]
    assert [t.sparse for t in tactics] == [False, True, False, False, False]
    assert tactics[1].name == "/0/conv/Conv + /0/act/Relu" and "sptensor" in tactics[1].tactic
    assert tactics[4].tactic == ""
    assert require_sparse_tactic(tactics) == [tactics[1]]
    dense_only = [t for t in tactics if not t.sparse]
    with pytest.raises(RuntimeError, match="no sparse tactic for any of the 4 layers"):
        require_sparse_tactic(dense_only)
    with pytest.raises(ValueError, match="ProfilingVerbosity.DETAILED"):
        layer_tactics(json.dumps({"Layers": ["/0/conv/Conv", "/1/conv/Conv"], "Bindings": ["input", "output"]}))
    with pytest.raises(ValueError, match="not TensorRT engine layer information"):
        layer_tactics("Layers: none")
