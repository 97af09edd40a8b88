"""Does `advise` predict the end-to-end speedup of the conversion it advises? (issue: real 2:4 entries)

For each model: advise (table of dense and 2:4 layer timings, torch backend, pysparse24's CPU
kernels), then measure in one run, interleaved round by round, the dense model against (a) the model
converted as advised and (b) every layer with a 2:4 measurement converted (a conversion that changes
the time even when the advice is empty), and (c) an identical copy of the dense model (its "speedup"
is the run's noise floor). Measured speedup = the median over rounds of dense / variant within each
round. Predicted and measured speedups are compared; target +-10%. To say where an error comes from,
the timed layers are also timed inside the dense and the all-converted model (forward hooks) and
compared with the table's times of them alone.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/advise_validate.py --out bench_out/advise
    ... --dtype bfloat16 --models gpunet0,bert   (where 2:4 pays on a CPU without bf16 units)

Models (random weights; batch 1): GPUNet-0 (profiler.blocks over the published config, channels_last),
a BERT-base-shaped encoder (12 layers, 768 hidden, 3072 FFN, 128 tokens) and a LLaMA-7B-shaped MLP block
(4096 -> 11008 gated, 8 tokens). One table per dtype under --out (resumable: a rerun measures nothing
already there). Writes per-model advice JSON, a per-layer speedup PNG, and results.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pysparse24.torch as sparse_torch  # noqa: E402
from profiler import advise as adv  # noqa: E402
from profiler.backends import TimingPolicy, least_disturbed, measure_interleaved  # noqa: E402
from profiler.blocks import build_network  # noqa: E402
from profiler.build import BackendRef  # noqa: E402
from profiler.nas.gpunet import load_gpunet_config  # noqa: E402
from profiler.table import LatencyTable  # noqa: E402
from pysparse24.timing import wall_clock_sampler  # noqa: E402

# Per item and round: at least 3 calls and 0.3 s (a bf16 BERT call takes seconds on a CPU without bf16 units).
ROUND_POLICY = TimingPolicy(warmup_min=2, warmup_s=0.05, min_repeats=3, chunk=1, min_time_s=0.3, budget_s=1.5)
HOOKED_PASSES = 3


class EncoderLayer(nn.Module):
    """BERT-base encoder layer (post-LN), attention through F.scaled_dot_product_attention."""

    def __init__(self, hidden=768, heads=12, ffn=3072):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(hidden, hidden) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.up, self.down = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)

    def forward(self, x):
        n, t, c = x.shape
        split = lambda y: y.view(n, t, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        a = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
        x = self.ln1(x + self.o(a.transpose(1, 2).reshape(n, t, c)))
        return self.ln2(x + self.down(F.gelu(self.up(x))))


class LlamaMLP(nn.Module):
    def __init__(self, hidden=4096, inner=11008):
        super().__init__()
        self.gate, self.up = nn.Linear(hidden, inner, bias=False), nn.Linear(hidden, inner, bias=False)
        self.down = nn.Linear(inner, hidden, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


def models(which, bert_layers: int, tokens: int):
    if "gpunet0" in which:
        specs = load_gpunet_config("GPUNet-0")
        yield "GPUNet-0", build_network(specs), specs[0].in_shape, True
    if "bert" in which:
        yield (
            f"BERT-base encoder ({bert_layers} layers, 128 tokens)",
            nn.Sequential(*(EncoderLayer() for _ in range(bert_layers))),
            (1, 128, 768),
            False,
        )
    if "llama" in which:
        yield f"LLaMA-7B MLP ({tokens} tokens)", LlamaMLP(), (1, tokens, 4096), False


def convert(model, layers):
    """The model with `layers` pruned 2:4 (magnitude) and run on the sparse modules."""
    sparse = copy.deepcopy(model)
    if layers:
        sparse_torch.sparsify(sparse, "2:4", layers=layers, progress=False)
        sparse_torch.to_sparse_(sparse, layers=layers)
    return sparse


def layers_in_model(model, x, layers, passes: int = HOOKED_PASSES) -> dict[str, float]:
    """Each layer's time (ms, median over passes, summed over its calls in a pass) inside the model,
    from forward pre/post hooks: what the table's layer-alone timings are meant to predict."""
    modules = dict(model.named_modules())
    started, spent = {}, {n: [0.0] * passes for n in layers}
    pass_no = [0]

    def start(name):
        return lambda m, a: started.__setitem__(name, time.perf_counter())

    def stop(name):
        def hook(m, a, out):
            spent[name][pass_no[0]] += 1e3 * (time.perf_counter() - started[name])

        return hook

    hooks = [
        h
        for n in layers
        for h in (modules[n].register_forward_pre_hook(start(n)), modules[n].register_forward_hook(stop(n)))
    ]
    try:
        with torch.inference_mode():
            model(x)  # warm
            for pass_no[0] in range(passes):
                model(x)
    finally:
        for h in hooks:
            h.remove()
    return {n: float(np.median(v)) for n, v in spent.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench_out/advise"))
    p.add_argument("--models", default="gpunet0,bert,llama")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--bert-layers", type=int, default=12)
    p.add_argument("--tokens", type=int, default=8, help="LLaMA MLP tokens")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, args.dtype)
    table = args.out / f"table-{args.dtype}-t{args.threads}.sqlite"
    torch.manual_seed(args.seed)
    print(
        f"seed {args.seed}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; {platform.processor()}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    results = []
    for name, model, shape, channels_last in models(args.models.split(","), args.bert_layers, args.tokens):
        t0 = time.time()
        model = model.eval().to(dtype)
        x = torch.randn(shape).to(dtype)
        if channels_last:
            model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
        advice = adv.advise(model, x, table, backend_options={"threads": args.threads})
        adv.print_advice(advice)
        slug = name.split(" ")[0].lower()
        advice.write(args.out / f"advice-{slug}-{args.dtype}.json")
        adv.speedup_png(advice, args.out / f"speedup-{slug}-{args.dtype}.png", title=f"{name}, {args.dtype}")
        calls = adv.trace(model, x)
        with LatencyTable(table) as lut:
            everything = adv.summarize(
                calls,
                lut,
                threshold=1e-9,
                model_dense_ms=advice.predicted["model_dense_measured_ms"],
                rest_ms=advice.predicted["rest_ms"],
            )
            timed = adv.timed_layers(calls, lut)
            calib = lut.calibration()
        converted = {"advised": set(advice), "all": set(everything)}
        # "dense copy" is the dense model again: its measured "speedup" is this run's noise floor.
        variants = {"dense": model, "dense copy": copy.deepcopy(model), "all": convert(model, list(everything))}
        if len(advice):
            variants["advised"] = convert(model, list(advice))
        # The prediction's inputs measured in the same rounds: each timed layer alone (dense, and 2:4
        # where it has a row) and the rest of the model, so that load from other processes, which moves
        # timings taken minutes apart, cancels in a per-round prediction as in the measured speedup.
        timed_calls = [c for c in calls if c.layer in timed]
        layer_specs = {c.spec.key(): c.spec for c in timed_calls}
        layer_specs.update(
            {s.key(): s for c in timed_calls if c.layer in everything for s in [c.spec.replace(sparsity="2:4")]}
        )
        ref = BackendRef("torch", {"threads": args.threads, "precision": calls[0].spec.precision, "batch": shape[0]})
        rest_model = copy.deepcopy(model)
        with adv._backend_here(ref) as here, adv.layers_stubbed(rest_model, x, timed):  # the table's threads, pinning
            runs = {**variants, "rest": rest_model}
            samplers = []
            for m in runs.values():

                def run(m=m):
                    with torch.inference_mode():
                        m(x)

                samplers.append(wall_clock_sampler(run))
            samplers += [here.runner(spec) for spec in layer_specs.values()]
            print(f"  {len(runs)} models and {len(layer_specs)} layers alone, interleaved over {args.rounds} rounds")
            stats = measure_interleaved(samplers, args.rounds, ROUND_POLICY, seed=args.seed, log=print)
            # The timed layers inside the dense and the all-converted model, against the table's sums
            # of them alone: where a prediction error comes from (the rest is measured directly).
            in_model = {k: layers_in_model(variants[k], x, timed) for k in ("dense", "all")}
        del rest_model
        per_round = {k: np.array([s.median_ms for s in st]) for k, st in zip([*runs, *layer_specs], stats)}
        alone = {  # the same layers alone, median over the rounds
            k: sum(
                float(np.median(per_round[(c.spec.replace(sparsity="2:4") if c.layer in conv else c.spec).key()]))
                for c in timed_calls
            )
            for k, conv in (("dense", set()), ("all", converted["all"]))
        }
        in_model_vs_alone = {k: sum(in_model[k].values()) / alone[k] for k in ("dense", "all")}
        medians = {k: per_round[k].tolist() for k in variants}
        # Speedup per round (dense and the variant measured in the same round, minutes apart at most),
        # then the median over rounds: load from other processes moves both sides of a round together.
        speedup = {k: float(np.median(per_round["dense"] / per_round[k])) for k in variants}
        measured = {k: least_disturbed(s).median_ms for k, s in zip(runs, stats)}

        def same_round_prediction(kind):
            dense_sum = sum(per_round[c.spec.key()] for c in timed_calls)
            sparse_sum = sum(
                per_round[(c.spec.replace(sparsity="2:4") if c.layer in converted[kind] else c.spec).key()]
                for c in timed_calls
            )
            return [
                adv.predict(d, s, len(timed_calls), calib, r)
                for d, s, r in zip(dense_sum, sparse_sum, per_round["rest"])
            ]

        row = {
            "model": name,
            "dtype": args.dtype,
            "threads": args.threads,
            "input": list(shape),
            "advised_layers": len(advice),
            "layers": len(advice.per_layer),
            "all_layers": len(everything),
            "measured_ms_least_disturbed": measured,
            "measured_ms_per_round": medians,
            "noise_floor_speedup": speedup["dense copy"],
            "dense_predicted_vs_measured": advice.predicted["dense_ms"] / measured["dense"],
            "timed_layers_in_model_ms": in_model,
            "timed_layers_in_model_vs_alone": in_model_vs_alone,
            "predicted": {"advised": advice.predicted, "all": everything.predicted},
        }
        for kind, pred in (("advised", advice), ("all", everything)):
            m_speedup = speedup.get(kind, 1.0)  # nothing advised: the converted model is the dense model
            row[f"{kind}_speedup_measured"] = m_speedup
            row[f"{kind}_speedup_predicted"] = pred.predicted["speedup"]
            row[f"{kind}_error_pct"] = 100 * (pred.predicted["speedup"] / m_speedup - 1)
            rounds = same_round_prediction(kind)
            measured_r = per_round["dense"] / per_round[kind] if kind in variants else np.ones(args.rounds)
            predicted_r = np.array([r["speedup"] for r in rounds])
            row[f"{kind}_same_round_predicted"] = float(np.median(predicted_r))
            row[f"{kind}_per_round"] = {"measured": measured_r.tolist(), "predicted": predicted_r.tolist()}
            row[f"{kind}_same_round_error_pct"] = float(100 * np.median(predicted_r / measured_r - 1))
        dense_r = np.array([r["dense_ms"] for r in same_round_prediction("all")])
        row["same_round_dense_predicted_vs_measured"] = float(np.median(dense_r / per_round["dense"]))
        row["same_round_rest_ms"] = float(np.median(per_round["rest"]))
        row["seconds"] = time.time() - t0
        results.append(row)
        print(
            f"{name}: dense {measured['dense']:.3f} ms (predicted {advice.predicted['dense_ms']:.3f}, of which rest "
            f"{advice.predicted['rest_ms']:.3f}; noise floor {row['noise_floor_speedup']:.3f}x); timed layers in "
            f"the model / alone: dense {in_model_vs_alone['dense']:.3f}, all converted {in_model_vs_alone['all']:.3f}; "
            f"advised {len(advice)} layers: measured {row['advised_speedup_measured']:.3f}x, predicted "
            f"{row['advised_speedup_predicted']:.3f}x ({row['advised_error_pct']:+.1f}%); all {len(everything)}: "
            f"measured {row['all_speedup_measured']:.3f}x, predicted {row['all_speedup_predicted']:.3f}x "
            f"({row['all_error_pct']:+.1f}%); same-round prediction: advised {row['advised_same_round_predicted']:.3f}x "
            f"({row['advised_same_round_error_pct']:+.1f}%), all {row['all_same_round_predicted']:.3f}x "
            f"({row['all_same_round_error_pct']:+.1f}%), dense predicted/measured "
            f"{row['same_round_dense_predicted_vs_measured']:.3f}",
            flush=True,
        )
        del variants, model
    # One file per (models, dtype, threads): runs of other models into the same --out keep theirs.
    out = args.out / f"results-{args.models.replace(',', '-')}-{args.dtype}-t{args.threads}.json"
    out.write_text(
        json.dumps(
            {
                "machine": platform.processor(),
                "torch": torch.__version__,
                "seed": args.seed,
                "load_average": os.getloadavg()[0],
                "results": results,
            },
            indent=1,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
