"""End to end, batch 1: whole models run 2:4 sparse (pysparse24.torch.to_sparse_) against their dense
twin (the same pruned weights in the stock torch layers), same dtype, same threads, one run.

    python benchmarks/bench_models.py                     # all models, fp32 and bf16 (minutes)
    python benchmarks/bench_models.py --quick             # reduced models, short timing (the demo)
    python benchmarks/bench_models.py --models llama --dtypes fp32,bf16 --json out.json

(a) GPUNet-0 (profiler.blocks.build_network of profiler.nas.gpunet.load_gpunet_config("GPUNet-0")) at
    its resolution, channels_last, 2:4 on every eligible conv (sparsify's rule); depthwise stays dense.
(b) a BERT-base-shaped encoder (12 layers, hidden 768, 12 heads, FFN 3072; random weights), 128 tokens.
(c) a LLaMA-7B-shaped MLP block (SwiGLU, 4096 -> 11008 -> 4096) at 1 and 8 tokens.
Targets (issue 14): sparse/dense >= 1.3x for (b) and (c), >= 1.2x for (a).

The dense twin is the model with every eligible weight pruned 2:4 (sparsify's rule, by magnitude);
the sparse model is a copy of it after `to_sparse_`, so both compute the same function and the
table's last column checks that they do. Timings from a shared machine are not final: re-run it quietly.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# torch and pysparse24 each have their own OpenMP runtime; idle threads of one spinning while the
# other works would steal its cores. Set before either runtime loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

# pysparse24 (and profiler, which imports it) are imported after --threads has set OMP_NUM_THREADS:
# pysparse24's kernels run on their own OpenMP runtime, which reads it once, when pysparse24._C loads.

# Table precision names (pysparse24.dtypes maps them to torch dtypes, once pysparse24 may load).
DTYPES = ("fp32", "bf16")
TARGETS = {"gpunet": 1.2, "bert": 1.3, "llama": 1.3}
# Largest |sparse - dense| / max |dense| accepted as "the same function" (the summation orders differ).
AGREEMENT = {torch.float32: 1e-4, torch.bfloat16: 5e-2}


def timing_policy(quick: bool):
    from pysparse24.timing import TimingPolicy

    if quick:
        return TimingPolicy(warmup_min=2, warmup_s=0.1, min_repeats=5, min_time_s=0.2, budget_s=1.0)
    return TimingPolicy(warmup_min=3, warmup_s=0.5, min_repeats=10, min_time_s=1.0, budget_s=10.0)


# ---- the models --------------------------------------------------------------------------------


class EncoderLayer(nn.Module):
    """A BERT layer (post-norm): self-attention and a GELU FFN, every projection an nn.Linear."""

    def __init__(self, hidden: int = 768, heads: int = 12, ffn: int = 3072):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(hidden, hidden) for _ in range(4))
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.up, self.down = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)

    def forward(self, x):
        b, t, h = x.shape
        q, k, v = (proj(x).view(b, t, self.heads, -1).transpose(1, 2) for proj in (self.query, self.key, self.value))
        attention = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, h)
        x = self.norm1(x + self.out(attention))
        return self.norm2(x + self.down(F.gelu(self.up(x))))


class LlamaMLP(nn.Module):
    """LLaMA's SwiGLU MLP: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, hidden: int = 4096, intermediate: int = 11008):
        super().__init__()
        self.gate, self.up = nn.Linear(hidden, intermediate, bias=False), nn.Linear(hidden, intermediate, bias=False)
        self.down = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


def gpunet(quick: bool):
    from profiler.blocks import build_network
    from profiler.nas.gpunet import load_gpunet_config

    specs = load_gpunet_config("GPUNet-0")
    if quick:  # the stem and the first stages only
        specs = specs[:6]
    shape = specs[0].in_shape
    return build_network(specs).eval(), [
        (f"{shape[2]}x{shape[3]}", lambda: torch.randn(shape).to(memory_format=torch.channels_last))
    ]


def bert(quick: bool):
    model = nn.Sequential(*(EncoderLayer() for _ in range(2 if quick else 12))).eval()
    return model, [("128 tokens", lambda: torch.randn(1, 128, 768))]


def llama(quick: bool):
    model = LlamaMLP().eval()
    return model, [(f"{n} token{'s' * (n > 1)}", lambda n=n: torch.randn(1, n, 4096)) for n in (1, 8)]


MODELS = {"gpunet": gpunet, "bert": bert, "llama": llama}


# ---- one comparison ------------------------------------------------------------------------------


