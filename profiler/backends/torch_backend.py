"""PyTorch eager: CPU (wall clock per call) or CUDA (CUDA events per call)."""
from __future__ import annotations

import torch

from ..blocks import build_network, random_input
from .base import Backend, BackendUnavailable, cpu_context, gpu_context, pin_cpus
from .timing import cuda_event_sampler, wall_clock_sampler


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, precision="fp32", batch=1, device="auto", threads=1, cpus="auto", policy=None):
        """threads: torch intra-op threads; cpus: pin the process ('auto': `threads` CPUs; None: don't)."""
        super().__init__(precision, batch, policy)
        if precision == "int8":
            raise ValueError("the torch backend runs fp32/fp16 eager modules; int8 is measured with "
                             "onnxruntime or tensorrt (explicit Q/DQ graphs)")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("device='cuda' but torch sees no CUDA GPU")
        self.device = "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
        if int(threads) < 1:
            raise ValueError("threads must be >= 1")
        self.threads = int(threads)
        torch.set_num_threads(self.threads)   # process-wide: fixed for every measurement
        self.pinned = pin_cpus(self.threads, cpus)

    def _runner(self, specs):
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        module = build_network(specs).to(self.device, dtype)
        x = torch.from_numpy(random_input(specs[0].in_shape, seed=1)).to(self.device, dtype)

        def run():
            with torch.inference_mode():
                module(x)
        if self.device == "cuda":
            return cuda_event_sampler(run)
        return wall_clock_sampler(run)

    def _context(self):
        info = gpu_context() if self.device == "cuda" else cpu_context(self.threads)
        info.update({"runtime": f"torch {torch.__version__}", "device_kind": self.device,
                     "threads": self.threads, "pinned": self.pinned is not None})
        return info
