"""ONNX Runtime: the embedded default. CPU here; the CUDA execution provider when present.

Timed as ORT users time it: wall clock around InferenceSession.run (the CUDA EP synchronises before
run() returns). Thread counts are always set explicitly (never "all cores") and recorded.
"""

from __future__ import annotations

from pysparse24.timing import wall_clock_sampler

from ..blocks import export_onnx, input_shape_of, random_input
from .base import Backend, BackendUnavailable, cpu_context, gpu_context, pin_cpus


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self, precision="fp32", batch=1, device="auto", threads=1, inter_op_threads=1, cpus="auto", policy=None
    ):
        """threads: ORT intra-op threads (1 = the calling thread does all the work, no pool);
        cpus: pin the process to these CPUs ('auto': `threads` CPUs; None: no pinning)."""
        super().__init__(precision, batch, policy)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable("the onnxruntime backend needs `pip install onnxruntime`") from exc
        self._ort = ort
        available = ort.get_available_providers()
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise BackendUnavailable(f"device='cuda' needs onnxruntime-gpu; providers here: {available}")
        use_cuda = device == "cuda" or (device == "auto" and "CUDAExecutionProvider" in available)
        self.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        if precision == "fp16" and not use_cuda:
            raise ValueError(
                "fp16 on ONNX Runtime needs the CUDA execution provider "
                "(the CPU provider has no fp16 convolutions); use fp32 or int8 on CPU"
            )
        if int(threads) < 1 or int(inter_op_threads) < 1:
            raise ValueError("threads and inter_op_threads must be >= 1")
        self.intra_op_threads = int(threads)
        self.inter_op_threads = int(inter_op_threads)
        self.pinned = pin_cpus(self.intra_op_threads, cpus)

    def _session_options(self):
        so = self._ort.SessionOptions()
        so.intra_op_num_threads = self.intra_op_threads
        so.inter_op_num_threads = self.inter_op_threads
        so.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        return so

    def _runner(self, specs):
        session = self._ort.InferenceSession(export_onnx(specs), self._session_options(), providers=self.providers)
        dtype = "float16" if self.precision == "fp16" else "float32"
        feed = {"input": random_input(input_shape_of(specs[0]), seed=1, dtype=dtype)}
        if self.providers[0] == "CUDAExecutionProvider":
            # Keep input and output on the device, as a GPU deployment would.
            binding = session.io_binding()
            binding.bind_ortvalue_input("input", self._ort.OrtValue.ortvalue_from_numpy(feed["input"], "cuda", 0))
            binding.bind_output("output", "cuda")
            return wall_clock_sampler(lambda: session.run_with_iobinding(binding))
        return wall_clock_sampler(lambda: session.run(None, feed))

    def _context(self):
        on_gpu = self.providers[0] == "CUDAExecutionProvider"
        info = gpu_context() if on_gpu else cpu_context(self.intra_op_threads)
        info.update(
            {
                "runtime": f"onnxruntime {self._ort.__version__}",
                "provider": self.providers[0],
                "intra_op_threads": self.intra_op_threads,
                "inter_op_threads": self.inter_op_threads,
                "pinned": self.pinned is not None,
            }
        )
        info.setdefault("threads", self.intra_op_threads)
        return info
