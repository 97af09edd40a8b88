"""sparsify / finalize / undo / restore: masks along the input channels, kept through training."""

import copy

import numpy as np
import pytest
import torch
from reference import reference_mask
from torch import nn
from torch.nn.utils import parametrize
from torch_models import ConvNet, randomize_batch_norms, seeded

from pysparse24.torch import finalize, restore, sparse_layers, sparsify, undo
from pysparse24.torch.permutation import channels_last_matrix

PRUNED = ("conv2", "conv3", "fc1")


def assert_2to4_along_inputs(weight):
    """Independent check: every group of 4 consecutive input channels has at most 2 non-zeros."""
    groups = channels_last_matrix(weight.detach()).reshape(-1, weight.shape[1] // 4, 4)
    assert ((groups != 0).sum(-1) <= 2).all()


def test_prunes_eligible_layers_with_the_reference_mask(rng):
    seeded(rng)
    model = ConvNet()
    dense = {name: model.get_submodule(name).weight.detach().clone() for name in PRUNED}
    report = sparsify(model)

    assert [r.name for r in report.sparsified] == list(PRUNED)
    skipped = {r.name: r.skipped for r in report.skipped}
    assert "3 input channels" in skipped["conv1"] and "10 output channels" in skipped["fc2"]
    for r in report.sparsified:
        w = dense[r.name]
        expected = reference_mask(channels_last_matrix(w).numpy(), 2, 4)  # float64, written from the definition
        got = model.get_submodule(r.name).weight.detach()
        np.testing.assert_array_equal(channels_last_matrix(got).numpy() != 0, expected)
        np.testing.assert_array_equal(
            channels_last_matrix(got).numpy()[expected], channels_last_matrix(w).numpy()[expected]
        )
        kept = np.abs(channels_last_matrix(w).double().numpy())
        assert r.kept_magnitude == pytest.approx(kept[expected].sum() / kept.sum())
        assert 0.5 < r.kept_magnitude < 1
    text = str(report)
    for name in ("conv1", "conv2", "fc1", "fc2", "2:4", "skipped"):
        assert name in text


def test_skips_grouped_excluded_and_already_sparse():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 16, 1), nn.Linear(16, 16))
    report = sparsify(model, exclude=("2",))
    assert {r.name: r.skipped for r in report} == {
        "0": "grouped convolution (groups=2) has no dense GEMM to sparsify",
        "1": None,
        "2": "excluded by the caller",
    }
    assert "already parametrized" in sparsify(model).skipped[1].skipped


@pytest.mark.parametrize("pattern", ["2-4", "4:2", "0:4", "a:b", 24])
def test_bad_pattern(pattern):
    with pytest.raises(ValueError, match="pattern"):
        sparsify(nn.Linear(8, 8), pattern)


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
        lambda p: torch.optim.AdamW(p, lr=1e-2),
    ],
    ids=["sgd-momentum-decay", "adamw"],
)
def test_masks_survive_training(rng, make_optimizer):
    seeded(rng)
    model = ConvNet()
    optimizer = make_optimizer(model.parameters())  # created before sparsify: must keep working
    sparsify(model)
    zeros = {name: m.weight.detach() == 0 for name, m, _ in sparse_layers(model)}
    start = {name: m.weight.detach().clone() for name, m, _ in sparse_layers(model)}
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    for name, module, _ in sparse_layers(model):
        assert torch.equal(module.weight.detach() == 0, zeros[name])  # same pattern, nothing regrew
        assert not torch.equal(module.weight.detach(), start[name])  # but the kept weights trained
        assert_2to4_along_inputs(module.parametrizations.weight.original)  # the raw parameter too


def test_state_dict_round_trip_through_restore(rng, tmp_path):
    seeded(rng)
    model = randomize_batch_norms(ConvNet())
    sparsify(model)
    with torch.no_grad():
        model.fc1.parametrizations.weight.original.add_(1.0)  # as if trained: kept values differ from the start
    torch.save(model.state_dict(), tmp_path / "sparse.pt")
    state = torch.load(tmp_path / "sparse.pt", weights_only=True)  # no pickle of code objects
    assert {k for k in state if k.endswith(".mask")} == {f"{n}.parametrizations.weight.0.mask" for n in PRUNED}

    fresh = ConvNet().eval()
    report = restore(fresh, state)
    assert [r.name for r in report] == list(PRUNED)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    assert [name for name, _, _ in sparse_layers(fresh)] == list(PRUNED)


def test_restore_rejects_a_bad_mask(rng):
    seeded(rng)
    model = ConvNet()
    sparsify(model)
    state = model.state_dict()
    key = "conv2.parametrizations.weight.0.mask"
    dense_mask = dict(state, **{key: torch.ones_like(state[key])})
    with pytest.raises(ValueError, match="not 2:4"):
        restore(ConvNet(), dense_mask)
    with pytest.raises(ValueError, match="expected torch.bool"):
        restore(ConvNet(), dict(state, **{key: state[key][:1]}))
    with pytest.raises(ValueError, match="does not have"):
        restore(nn.Sequential(), state)
    with pytest.raises(ValueError, match="fresh dense model"):
        restore(model, state)


def test_undo_returns_the_dense_weights_exactly(rng):
    seeded(rng)
    model = ConvNet()
    before = copy.deepcopy(model.state_dict())
    sparsify(model)
    undo(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key in before:
        assert torch.equal(after[key], before[key]), key


def test_undo_after_restore_is_refused(rng):
    seeded(rng)
    model = ConvNet()
    sparsify(model)
    fresh = ConvNet()
    restore(fresh, model.state_dict())
    with pytest.raises(ValueError, match="cannot be undone"):
        undo(fresh)


def test_finalize_a_copy_leaves_the_original_working(rng):
    seeded(rng)
    model = ConvNet().eval()
    sparsify(model)
    copied = copy.deepcopy(model)
    finalize(copied)
    assert not any(parametrize.is_parametrized(m) for m in copied.modules())
    assert isinstance(copied.conv2.weight, nn.Parameter)
    assert_2to4_along_inputs(copied.conv2.weight)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():  # the original is still parametrized and usable (torch shares the class)
        torch.testing.assert_close(model(x), copied(x), rtol=0, atol=0)
    assert list(sparse_layers(model))