@dataclass
class Row:
    model: str
    dtype: str
    input: str
    layers_2to4: str  # converted / Linear+Conv layers
    dense_ms: float
    sparse_ms: float
    speedup: float
    target: float
    max_rel_diff: float  # max |sparse - dense| / max |dense|
    agrees: bool


def prune_eligible_(model: nn.Module) -> None:
    """Prune every layer `to_sparse_` can run 2:4 (sparsify's rule) by magnitude, in place."""
    import pysparse24
    from pysparse24.torch.modules import ineligibility

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)) and ineligibility(module) is None:
                module.weight.copy_(pysparse24.prune(module.weight, dim=1))


def twins(name: str, dtype: torch.dtype, quick: bool):
    """(dense twin, sparse model, conversion report, inputs): the same pruned weights in both; the
    dense twin's convs take channels_last weights (oneDNN's fastest path for channels_last input)."""
    from pysparse24.torch import to_sparse_

    torch.manual_seed(0)
    dense, inputs = MODELS[name](quick)
    dense = dense.to(dtype)
    prune_eligible_(dense)
    sparse = copy.deepcopy(dense)
    report = to_sparse_(sparse)
    return dense.to(memory_format=torch.channels_last), sparse, report, inputs


def compare(name: str, dtype_name: str, quick: bool, rounds: int) -> list[Row]:
    from pysparse24.dtypes import torch_dtype
    from pysparse24.timing import least_disturbed, measure_interleaved, wall_clock_sampler

    dtype = torch_dtype(dtype_name)
    dense, sparse, report, inputs = twins(name, dtype, quick)
    rows = []
    for label, make in inputs:
        x = make().to(dtype)
        with torch.inference_mode():
            want, got = dense(x).float(), sparse(x).float()
            rel = ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()
            samplers = [wall_clock_sampler(lambda model=model: model(x)) for model in (dense, sparse)]
            stats = measure_interleaved(samplers, rounds, timing_policy(quick))
        dense_ms, sparse_ms = (least_disturbed(s).median_ms for s in stats)
        rows.append(
            Row(
                name,
                dtype_name,
                label,
                f"{len(report.converted)}/{len(report)}",
                dense_ms,
                sparse_ms,
                dense_ms / sparse_ms,
                TARGETS[name],
                rel,
                rel <= AGREEMENT[dtype],
            )
        )
    return rows


def print_table(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="end to end, batch 1: 2:4 sparse (to_sparse_) vs dense twin")
    for column in (
        "model",
        "dtype",
        "input",
        "2:4 layers",
        "dense ms",
        "sparse ms",
        "sparse/dense",
        "target",
        "max rel diff",
    ):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.model,
            r.dtype,
            r.input,
            r.layers_2to4,
            f"{r.dense_ms:.3f}",
            f"{r.sparse_ms:.3f}",
            f"{r.speedup:.2f}x",
            f"{r.target:.1f}x",
            f"{r.max_rel_diff:.1e}" + ("" if r.agrees else " MISMATCH"),
        )
    Console(width=140).print(table)


def parse_list(text: str, allowed) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if not items or unknown:
        raise ValueError(f"expected a comma-separated list of {', '.join(allowed)}; got {text!r}")
    return items


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gpunet,bert,llama", help="comma-separated: gpunet, bert, llama")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="threads for torch and for the sparse kernels (default: torch's, one per core)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="interleaved dense/sparse rounds, the least disturbed kept (default 1 quick, 3 full)",
    )
    parser.add_argument("--quick", action="store_true", help="reduced models and short timing (for the demo)")
    parser.add_argument("--json", type=Path, help="write the rows and the machine here")
    args = parser.parse_args(argv)
    try:
        models, dtypes = parse_list(args.models, MODELS), parse_list(args.dtypes, DTYPES)
        if args.threads < 1 or (args.rounds is not None and args.rounds < 1):
            raise ValueError("--threads and --rounds must be positive")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    assert "pysparse24._C" not in sys.modules, "pysparse24 was loaded before its thread count was set"
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    rounds = args.rounds or (1 if args.quick else 3)
    rows = []
    for name in models:
        for dtype in dtypes:
            print(f"{name} {dtype} ...", file=sys.stderr, flush=True)
            rows += compare(name, dtype, args.quick, rounds)
    print_table(rows)
    if args.json:
        from profiler.backends.base import cpu_context

        machine = cpu_context(args.threads) | {"torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"machine": machine, "quick": args.quick, "rows": [asdict(r) for r in rows]}, indent=1)
        )
    return 0 if all(r.agrees for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
