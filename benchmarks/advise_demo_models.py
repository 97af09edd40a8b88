"""Models for `make demo`'s `pysparse24 advise` run (random weights):

    pysparse24 advise --model benchmarks.advise_demo_models:small_lm --input-shape 1x8x2048 ...

small_lm: a LLaMA-style gated MLP block (2048 -> 5632 -> 2048) and a small 2048 -> 256 head, at a few
tokens: the big weights are memory-bound (2:4 reads ~0.56x the bytes), the head may not pay.
"""

import torch.nn.functional as F
from torch import nn


class SmallLM(nn.Module):
    def __init__(self, hidden=2048, inner=5632, head=256):
        super().__init__()
        self.gate = nn.Linear(hidden, inner, bias=False)
        self.up = nn.Linear(hidden, inner, bias=False)
        self.down = nn.Linear(inner, hidden, bias=False)
        self.head = nn.Linear(hidden, head)

    def forward(self, x):
        return self.head(x + self.down(F.silu(self.gate(x)) * self.up(x)))


def small_lm() -> nn.Module:
    return SmallLM()
