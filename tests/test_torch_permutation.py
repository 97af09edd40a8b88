"""Channel permutation: the C++ search on matrices, and permute_channels on models."""

import itertools

import numpy as np
import pytest
import torch
from reference import reference_mask
from torch import nn
from torch_models import BranchNet, ConvNet, randomize_batch_norms, seeded

import pysparse24
from pysparse24.torch import find_permutation, permute_channels, sparsify
from pysparse24.torch.permutation import channels_last_matrix


def kept_2to4(matrix):
    """float64 reference: sum of |w| that 2:4 keeps along the columns."""
    magnitude = np.abs(np.asarray(matrix, dtype=np.float64))
    return magnitude[reference_mask(magnitude, 2, 4)].sum()


def test_search_keeps_more_and_reports_it_truthfully(rng):
    w = rng.standard_normal((64, 128)).astype(np.float32)
    r = find_permutation(w, seed=1, escape_attempts=20)
    assert sorted(r.permutation.tolist()) == list(range(128))
    assert r.kept_before == pytest.approx(kept_2to4(w), rel=1e-5)
    assert r.kept_after == pytest.approx(kept_2to4(w[:, r.permutation]), rel=1e-5)
    half = np.sort(np.abs(w.astype(np.float64)), axis=1)[:, 64:].sum()
    assert r.half_bound == pytest.approx(half)
    # A random 64x128 matrix always has room to improve; a search that does nothing fails here.
    assert r.kept_before < r.kept_after <= r.half_bound
    assert 0.1 < r.gap_recovered < 1


def test_wide_weights_are_searched_in_blocks(rng):
    w = rng.standard_normal((8, 48)).astype(np.float32)
    r = find_permutation(w, block_channels=16, escape_attempts=5)
    for start in (0, 16, 32):  # every block keeps its own channels
        assert sorted(r.permutation[start : start + 16].tolist()) == list(range(start, start + 16))
    assert r.kept_before == pytest.approx(kept_2to4(w), rel=1e-5)
    assert r.kept_after == pytest.approx(kept_2to4(w[:, r.permutation]), rel=1e-5)
    assert r.kept_after > r.kept_before
    with pytest.raises(ValueError, match="block_channels"):
        find_permutation(w, block_channels=6)


def test_search_is_deterministic_for_a_seed(rng):
    w = rng.standard_normal((32, 64)).astype(np.float32)
    a, b = find_permutation(w, seed=7), find_permutation(w, seed=7)
    np.testing.assert_array_equal(a.permutation, b.permutation)


def test_search_finds_the_known_optimum():
    # Four large channels in one group: plain 2:4 drops two of them; spreading them keeps all four.
    w = np.array([[9, 8, 7, 6, 1, 2, 1, 2]], dtype=np.float32)
    r = find_permutation(w)
    assert r.kept_after == r.half_bound == 30
    assert r.gap_recovered == 1


def test_two_stripes_reach_the_exhaustive_optimum(rng):
    w = rng.standard_normal((16, 8)).astype(np.float32)
    best = max(
        kept_2to4(w[:, list(group) + [c for c in range(8) if c not in group]])
        for group in itertools.combinations(range(8), 4)
    )
    assert find_permutation(w).kept_after == pytest.approx(best, rel=1e-6)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.ones((4, 6), np.float32), "divisible by 4"),
        (np.ones((2, 4, 4), np.float32), "2-D"),
        (np.array([[1, np.nan, 0, 0]], np.float32), "finite"),
        (np.array([[1, np.inf, 0, 0]], np.float32), "finite"),
        (np.zeros((0, 8), np.float32), "rows >= 1"),
    ],
)
def test_search_rejects_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        find_permutation(bad)


def test_negative_escape_attempts_rejected():
    with pytest.raises(ValueError, match="escape_attempts"):
        find_permutation(np.ones((2, 8), np.float32), escape_attempts=-1)


def consumer_kept(model, name):
    return kept_2to4(channels_last_matrix(model.get_submodule(name).weight.detach()).numpy())


def test_permuted_network_computes_the_same_function(rng):
    seeded(rng)
    model = randomize_batch_norms(ConvNet())
    x, fresh = torch.randn(4, 3, 8, 8), torch.randn(16, 3, 8, 8)
    with torch.no_grad():
        before = model(fresh)
    kept_before = {name: consumer_kept(model, name) for name in ("conv2", "conv3")}
    conv1_before = model.conv1.weight.detach().clone()

    report = {p.producer: p for p in permute_channels(model, x, escape_attempts=10)}

    with torch.no_grad():
        after = model(fresh)  # an input the function's own check never saw
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    assert not torch.equal(model.conv1.weight, conv1_before)  # something really moved
    for producer, consumer in (("conv1", "conv2"), ("conv2", "conv3")):
        result = report[producer].result
        assert report[producer].consumers == (consumer,)
        assert consumer_kept(model, consumer) == pytest.approx(result.kept_after, rel=1e-5)
        assert consumer_kept(model, consumer) > kept_before[consumer]
    assert "flatten" in report["conv3"].skipped
    assert "fc2" in report["fc1"].skipped and "output channels" in report["fc1"].skipped
    assert report["fc2"].skipped == "its output channels reach the model output"


def test_one_producer_two_consumers_share_the_permutation(rng):
    seeded(rng)
    model = BranchNet().eval()
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        before = model(x)
    report = {p.producer: p for p in permute_channels(model, torch.randn(2, 4, 6, 6))}
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-5)
    assert report["stem"].consumers == ("left", "right") and report["stem"].result is not None
    assert "add" in report["left"].skipped


class MisreadBatchNorm(nn.Module):
    """BatchNorm1d after a Linear on (N, L, F) normalizes L, not the Linear's features F: permuting it
    with the features is wrong. With L == F the shapes match, so only the output check can tell."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.bn = nn.BatchNorm1d(8)
        self.fc2 = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc2(self.bn(self.fc1(x)))


def test_changed_output_is_rolled_back(rng):
    seeded(rng)
    model = randomize_batch_norms(MisreadBatchNorm())
    with torch.no_grad():  # fc2's large inputs all in one group of 4: the search must reorder them
        model.fc2.weight[:, :4] += 10 * torch.sign(model.fc2.weight[:, :4])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="changed the model's output"):
        permute_channels(model, torch.randn(4, 8, 8))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


class TupleOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        return self.fc2(self.fc1(x)), x


def test_non_tensor_output_is_refused():
    with pytest.raises(TypeError, match="must be one tensor, got tuple"):
        permute_channels(TupleOutput(), torch.randn(2, 8))


def test_permute_after_sparsify_is_refused(rng):
    seeded(rng)
    model = ConvNet().eval()
    sparsify(model)
    with pytest.raises(ValueError, match="before sparsify"):
        permute_channels(model, torch.randn(1, 3, 8, 8))


def test_mask_after_permutation_keeps_the_searched_magnitude(rng):
    """The lead's mask, applied after the permutation, keeps exactly what the search promised."""
    seeded(rng)
    model = randomize_batch_norms(ConvNet())
    report = {p.producer: p for p in permute_channels(model, torch.randn(2, 3, 8, 8), escape_attempts=5)}
    weight = model.conv3.weight.detach()
    kept = (weight.abs().double() * pysparse24.mask(weight, 2, 4, dim=1)).sum().item()
    assert kept == pytest.approx(report["conv2"].result.kept_after, rel=1e-5)
