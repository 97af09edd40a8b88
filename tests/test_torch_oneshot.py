"""One-shot pruning from calibration data (sparsify(method="wanda" | "sparsegpt")), checked against
float64 references written from the papers' definitions, not from pysparse24.torch.oneshot."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import reference_mask
from torch import nn
from torch_models import ConvNet, randomize_batch_norms, seeded

from pysparse24.torch import recalibrate_batch_norms, sparse_layers, sparsify, undo
from pysparse24.torch.oneshot import SingularHessian, gemm_input, gemm_weight, inverse_hessian_factor, sparsegpt_prune
from pysparse24.torch.permutation import channels_last_matrix


def calibration_batches(shape, batches=3, generator=None):
    """Inputs whose channels have very different scales, so that activations change the ranking."""
    scale = torch.logspace(-1, 1, shape[1])[torch.randperm(shape[1], generator=generator)]
    scale = scale.view(1, -1, *[1] * (len(shape) - 2))
    return [torch.randn(shape, generator=generator) * scale for _ in range(batches)]


def correlated_inputs(rng, batches, tokens, features):
    """Tokens x features with strongly correlated, differently scaled features (as in real activations)."""
    mixing = rng.standard_normal((features, features)) * rng.uniform(0.1, 3, size=(features, 1))
    mixing += 2 * np.eye(features)
    return [torch.tensor(rng.standard_normal((tokens, features)) @ mixing, dtype=torch.float32) for _ in range(batches)]


def assert_n_m_along_inputs(weight, n, m):
    """Independent check: every m consecutive input channels (at each kernel position) hold <= n non-zeros."""
    groups = channels_last_matrix(weight.detach()).reshape(-1, weight.shape[1] // m, m)
    assert ((groups != 0).sum(-1) <= n).all()


def test_wanda_linear_mask_is_the_float64_reference(rng):
    seeded(rng)
    layer = nn.Linear(32, 16)
    dense = layer.weight.detach().clone()
    batches = calibration_batches((5, 7, 32), 3)
    report = sparsify(layer, method="wanda", calibration=batches, progress=False)

    x = torch.cat([b.reshape(-1, 32) for b in batches]).double().numpy()
    scores = np.abs(dense.double().numpy()) * np.sqrt((x**2).sum(0))  # |W_ij| * ||X_j||_2
    expected = reference_mask(scores, 2, 4)
    got = layer.weight.detach().numpy()
    np.testing.assert_array_equal(got != 0, expected)
    np.testing.assert_array_equal(got[expected], dense.numpy()[expected])  # Wanda does not update weights
    assert not np.array_equal(expected, reference_mask(dense.numpy(), 2, 4))  # the activations mattered
    assert report.method == "wanda" and report[0].pattern == "2:4"


def test_wanda_conv_groups_along_input_channels(rng):
    seeded(rng)
    conv = nn.Conv2d(8, 16, 3, padding=1, stride=2)
    dense = conv.weight.detach().clone()
    batches = calibration_batches((2, 8, 9, 9), 2)
    sparsify(conv, method="wanda", calibration=batches, progress=False)

    # torch's own im2col: (N, C*R*S, L) with C slowest, so the norms come out in the weight's (C, R, S) layout
    cols = torch.cat([F.unfold(b.double(), 3, padding=1, stride=2) for b in batches]).transpose(1, 2).reshape(-1, 72)
    norms = cols.square().sum(0).sqrt().reshape(1, 8, 3, 3)
    scores = channels_last_matrix(dense.double().abs() * norms).numpy()  # (K*R*S, C): groups along C
    expected = reference_mask(scores, 2, 4)
    np.testing.assert_array_equal(channels_last_matrix(conv.weight.detach()).numpy() != 0, expected)
    assert_n_m_along_inputs(conv.weight, 2, 4)


@pytest.mark.parametrize(
    "conv",
    [
        lambda: nn.Conv2d(8, 16, 3, padding=1),
        lambda: nn.Conv2d(8, 16, (3, 2), stride=2, dilation=(2, 1), padding=2, padding_mode="reflect"),
        lambda: nn.Conv1d(4, 8, 5, padding="same"),
        lambda: nn.Conv3d(4, 8, 3, stride=(1, 2, 1), padding=1, padding_mode="circular"),
    ],
    ids=["2d", "2d-strided-dilated-reflect", "1d-same", "3d-circular"],
)
def test_gemm_input_times_gemm_weight_is_the_convolution(rng, conv):
    seeded(rng)
    conv = conv()
    x = torch.randn(2, conv.in_channels, *[9] * len(conv.kernel_size), dtype=torch.float64)
    conv = conv.double()
    reference = conv(x) - conv.bias.view(-1, *[1] * len(conv.kernel_size))
    got = gemm_input(conv, x) @ gemm_weight(conv.weight).T
    torch.testing.assert_close(got, reference.movedim(1, -1).reshape(-1, conv.out_channels))


def reference_sparsegpt(W, H, n, m):
    """SparseGPT from the paper's equations, float64, one column at a time with explicit inverses:
    the group's mask from w_j^2 / [(H_{F_j})^-1]_00 (F_j = columns j.. not yet processed), then the OBS
    update of the remaining columns, delta = -(w_i - q_i) / [H_F^-1]_00 * [H_F^-1]_0,: ."""
    W = W.copy()
    keep = np.zeros(W.shape, dtype=bool)
    columns = W.shape[1]
    for i in range(columns):
        if i % m == 0:
            saliency = np.stack([W[:, j] ** 2 / np.linalg.inv(H[j:, j:])[0, 0] for j in range(i, i + m)], 1)
            keep[:, i : i + m] = reference_mask(saliency, n, m)
        inverse = np.linalg.inv(H[i:, i:])
        error = W[:, i] * ~keep[:, i]
        W[:, i:] -= np.outer(error / inverse[0, 0], inverse[0])
    return W * keep, keep


@pytest.mark.parametrize("n,m,block_size", [(2, 4, 128), (2, 4, 8), (1, 4, 12), (4, 8, 16)])
def test_sparsegpt_solver_is_the_papers_obs(rng, n, m, block_size):
    rows, columns = 12, 40
    X = torch.cat(correlated_inputs(rng, 2, 50, columns)).double()
    H = 2 * X.T @ X / X.shape[0]
    W = torch.tensor(rng.standard_normal((rows, columns)))
    pruned, keep, used = sparsegpt_prune(W, H, n, m, damping=0.01, block_size=block_size)
    dampened = H + 0.01 * H.diagonal().mean() * torch.eye(columns, dtype=H.dtype)
    expected, expected_keep = reference_sparsegpt(W.numpy(), dampened.numpy(), n, m)
    assert used == 0.01
    np.testing.assert_array_equal(keep.numpy(), expected_keep)
    np.testing.assert_allclose(pruned.numpy(), expected, rtol=1e-9, atol=1e-9)


def test_sparsegpt_reconstructs_better_than_wanda_and_magnitude(rng):
    seeded(rng)
    layer = nn.Linear(64, 32, bias=False)
    batches = correlated_inputs(rng, 4, 64, 64)
    X = torch.cat(batches).double()
    dense_out = X @ layer.weight.detach().double().T
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        pruned = copy.deepcopy(layer)
        sparsify(pruned, method=method, calibration=None if method == "magnitude" else batches, progress=False)
        errors[method] = (X @ pruned.weight.detach().double().T - dense_out).norm().item()
    print(errors)
    assert errors["sparsegpt"] < 0.9 * errors["wanda"]
    assert errors["sparsegpt"] < 0.9 * errors["magnitude"]


@pytest.mark.parametrize("pattern", ["2:4", "1:4", "4:8", "1:2"])
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_masks_are_n_m_along_input_channels(rng, pattern, method):
    seeded(rng)
    n, m = (int(p) for p in pattern.split(":"))
    model = nn.Sequential(
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 1), nn.Flatten(), nn.Linear(16 * 16, 8)
    )
    report = sparsify(model, pattern, method=method, calibration=calibration_batches((4, 8, 4, 4), 2), progress=False)
    assert [r.name for r in report.sparsified] == ["0", "2", "4"]
    for _, module, fixed in sparse_layers(model):
        assert_n_m_along_inputs(module.weight, n, m)
        assert_n_m_along_inputs(module.parametrizations.weight.original, n, m)  # the raw parameter too
        assert fixed.mask.sum().item() == fixed.mask.numel() * n // m  # exactly n of m kept


class OutOfOrder(nn.Module):
    """Registers `second` before `first` but runs first -> second."""

    def __init__(self):
        super().__init__()
        self.second = nn.Linear(64, 16)
        self.first = nn.Linear(32, 64)

    def forward(self, x):
        return self.second(torch.relu(self.first(x)))


def test_layers_are_pruned_in_execution_order_on_pruned_activations(rng):
    seeded(rng)
    model = OutOfOrder()
    dense = copy.deepcopy(model)
    batches = calibration_batches((16, 32), 3)
    sparsify(model, method="wanda", calibration=batches, progress=False)

    def second_mask(first):  # Wanda's mask for `second` calibrated on the outputs of this `first`
        with torch.no_grad():
            hidden = torch.cat([torch.relu(first(b)) for b in batches]).double()
        scores = dense.second.weight.detach().double().abs() * hidden.square().sum(0).sqrt()
        return reference_mask(scores.numpy(), 2, 4)

    got = model.second.weight.detach().numpy() != 0
    np.testing.assert_array_equal(got, second_mask(model.first))  # sees the already-pruned `first`
    assert not np.array_equal(got, second_mask(dense.first))  # which differs from seeing the dense one


def test_a_pruned_weight_is_computed_once_while_calibrating(rng, monkeypatch):
    """The calibration passes re-run the pruned layers: their masked weight is cached, not recomputed."""
    from pysparse24.torch.sparsify import FixedMask

    seeded(rng)
    products = []
    masked = FixedMask.forward
    monkeypatch.setattr(FixedMask, "forward", lambda self, weight: products.append(self) or masked(self, weight))
    model = randomize_batch_norms(ConvNet())
    sparsify(model, method="sparsegpt", calibration=calibration_batches((2, 3, 8, 8), 4), progress=False)
    # conv2 and conv3 run in the passes of the later layers (conv3, fc1): once each; fc1 in none.
    assert sorted(map(id, products)) == sorted(id(m.parametrizations.weight[0]) for m in (model.conv2, model.conv3))
    products.clear()
    model(torch.randn(2, 3, 8, 8))  # outside sparsify, nothing is cached
    assert len(products) == 3


def test_layers_selects_and_reports_the_rest(rng):
    seeded(rng)
    model = ConvNet()
    report = sparsify(
        model,
        method="sparsegpt",
        calibration=calibration_batches((4, 3, 8, 8), 2),
        layers=["conv2", "fc1"],
        progress=False,
    )
    assert [r.name for r in report.sparsified] == ["conv2", "fc1"]
    assert {r.name: r.skipped for r in report.skipped}["conv3"] == "not in layers="
    assert [name for name, _, _ in sparse_layers(model)] == ["conv2", "fc1"]


def test_deterministic_and_masks_kept_through_training_and_undo(rng):
    seeded(rng)
    model = randomize_batch_norms(ConvNet()).train()
    before = copy.deepcopy(model.state_dict())
    batches = calibration_batches((8, 3, 8, 8), 2)
    twin = copy.deepcopy(model)
    sparsify(model, method="sparsegpt", calibration=batches, progress=False)
    sparsify(twin, method="sparsegpt", calibration=batches, progress=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, twin.state_dict()[key]), key
    # calibration ran in eval mode: BatchNorm statistics untouched, the training mode given back
    assert model.training and model.bn1.training
    assert torch.equal(model.bn1.running_mean, before["bn1.running_mean"])
    # sparsegpt updated the kept weights, and retraining keeps the masks
    assert not torch.equal(model.fc1.weight[model.fc1.weight != 0], before["fc1.weight"][model.fc1.weight != 0])
    zeros = {name: module.weight.detach() == 0 for name, module, _ in sparse_layers(model)}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(batches[0]), torch.arange(8) % 10).backward()
        optimizer.step()
    for name, module, _ in sparse_layers(model):
        assert torch.equal(module.weight.detach() == 0, zeros[name])
    undo(model)
    assert torch.equal(model.fc1.weight, before["fc1.weight"])


class KeywordModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 8)

    def forward(self, x, scale=1.0):
        return self.fc(x * scale)


def test_batches_as_tensors_tuples_and_dicts(rng):
    seeded(rng)
    x = torch.randn(6, 16)
    results = []
    for batches in ([x], [(x, 2.0)], [{"x": x, "scale": 2.0}]):
        model = KeywordModel()
        torch.manual_seed(0)
        nn.init.normal_(model.fc.weight)
        sparsify(model, method="wanda", calibration=iter(batches), progress=False)  # a one-shot iterator is fine
        results.append(model.fc.weight.detach() != 0)
    # a uniform scale of the input does not change Wanda's ranking
    assert torch.equal(results[0], results[1]) and torch.equal(results[1], results[2])


def test_progress_names_the_layers(rng, capsys):
    seeded(rng)
    sparsify(ConvNet(), method="sparsegpt", calibration=calibration_batches((2, 3, 8, 8), 1))
    out = capsys.readouterr().out
    assert "sparsegpt" in out and "fc1" in out


class WithUnusedHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(16, 16)
        self.head = nn.Linear(16, 8)  # never called

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(method="magnitude", calibration=[torch.zeros(2, 16)]), ValueError, "uses no calibration"),
        (dict(method="wanda"), ValueError, "need calibration"),
        (dict(method="sparsegpt", calibration=[]), ValueError, "calibration is empty"),
        (dict(method="sparsegpt", calibration=torch.zeros(2, 16)), TypeError, "single Tensor"),
        (dict(method="sparsegpt", calibration=5), TypeError, "iterable of batches"),
        (dict(method="obs", calibration=[torch.zeros(2, 16)]), ValueError, "method must be one of"),
        (dict(method="sparsegpt", calibration=[torch.zeros(2, 16)], damping=-1), ValueError, "damping"),
        (dict(method="wanda", calibration=[torch.zeros(2, 16)], layers="body"), TypeError, "list of layer names"),
        (dict(method="wanda", calibration=[torch.zeros(2, 16)], layers=["tail"]), ValueError, "'tail'.*does not have"),
        (
            dict(method="wanda", calibration=[torch.randn(2, 16), torch.randn(2, 15)]),
            ValueError,
            "calibration batch 1 does not run through the model",
        ),
        (dict(method="wanda", calibration=[torch.randn(2, 16)]), ValueError, r"\['head'\] saw no calibration data"),
        (
            dict(method="sparsegpt", calibration=[torch.randn(2, 16), torch.full((2, 16), float("nan"))]),
            ValueError,
            "batch 1 gives layer 'body' an input with NaN",
        ),
    ],
    ids=[
        "magnitude-with-data",
        "missing",
        "empty",
        "one-tensor",
        "not-iterable",
        "bad-method",
        "bad-damping",
        "layers-string",
        "layers-unknown",
        "batch-fails",
        "layer-sees-nothing",
        "nan-input",
    ],
)
def test_bad_input(kwargs, error, match):
    model = WithUnusedHead()
    if "head" not in match:
        kwargs.setdefault("layers", ["body"])
    dense = model.body.weight.detach().clone()
    with pytest.raises(error, match=match):
        sparsify(model, progress=False, **kwargs)
    assert not list(sparse_layers(model)) and torch.equal(model.body.weight, dense)  # left as it was


class FailsAtTheSecondLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(16, 16)
        self.second = nn.Linear(16, 8)

    def forward(self, x):
        return self.second(torch.log(self.first(x)))  # NaN wherever first's output is negative


def test_a_failure_midway_rolls_back_the_layers_already_pruned(rng):
    seeded(rng)
    model = FailsAtTheSecondLayer()
    dense = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="layer 'second' an input with NaN"):
        sparsify(model, method="sparsegpt", calibration=[torch.randn(8, 16)], progress=False)
    assert not list(sparse_layers(model))
    for key, value in model.state_dict().items():
        assert torch.equal(value, dense[key]), key


def test_layers_naming_a_non_prunable_module():
    with pytest.raises(ValueError, match="'1', a ReLU"):
        sparsify(
            nn.Sequential(nn.Linear(8, 8), nn.ReLU()),
            method="wanda",
            calibration=[torch.zeros(1, 8)],
            layers=["1"],
            progress=False,
        )


def test_singular_hessian_raises_the_damping_then_fails_clearly():
    # mean diagonal 0.49: 1% damping leaves -0.0151 on the diagonal, 10% makes it positive definite
    upper, used = inverse_hessian_factor(torch.tensor([[1.0, 0.0], [0.0, -0.02]], dtype=torch.float64), 0.01)
    assert used == pytest.approx(0.1)
    torch.testing.assert_close(
        upper.T @ upper, torch.linalg.inv(torch.diag(torch.tensor([1.049, 0.029], dtype=torch.float64)))
    )
    with pytest.raises(SingularHessian, match="not positive definite even dampened by 10 x"):
        inverse_hessian_factor(torch.diag(torch.tensor([1.0, 1.0, 1.0, -10.0], dtype=torch.float64)), 0.01)
    with pytest.raises(SingularHessian, match="NaN or Inf"):
        inverse_hessian_factor(torch.full((2, 2), float("inf"), dtype=torch.float64), 0.01)


def test_dead_inputs_are_pruned_first_without_error():
    layer = nn.Linear(8, 8, bias=False)
    x = torch.randn(32, 8)
    x[:, [1, 2]] = 0  # two inputs of the first group never fire
    sparsify(layer, method="sparsegpt", calibration=[x], progress=False)
    assert (layer.weight[:, [1, 2]] == 0).all()
    assert_n_m_along_inputs(layer.weight, 2, 4)


class SharedInput(nn.Module):
    """query/key/value read one tensor (calibrated together in one pass); `mode` says how `out`'s input
    is made: "shared" reads x itself too; "copy" a copy of x; "in-place" x after adding to it in place,
    which must not be mistaken for the tensor the others read."""

    def __init__(self, mode):
        super().__init__()
        self.mode = mode
        self.query, self.key, self.value = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.out = nn.Linear(16, 8)
        self.passes = 0

    def forward(self, x):
        self.passes += 1
        x = 2 * x  # the model's own tensor: the in-place add must not change the calibration batch
        mixed = self.query(x) * self.key(x) + self.value(x)
        if self.mode == "in-place":
            x.add_(mixed)
        elif self.mode == "copy":
            x = x + mixed
        return self.out(x)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_layers_reading_one_tensor_share_a_pass_with_the_same_result(rng, method):
    seeded(rng)
    torch.manual_seed(int(rng.integers(2**31)))
    reference = SharedInput("copy")
    batches = calibration_batches((32, 16), 3)
    weights = {}
    for mode in ("copy", "in-place"):
        model = copy.deepcopy(reference)
        model.mode = mode
        sparsify(model, method=method, calibration=batches, progress=False)
        weights[mode] = {name: module.weight.detach() for name, module, _ in sparse_layers(model)}
        # discovery, then query+key+value in one pass, then out: 3 passes over each batch (4 layers)
        assert model.passes == 3 * len(batches), mode
    for name in weights["copy"]:
        assert torch.equal(weights["in-place"][name], weights["copy"][name]), name
    # the result is the fully sequential one: one pass per layer (no two layers read the same tensor)
    separate = copy.deepcopy(reference)
    for layer in (separate.key, separate.value):
        layer.register_forward_pre_hook(lambda module, args: (args[0].clone(),))
    sparsify(separate, method=method, calibration=batches, progress=False)
    assert separate.passes == 5 * len(batches)
    for name, module, _ in sparse_layers(separate):
        assert torch.equal(module.weight.detach(), weights["copy"][name]), name


def test_recalibrate_batch_norms_averages_each_batchs_statistics(rng):
    seeded(rng)
    model = randomize_batch_norms(ConvNet()).train()
    batches = [torch.randn(6, 3, 8, 8) * 3 + 1 for _ in range(4)]
    seen = {"bn1": [], "bn2": []}
    for name in seen:
        getattr(model, name).register_forward_pre_hook(lambda module, args, name=name: seen[name].append(args[0]))
    assert recalibrate_batch_norms(model, batches) == 2

    # bn1 reads conv1's output, computed here independently; bn2 what the hook saw.
    with torch.no_grad():
        inputs = {"bn1": [model.conv1(b).double() for b in batches], "bn2": [x.double() for x in seen["bn2"]]}
    assert len(seen["bn1"]) == len(seen["bn2"]) == len(batches)
    for name, xs in inputs.items():
        bn = getattr(model, name)
        means = torch.stack([x.mean((0, 2, 3)) for x in xs]).mean(0)
        variances = torch.stack([x.var((0, 2, 3), unbiased=True) for x in xs]).mean(0)
        torch.testing.assert_close(bn.running_mean.double(), means, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bn.running_var.double(), variances, rtol=1e-5, atol=1e-5)
        assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == len(batches)
    assert model.training and model.bn1.training  # modes restored


def test_recalibrate_batch_norms_restores_the_model_when_it_fails(rng):
    seeded(rng)
    model = randomize_batch_norms(ConvNet())
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="calibration batch 1 does not run through the model"):
        recalibrate_batch_norms(model, [torch.randn(2, 3, 8, 8), torch.randn(2, 5, 8, 8)])
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert not model.training and not model.bn2.training and model.bn2.momentum == 0.1

    model.unused = nn.BatchNorm1d(4)  # never called by forward
    with pytest.raises(ValueError, match=r"\['unused'\] saw no calibration data"):
        recalibrate_batch_norms(model, [torch.randn(2, 3, 8, 8)])
    torch.testing.assert_close(model.bn1.running_mean, before["bn1.running_mean"], rtol=0, atol=0)

    with pytest.raises(ValueError, match="no BatchNorm layer"):
        recalibrate_batch_norms(nn.Linear(4, 4), [torch.randn(2, 4)])
    with pytest.raises(TypeError, match="iterable of batches"):
        recalibrate_batch_norms(model, torch.randn(2, 3, 8, 8))
