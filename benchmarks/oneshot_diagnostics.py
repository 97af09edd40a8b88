"""Why Wanda and SparseGPT fall short of their targets in oneshot_eval.py: the experiments behind
RESULTS.md's "One-shot pruning: diagnostics". Same models, split and metrics as oneshot_eval.py.

MiniLM (--only minilm):
- one layer type at a time: 2:4 on the 6 queries only, keys only, ... (which linears cost the most);
- more calibration text: the 256 calibration sentences plus `--more` others from
  data/stdlib_more_sentences.txt (other sentences of the same docstrings, none of them held out);
- Wanda with the norms of the dense model's activations (every layer calibrated before any is pruned)
  instead of the pruned model's (the method as implemented and as in the paper's code);
- how close the dense model's retrieval is to ties (how fragile top-1 agreement is);
- two corrections outside the published methods (`compensated`): bias correction against the dense
  model's mean outputs, and SparseGPT on a least-squares refit to the dense outputs (--compensation-only).
Digits CNN (--only digits), per seed: one-shot accuracy per method and pruned layer, Wanda with the
dense model's norms, and each method after re-estimating the BatchNorm statistics on the calibration images.

    python benchmarks/oneshot_diagnostics.py --out demo_out/oneshot
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import oneshot_eval as ev  # noqa: E402
from torch_digits_demo import accuracy  # noqa: E402

import pysparse24  # noqa: E402
import pysparse24.torch as sparse_torch  # noqa: E402
from pysparse24.torch import oneshot  # noqa: E402

LAYER_TYPES = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "layer.N.output.dense",  # the FFN output (1536 -> 384)
)


# (label, method, bias correction, least-squares refit to the dense outputs): see `compensated`.
COMPENSATIONS = (
    ("magnitude + bias correction", "magnitude", True, False),
    ("wanda + bias correction", "wanda", True, False),
    ("sparsegpt + bias correction", "sparsegpt", True, False),
    ("sparsegpt on the refit to dense outputs", "sparsegpt", False, True),
    ("sparsegpt on the refit + bias correction", "sparsegpt", True, True),
)


def of_type(names: list[str], kind: str) -> list[str]:
    if kind == "layer.N.output.dense":
        return [n for n in names if n.endswith(".output.dense") and ".attention." not in n]
    return [n for n in names if n.endswith(kind)]


def prune(model, method: str, calibration, layers=None) -> float:
    """sparsify 2:4 in place; returns seconds."""
    started = time.perf_counter()
    sparse_torch.sparsify(
        model,
        "2:4",
        method=method,
        layers=layers,
        progress=False,
        calibration=None if method == "magnitude" else calibration,
    )
    return time.perf_counter() - started


def wanda_on_dense_norms(model, calibration, layers: list[str]) -> None:
    """Wanda's masks from the dense model's activations: the masks are recorded, not attached, while
    calibrating (so no layer sees a pruned one), then applied (weights zeroed, no masks kept)."""
    modules = dict(model.named_modules())
    keep = {}
    oneshot.prune_in_order(
        model,
        [(name, modules[name]) for name in layers],
        "wanda",
        calibration,
        2,
        4,
        lambda name, module, mask, weight: keep.__setitem__(name, mask),
        progress=False,
    )
    with torch.no_grad():
        for name, mask in keep.items():
            modules[name].weight.mul_(mask)


def compensated(model, method: str, batches: list[dict], names: list[str], bias: bool, refit: bool) -> None:
    """Prune the named Linears 2:4 layer by layer as sparsify does, plus two corrections from the
    literature that are not part of Wanda or SparseGPT, to measure what they would add:
    - bias: each layer's bias absorbs its mean output shift against the dense model,
      b += W mu_dense - W' mu (bias correction, Nagel et al. 2019, with the dense model's mean input);
    - refit (sparsegpt only): W is first refitted by least squares so that X W^T reproduces the dense
      model's output X_dense W^T (asymmetric calibration, as in GPTAQ), then SparseGPT prunes the refit.
    Masks are multiplied into the weights (none kept). Assumes each Linear runs once per batch."""
    modules = dict(model.named_modules())
    seen: dict[str, list] = {name: [] for name in names}
    done: set[str] = set()

    def record(name, args):
        if name not in done:  # the execution-order pass (dense model), then the layer's own pass
            seen[name].append(args[0].reshape(-1, args[0].shape[-1]).double())

    handles = [modules[n].register_forward_pre_hook(lambda _, args, n=n: record(n, args)) for n in names]

    def apply(name, module, keep, new_weight):
        dense_x, x = torch.cat(seen[name][: len(batches)]), torch.cat(seen[name][-len(batches) :])
        W = module.weight.detach().double()
        if method == "magnitude":
            keep = pysparse24.mask(W.float(), n=2, m=4, dim=1)
        if refit:
            H = x.T @ x
            damping = 0.01 * H.diagonal().mean() * torch.eye(H.shape[0], dtype=H.dtype)
            fitted = torch.linalg.solve(H + damping, x.T @ dense_x @ W.T).T
            new_weight, keep, _ = oneshot.sparsegpt_prune(fitted, H * (2 / x.shape[0]), 2, 4)
        new = (W * keep if new_weight is None else new_weight.double()).to(module.weight.dtype)
        with torch.no_grad():
            if bias:
                module.bias.add_((W @ dense_x.mean(0) - new.double() @ x.mean(0)).to(module.bias.dtype))
            module.weight.copy_(new)
        done.add(name)
        del seen[name][:]

    try:
        oneshot.prune_in_order(
            model,
            [(name, modules[name]) for name in names],
            "wanda" if method == "magnitude" else method,
            batches,
            2,
            4,
            apply,
            progress=False,
        )
    finally:
        for handle in handles:
            handle.remove()


def layer_inputs(model, names: list[str], batches: list[dict]) -> dict[str, torch.Tensor]:
    """Each named Linear's inputs over `batches` (no padding in them), as (tokens, in_features) float64."""
    modules = dict(model.named_modules())
    seen: dict[str, list] = {name: [] for name in names}
    handles = [
        modules[name].register_forward_pre_hook(
            lambda module, args, name=name: seen[name].append(args[0].reshape(-1, args[0].shape[-1]).double())
        )
        for name in names
    ]
    with torch.no_grad():
        for batch in batches:
            model(**batch)
    for handle in handles:
        handle.remove()
    return {name: torch.cat(x) for name, x in seen.items()}


