"""PyTorch eager: CPU (wall clock per call) or CUDA (CUDA events per call).

Dense specs run the blocks as torch runs them; 2:4 specs run with every eligible conv/linear of the
block swapped for pysparse24's sparse modules (pysparse24.torch.to_sparse_: the library's CPU 2:4
kernels, cuSPARSELt on CUDA), so a 2:4 row is a real sparse timing. A 2:4 block in which no layer
can run sparse is refused (its timing would be a dense one under a sparse key). 4-D activations
are channels_last, the layout in which oneDNN's convolutions and the sparse convs are fastest.
"""

from __future__ import annotations

import torch

from pysparse24 import dtypes
from pysparse24.timing import cuda_event_sampler, wall_clock_sampler

from ..blocks import build_network, input_shape_of, random_input
from .base import Backend, BackendUnavailable, cpu_context, gpu_context, pin_cpus

DTYPES = {dtypes.precision_name(t): t for t in (torch.float32, torch.float16, torch.bfloat16)}


def sparse_twin_(module: torch.nn.Module) -> list:
    """Convert the block's eligible layers in place; the conversions (an error when there are none)."""
    from pysparse24.torch import to_sparse_

    report = to_sparse_(module)
    if not report.converted:
        reasons = "; ".join(sorted({f"{r.name or r.kind}: {r.skipped}" for r in report.skipped})) or "no conv/linear"
        raise ValueError(
            f"no layer of this 2:4 block can run sparse ({reasons}): refusing to time it dense under a 2:4 key"
        )
    return report.converted


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, precision="fp32", batch=1, device="auto", threads=1, cpus="auto", policy=None):
        """threads: torch intra-op threads; cpus: pin the process ('auto': `threads` CPUs; None: don't)."""
        super().__init__(precision, batch, policy)
        if precision not in DTYPES:
            raise ValueError(
                f"the torch backend runs {'/'.join(DTYPES)} eager modules; int8 is measured with "
                "onnxruntime or tensorrt (explicit Q/DQ graphs)"
            )
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("device='cuda' but torch sees no CUDA GPU")
        self.device = "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
        if int(threads) < 1:
            raise ValueError("threads must be >= 1")
        self.threads = int(threads)
        torch.set_num_threads(self.threads)  # process-wide: fixed for every measurement
        self.pinned = pin_cpus(self.threads, cpus)
        self.sparse_executor = "pysparse24 " + ("cusparselt" if self.device == "cuda" else "cpu kernels")

    def _runner(self, specs):
        dtype = DTYPES[self.precision]
        module = build_network(specs).to(self.device, dtype)
        x = torch.from_numpy(random_input(input_shape_of(specs[0]), seed=1)).to(self.device, dtype)
        if x.dim() == 4:
            module, x = module.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
        # A network mixing dense and 2:4 blocks: to_sparse_ converts exactly the pruned layers.
        converted = sparse_twin_(module) if any(s.sparsity == "2:4" for s in specs) else []

        def run():
            with torch.inference_mode():
                module(x)

        sample = cuda_event_sampler(run) if self.device == "cuda" else wall_clock_sampler(run)
        sample.sparse_layers = converted
        return sample

    def _context(self):
        info = gpu_context() if self.device == "cuda" else cpu_context(self.threads)
        info.update(
            {
                "runtime": f"torch {torch.__version__}",
                "device_kind": self.device,
                "threads": self.threads,
                "pinned": self.pinned is not None,
                "memory_format": "channels_last",
            }
        )
        return info
