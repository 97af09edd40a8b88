"""End-to-end 2:4 workflow on CPU: train a small CNN on scikit-learn's digits (shipped inside the
package, no download), prune 2:4 one-shot, show the accuracy drop, retrain with the masks fixed,
show the recovery; once with plain 2:4 and once with channel permutation first. Then export the
result to ONNX (2:4 verified in the file, accuracy re-checked with ONNX Runtime) and .safetensors.

    python benchmarks/torch_digits_demo.py --out demo_out/torch     # ~20 s on one core
Writes results.json, digits_cnn_2to4.onnx, digits_cnn_2to4.safetensors and its `pysparse24 compress`
output (digits_cnn_2to4_compressed/) into --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import pysparse24.torch as sparse_torch


class DigitsCNN(nn.Module):
    """8x8 grey digits -> 10 classes. conv1 (1 input channel) and fc2 (10 outputs) cannot be 2:4;
    conv2, conv3 and fc1 can, and conv1 -> conv2 -> conv3 give two channel permutations."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(4 * width)
        self.fc1 = nn.Linear(4 * width * 2 * 2, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.max_pool2d(F.relu(self.bn3(self.conv3(x))), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def load_digits_split(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.25, random_state=seed, stratify=digits.target
    )
    return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])


def train(model, data, epochs: int, lr: float, seed: int, batch: int = 64) -> None:
    images, labels = data
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(labels), generator=generator).split(batch):
            optimizer.zero_grad()
            F.cross_entropy(model(images[idx]), labels[idx]).backward()
            optimizer.step()
        schedule.step()


@torch.no_grad()
def accuracy(model, data) -> float:
    model.eval()
    images, labels = data
    return (model(images).argmax(1) == labels).float().mean().item()


def prune_and_retrain(dense, train_data, test_data, permute: bool, args) -> dict:
    model = copy.deepcopy(dense)
    permutations = []
    if permute:
        report = sparse_torch.permute_channels(model, train_data[0][:256], seed=args.seed)
        permutations = [
            {
                "producer": p.producer,
                "consumers": list(p.consumers),
                "channels": p.channels,
                "kept_before": p.result.kept_before,
                "kept_after": p.result.kept_after,
                "half_bound": p.result.half_bound,
                "gap_recovered": p.result.gap_recovered,
            }
            for p in report
            if p.result is not None
        ]
        assert accuracy(model, test_data) == accuracy(dense, test_data)  # same function, same predictions
    report = sparse_torch.sparsify(model, "2:4")
    one_shot = accuracy(model, test_data)
    train(model, train_data, args.retrain_epochs, args.lr / 10, args.seed + 1)
    return {
        "model": model,
        "report": report,
        "one_shot": one_shot,
        "retrained": accuracy(model, test_data),
        "kept": {r.name: r.kept_magnitude for r in report.sparsified},
        "skipped": {r.name: r.skipped for r in report.skipped},
        "permutations": permutations,
    }


def onnx_accuracy(path: Path, test_data) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": test_data[0].numpy()})[0]
    return float((logits.argmax(1) == test_data[1].numpy()).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out/torch"))
    parser.add_argument("--epochs", type=int, default=30, help="dense training epochs")
    parser.add_argument("--retrain-epochs", type=int, default=15, help="epochs of retraining with masks fixed")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; on tensors this small, more threads cost more than they gain",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    train_data, test_data = load_digits_split(args.seed)
    dense = DigitsCNN()
    train(dense, train_data, args.epochs, args.lr, args.seed)
    dense_acc = accuracy(dense, test_data)
    print(
        f"dense: test accuracy {100 * dense_acc:.2f}%  ({len(test_data[1])} test images, "
        f"{time.perf_counter() - started:.0f} s)"
    )

    runs = {}
    for name, permute in (("plain 2:4", False), ("permuted 2:4", True)):
        runs[name] = run = prune_and_retrain(dense, train_data, test_data, permute, args)
        print(
            f"{name}: one-shot {100 * run['one_shot']:.2f}%, after {args.retrain_epochs} epochs with masks "
            f"{100 * run['retrained']:.2f}%  ({time.perf_counter() - started:.0f} s)"
        )
        for p in run["permutations"]:
            print(
                f"  permutation {p['producer']} -> {p['consumers']}: kept |w| {p['kept_before']:.2f} -> "
                f"{p['kept_after']:.2f} (bound {p['half_bound']:.2f}), {100 * p['gap_recovered']:.1f}% of the gap"
            )
    print(runs["permuted 2:4"]["report"])

    final = runs["permuted 2:4"]["model"]
    onnx_path = args.out / "digits_cnn_2to4.onnx"
    weights = sparse_torch.export_onnx(final, test_data[0][:1], onnx_path)
    onnx_acc = onnx_accuracy(onnx_path, test_data)
    print(
        f"ONNX: {sum(w.is_2to4 for w in weights)} of {len(weights)} weights 2:4 along input channels "
        f"(verified in {onnx_path}); ONNX Runtime test accuracy {100 * onnx_acc:.2f}%"
    )
    safetensors_path = args.out / "digits_cnn_2to4.safetensors"
    sparse_torch.save_safetensors(final, safetensors_path)
    # What `pysparse24 compress digits_cnn_2to4.safetensors digits_cnn_2to4_compressed/` does.
    from pysparse24.checkpoint import compress_checkpoint

    manifest = compress_checkpoint(safetensors_path, args.out / "digits_cnn_2to4_compressed")
    compressed = [name for name, e in manifest["tensors"].items() if e["status"] == "compressed"]
    totals = manifest["totals"]
    print(
        f"pysparse24 compress {safetensors_path}: compressed {compressed} "
        f"({totals['dense_bytes']} -> {totals['compressed_bytes']} bytes)"
    )

    results = {
        "dense_accuracy": dense_acc,
        "onnx_accuracy": onnx_acc,
        "seconds": time.perf_counter() - started,
        "epochs": args.epochs,
        "retrain_epochs": args.retrain_epochs,
        "seed": args.seed,
        "compressed_tensors": compressed,
        "onnx_weights": [{"node": w.node, "shape": w.shape, "is_2to4": w.is_2to4} for w in weights],
        **{name: {k: v for k, v in run.items() if k not in ("model", "report")} for name, run in runs.items()},
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}/results.json ({results['seconds']:.0f} s in all)")


if __name__ == "__main__":
    main()
