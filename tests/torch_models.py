"""Small models for the tests of pysparse24.torch, with random (not trained) weights and statistics."""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def seeded(rng: np.random.Generator) -> None:
    """Seed torch from the test's reported numpy seed, so a failure replays."""
    torch.manual_seed(int(rng.integers(2**31)))


def randomize_batch_norms(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so permuting them wrongly shows up."""
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
                bn.weight.uniform_(0.5, 2)
                bn.bias.uniform_(-1, 1)
    return model.eval()


class ConvNet(nn.Module):
    """conv1 (3 in: not prunable) -> conv2 -> conv3 -> flatten -> fc1 -> fc2 (10 out: not prunable);
    conv1->conv2, conv2->conv3 and fc1->fc2 are producer/consumer pairs."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 16, 1)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        x = self.conv3(x)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class BranchNet(nn.Module):
    """One producer feeding two consumers (both get the same permutation), whose outputs are added."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(4, 24, 3, padding=1)
        self.left = nn.Conv2d(24, 16, 3, padding=1)
        self.right = nn.Conv2d(24, 16, 1)

    def forward(self, x):
        x = nn.functional.silu(self.stem(x))
        return self.left(x) + self.right(x)
