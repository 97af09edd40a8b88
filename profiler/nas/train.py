"""A real objective: short training on scikit-learn's handwritten digits, with the candidate's 2:4
stages pruned once and retrained with their masks fixed (NVIDIA's ASP recipe: train dense, prune,
retrain).

    nas search ... --objective profiler.nas.train:digits_accuracy

The 1,797 8x8 digit images ship inside scikit-learn (no download). They are scaled to [0, 1],
upsampled (bilinear) to the training resolution and repeated over the candidate's input channels;
a fixed stratified split (seed 0) keeps 450 for validation. The digits hold 8x8 pixels, so a larger
input adds no information: training runs at min(candidate resolution, `max_resolution`) (the
networks end in a global pool, so any resolution runs). The candidate is trained as built, tail
included (its 1000-way classifier learns to use the first ten logits): the trained network is the
one whose latency the table priced.

Training: AdamW, batch 64, `dense_epochs` epochs dense; then the 2:4 blocks are pruned by magnitude
with the masks profiler.blocks uses (pysparse24.torch.sparsify, see profiler.nas.candidate) and
`sparse_epochs` more epochs run with the masks fixed. A candidate without 2:4 blocks trains the same
number of epochs. The score is validation accuracy in eval mode (BN running statistics).
"""

from __future__ import annotations

import functools

import numpy as np

from ..spec import LayerSpec

VALIDATION = 450


@functools.lru_cache(maxsize=4)
def digits(resolution: int, channels: int):
    """(x_train, y_train, x_val, y_val) torch tensors at resolution x resolution, `channels` channels."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.from_numpy(data.images.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = ((x - 0.5) / 0.5).expand(-1, channels, -1, -1).contiguous()
    y = torch.from_numpy(data.target.astype(np.int64))
    train, val = train_test_split(np.arange(len(y)), test_size=VALIDATION, stratify=data.target, random_state=0)
    return x[train], y[train], x[val], y[val]


def train_candidate(
    network: list[LayerSpec],
    dense_epochs: int = 2,
    sparse_epochs: int = 2,
    max_resolution: int = 32,
    batch: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
):
    """Train the candidate as the module docstring says: (validation accuracy in [0, 1], the trained
    model, its 2:4 layers still masked)."""
    import torch
    import torch.nn.functional as F

    from .candidate import dense_twin, prune_sparse_blocks

    if network[-1].op != "tail":
        raise ValueError(f"digits training needs a classifier: the network ends in {network[-1].op!r}, not a tail")
    size = min(network[0].in_shape[2], max_resolution)
    x_train, y_train, x_val, y_val = digits(size, network[0].in_shape[1])
    torch.manual_seed(seed)
    model = dense_twin(network, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    order = torch.Generator().manual_seed(seed)

    def epoch() -> None:
        model.train()
        for idx in torch.randperm(len(y_train), generator=order).split(batch):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x_train[idx]).flatten(1), y_train[idx]).backward()
            optimizer.step()

    for _ in range(dense_epochs):
        epoch()
    if any(s.sparsity == "2:4" for s in network):
        prune_sparse_blocks(model, network)  # the parameters stay the same objects: the optimizer goes on
    for _ in range(sparse_epochs):
        epoch()
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(x).flatten(1).argmax(1) for x in x_val.split(256)])
    return float((predicted == y_val).float().mean()), model


def digits_accuracy(network: list[LayerSpec]) -> float:
    """The shipped objective: validation accuracy after train_candidate with its defaults (10-20 s per
    demo-space candidate on one core of a busy 2-core machine, load ~10)."""
    return train_candidate(network)[0]