def reconstruction_errors(dense, tokenizer, calibration: list[str], held_out: list[str], names: list[str]) -> dict:
    """Each Linear pruned alone, all of them fed the dense model's activations: relative output error
    ||X W^T - X W'^T|| / ||X W^T|| on the calibration tokens (what the methods fit) and on held-out
    tokens (what they generalize to), per layer type."""
    fit = layer_inputs(dense, names, ev.calibration_batches(tokenizer, calibration))
    test = layer_inputs(dense, names, ev.calibration_batches(tokenizer, held_out))
    modules = dict(dense.named_modules())
    errors: dict[str, dict[str, list]] = {}
    for name in names:
        W = modules[name].weight.detach().double()
        X = fit[name]
        pruned = {
            "magnitude": W * pysparse24.mask(W.float(), n=2, m=4, dim=1),
            "wanda": W * oneshot.wanda_mask(W, X.square().sum(0).sqrt(), 2, 4),
            "sparsegpt": oneshot.sparsegpt_prune(W, 2 * X.T @ X / X.shape[0], 2, 4)[0],
        }
        kind = next(k for k in LAYER_TYPES if name in of_type(names, k))
        for method, Wp in pruned.items():
            row = errors.setdefault(kind, {}).setdefault(method, {"calibration": [], "held_out": []})
            for split, inputs in (("calibration", X), ("held_out", test[name])):
                row[split].append(((inputs @ (W - Wp).T).norm() / (inputs @ W.T).norm()).item())
    return {
        kind: {method: {split: float(np.mean(v)) for split, v in row.items()} for method, row in rows.items()}
        for kind, rows in errors.items()
    }


