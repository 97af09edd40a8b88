"""TensorRT 10/11: ONNX -> engine (precision, SPARSE_WEIGHTS, timing cache) -> median GPU compute
time from CUDA events around execute_async_v3, as trtexec's "GPU Compute Time" reports it.

TensorRT is imported lazily; without it (or without a GPU) constructing the backend raises
BackendUnavailable. The decisions that do not need TensorRT - which ONNX graph it consumes and
which builder flags it sets - are the pure function build_plan(), tested everywhere.

Precision, by TensorRT major version:
- 10.x ("weak typing"): an fp32 graph plus the FP16 builder flag lets TensorRT pick fp16 kernels;
  int8 is explicit quantization (a Q/DQ graph from export_onnx) with the INT8 flag; no calibrator.
- 11.x: the weak-typing flags (FP16, INT8, ...) are removed and every network is strongly typed,
  so the precision lives in the graph: an fp16 graph for fp16, the Q/DQ graph for int8.
Sparsity "2:4" adds SPARSE_WEIGHTS (weights are pruned 2:4 along input channels by the blocks).
TensorRT then decides per layer, silently, whether a sparse kernel is faster; the engine's layer
information (IEngineInspector, JSON, built with ProfilingVerbosity.DETAILED) names each layer's
tactic, and layer_tactics() reads which ones are sparse. A 2:4 network for which TensorRT picked
no sparse tactic at all is refused (its timing would be a dense one under a sparse key); the
tactics of a measured network stay on its runner (`sample.layer_tactics`).

Not run here: TensorRT cannot be installed on the development machines. The JSON parsing is tested
on a sample written after the TensorRT documentation's format; the rest is written against the
TensorRT 10/11 Python API.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from pysparse24.timing import cuda_event_sampler

from ..blocks import export_onnx
from ..spec import SPARSITIES
from .base import Backend, BackendUnavailable, gpu_context

INSTALL_HINT = (
    "the tensorrt backend needs TensorRT 10 or 11 and a CUDA GPU: "
    "pip install tensorrt --extra-index-url https://pypi.nvidia.com (with torch built for CUDA)"
)


TENSORRT_PRECISIONS = ("fp32", "fp16", "int8")  # the graphs export_onnx writes


@dataclass(frozen=True)
class BuildPlan:
    onnx_precision: str  # the precision export_onnx bakes into the graph TensorRT parses
    builder_flags: tuple[str, ...]  # names of trt.BuilderFlag members to set
    strongly_typed: bool  # create the network with NetworkDefinitionCreationFlag.STRONGLY_TYPED


def build_plan(precision: str, sparsity: str, trt_major: int) -> BuildPlan:
    """What to export and which flags to set, for a TensorRT major version."""
    if precision not in TENSORRT_PRECISIONS or sparsity not in SPARSITIES:
        raise ValueError(f"precision must be in {TENSORRT_PRECISIONS} and sparsity in {SPARSITIES}")
    if trt_major < 10:
        raise ValueError(f"TensorRT {trt_major} is not supported: use TensorRT 10 or 11")
    sparse = ("SPARSE_WEIGHTS",) if sparsity == "2:4" else ()
    if trt_major == 10:
        flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8",)}[precision]
        return BuildPlan("int8" if precision == "int8" else "fp32", flags + sparse, False)
    return BuildPlan(precision, sparse, True)


def onnx_for_plan(specs, plan: BuildPlan) -> bytes:
    """The ONNX graph TensorRT parses for these specs: the same blocks, exported at the plan's
    graph precision (e.g. fp32 for TensorRT 10 + FP16 flag)."""
    return export_onnx([s.replace(precision=plan.onnx_precision) for s in specs])


@dataclass(frozen=True)
class LayerTactic:
    name: str
    kind: str  # ParameterType ("Convolution", "Gemm", ...) or LayerType ("Reformat", "Myelin", ...)
    tactic: str  # the kernel TensorRT chose ("" when the layer information does not say)
    sparse: bool  # a sparse tensor-core kernel (TensorRT names them "..._sparse_..." / "..._sptensor...")


_SPARSE_TACTIC_MARKERS = ("sparse", "sptensor")


def layer_tactics(engine_information: str) -> list[LayerTactic]:
    """Each engine layer's chosen tactic, from IEngineInspector.get_engine_information(JSON)."""
    try:
        layers = json.loads(engine_information)["Layers"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not TensorRT engine layer information (JSON with a 'Layers' list): {exc!r}") from None
    tactics = []
    for layer in layers:
        if not isinstance(layer, dict):  # ProfilingVerbosity.LAYER_NAMES_ONLY: names without tactics
            raise ValueError(
                "the engine's layer information has names only: build it with "
                "ProfilingVerbosity.DETAILED to see the tactics"
            )
        tactic = str(layer.get("TacticName", ""))
        tactics.append(
            LayerTactic(
                name=str(layer.get("Name", "")),
                kind=str(layer.get("ParameterType") or layer.get("LayerType", "")),
                tactic=tactic,
                sparse=any(m in tactic.lower() for m in _SPARSE_TACTIC_MARKERS),
            )
        )
    return tactics


def require_sparse_tactic(tactics: list[LayerTactic]) -> list[LayerTactic]:
    """The sparse layers of a 2:4 engine; an error when TensorRT chose dense kernels everywhere."""
    sparse = [t for t in tactics if t.sparse]
    if not sparse:
        raise RuntimeError(
            f"TensorRT picked no sparse tactic for any of the {len(tactics)} layers of this 2:4 network "
            f"(SPARSE_WEIGHTS set; dense kernels were faster or the layers not eligible): refusing to "
            f"store a dense timing under a 2:4 key"
        )
    return sparse


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(INSTALL_HINT) from exc
    return trt


def build_engine(onnx_bytes: bytes, plan: BuildPlan, timing_cache: str | None = None, workspace_bytes: int = 1 << 30):
    """Parse the ONNX graph and build a deserialised ICudaEngine; the timing cache file (if given)
    is read before and rewritten after the build, so repeated builds skip kernel timing."""
    trt = _import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    creation = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(creation)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer information names the tactics
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    cache_bytes = b""
    if timing_cache and os.path.exists(timing_cache):
        with open(timing_cache, "rb") as f:
            cache_bytes = f.read()
    config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build an engine (see the TensorRT log above)")
    if timing_cache:
        tmp = f"{timing_cache}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(memoryview(config.get_timing_cache().serialize()))
        os.replace(tmp, timing_cache)  # atomic: a killed build never leaves half a cache
    return trt.Runtime(logger).deserialize_cuda_engine(serialized)


class TensorRTBackend(Backend):
    name = "tensorrt"
    sparse_executor = "tensorrt SPARSE_WEIGHTS"

    def __init__(self, precision="fp16", batch=1, timing_cache=None, workspace_bytes=1 << 30, policy=None):
        super().__init__(precision, batch, policy)
        self._trt = _import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailable("the tensorrt backend needs a CUDA GPU visible to torch")
        self.major = int(self._trt.__version__.split(".")[0])
        self.timing_cache = timing_cache
        self.workspace_bytes = int(workspace_bytes)

    def _runner(self, specs):
        import numpy as np
        import torch

        plan = build_plan(self.precision, specs[0].sparsity, self.major)
        engine = build_engine(onnx_for_plan(specs, plan), plan, self.timing_cache, self.workspace_bytes)
        tactics = layer_tactics(
            engine.create_engine_inspector().get_engine_information(self._trt.LayerInformationFormat.JSON)
        )
        if specs[0].sparsity == "2:4":
            require_sparse_tactic(tactics)
        context = engine.create_execution_context()
        stream = torch.cuda.Stream()
        buffers = []  # keep the tensors alive as long as the runner
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(engine.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, self._trt.nptype(engine.get_tensor_dtype(name)))).dtype
            is_input = engine.get_tensor_mode(name) == self._trt.TensorIOMode.INPUT
            t = (
                torch.randn(shape, device="cuda").to(dtype)
                if is_input
                else torch.full(shape, float("nan"), device="cuda").to(dtype)
            )
            context.set_tensor_address(name, t.data_ptr())
            buffers.append(t)

        def run():
            context.execute_async_v3(stream.cuda_stream)

        sample = cuda_event_sampler(run, stream)
        sample.keepalive = (engine, context, buffers)
        sample.layer_tactics = tactics
        return sample

    def _context(self):
        return {
            **gpu_context(),
            "runtime": f"tensorrt {self._trt.__version__}",
            "typing": "strong" if self.major >= 11 else "weak",
        }