def run_minilm(args) -> dict:
    sentences = ev.SENTENCES.read_text().splitlines()
    order = np.random.default_rng(args.split_seed).permutation(len(sentences))
    calibration = [sentences[i] for i in order[: args.calibration]]
    held_out = [sentences[i] for i in order[args.calibration :]]
    more = ev.MORE_SENTENCES.read_text().splitlines()
    assert not set(more) & set(held_out)
    tokenizer, dense = ev.load_minilm()
    names = [n for n, m in dense.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("encoder.layer.")]
    reference = ev.embed(dense, tokenizer, held_out)
    batches = ev.calibration_batches(tokenizer, calibration)

    def measure(model, seconds) -> dict:
        embeddings = ev.embed(model, tokenizer, held_out)
        top1, top5 = ev.retrieval_agreement(reference, embeddings)
        row = {"cosine_mean": (embeddings * reference).sum(1).double().mean().item(), "top1": top1, "top5": top5}
        return row | {"seconds": seconds}

    def show(label, row):
        print(
            f"  {label}: cosine {row['cosine_mean']:.4f}, top-1 {100 * row['top1']:.1f}%, "
            f"top-5 {100 * row['top5']:.1f}% ({row['seconds']:.0f} s)"
        )

    results = {"layer_types": {}, "more_calibration": {}}
    results["reconstruction"] = reconstruction_errors(dense, tokenizer, calibration, held_out, names)
    print("MiniLM layer reconstruction error (each layer alone, dense inputs), mean per type, calibration / held-out:")
    for kind, rows in results["reconstruction"].items():
        print(f"  {kind}: " + ", ".join(f"{m} {r['calibration']:.3f} / {r['held_out']:.3f}" for m, r in rows.items()))
    if args.reconstruction_only:
        return results
    for label, method, bias, refit in COMPENSATIONS:
        model = copy.deepcopy(dense)
        started = time.perf_counter()
        compensated(model, method, batches, names, bias, refit)
        results.setdefault("compensation", {})[label] = measure(model, time.perf_counter() - started)
        show(label, results["compensation"][label])
    if args.compensation_only:
        return results
    similarity = reference.double() @ reference.double().T
    similarity.fill_diagonal_(-float("inf"))
    best = similarity.topk(2, dim=1).values
    margin = best[:, 0] - best[:, 1]
    results["dense_top1_margin"] = {f"below_{t}": (margin < t).double().mean().item() for t in (0.01, 0.02, 0.05)}
    print("MiniLM dense retrieval: share of queries whose best and second-best cosine differ by less than")
    print("  " + ", ".join(f"{k[6:]}: {100 * v:.1f}%" for k, v in results["dense_top1_margin"].items()))

    for kind in LAYER_TYPES:
        layers = of_type(names, kind)
        for method in ev.METHODS:
            model = copy.deepcopy(dense)
            row = measure(model, prune(model, method, batches, layers))
            results["layer_types"].setdefault(kind, {})[method] = row
            show(f"only {kind} ({len(layers)}) {method}", row)

    extra = [more[i] for i in np.random.default_rng(1).permutation(len(more))[: args.more]]
    bigger = ev.calibration_batches(tokenizer, calibration + extra)
    tokens = sum(b["input_ids"].numel() for b in bigger)
    results["more_calibration"] = {"sentences": len(calibration) + len(extra), "tokens": tokens}
    for method in oneshot.CALIBRATED_METHODS:
        model = copy.deepcopy(dense)
        row = measure(model, prune(model, method, bigger, names))
        results["more_calibration"][method] = row
        show(f"{len(calibration) + len(extra)} calibration sentences ({tokens} tokens) {method}", row)

    model = copy.deepcopy(dense)
    started = time.perf_counter()
    wanda_on_dense_norms(model, batches, names)
    results["wanda_dense_norms"] = measure(model, time.perf_counter() - started)
    show("wanda on the dense model's norms", results["wanda_dense_norms"])
    return results


def run_digits(args) -> dict:
    runs = []
    for seed in args.seeds:
        dense, _, test_data, batches = ev.dense_digits(seed, ev.DIGITS_EPOCHS, ev.DIGITS_LR, ev.DIGITS_CALIBRATION)
        run = {"seed": seed, "dense": accuracy(dense, test_data), "all": {}, "bn_recalibrated": {}, "alone": {}}
        pruned = {}
        for method in ev.METHODS:
            pruned[method] = copy.deepcopy(dense)
            prune(pruned[method], method, batches)
        pruned["wanda_dense_norms"] = copy.deepcopy(dense)
        wanda_on_dense_norms(pruned["wanda_dense_norms"], batches, ["conv2", "conv3", "fc1"])
        for label, model in pruned.items():
            run["all"][label] = accuracy(model, test_data)
            run["bn_recalibrated"][label] = accuracy(ev.recalibrated_batch_norms(model, batches), test_data)
        for layer in ("conv2", "conv3", "fc1"):
            for method in ev.METHODS:
                model = copy.deepcopy(dense)
                prune(model, method, batches, [layer])
                run["alone"].setdefault(layer, {})[method] = accuracy(model, test_data)
        print(f"digits seed {seed}: dense {100 * run['dense']:.2f}")
        for key in ("all", "bn_recalibrated"):
            print(f"  {key}: " + ", ".join(f"{m} {100 * a:.2f}" for m, a in run[key].items()))
        for layer, row in run["alone"].items():
            print(f"  only {layer}: " + ", ".join(f"{m} {100 * a:.2f}" for m, a in row.items()))
        runs.append(run)
    return {"runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out/oneshot"))
    parser.add_argument("--only", choices=("minilm", "digits"))
    parser.add_argument("--calibration", type=int, default=256, help="MiniLM calibration sentences (as oneshot_eval)")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--more", type=int, default=768, help="MiniLM: extra calibration sentences from the other file")
    parser.add_argument(
        "--reconstruction-only", action="store_true", help="MiniLM: only the layer reconstruction errors"
    )
    parser.add_argument(
        "--compensation-only",
        action="store_true",
        help="MiniLM: the reconstruction errors and the bias-correction / refit variants only",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    if args.only in (None, "digits"):
        results["digits"] = run_digits(args)
    if args.only in (None, "minilm"):
        results["minilm"] = run_minilm(args)
    path = args.out / f"diagnostics_{args.only or 'all'}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
