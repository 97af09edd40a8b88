"""ONNX export keeps 2:4 (checked by reading the initializers back) and .safetensors round trips."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from safetensors.torch import load_file
from torch_models import ConvNet, randomize_batch_norms, seeded

from pysparse24.torch import export_onnx, save_safetensors, sparse_layers, sparsify, verify_onnx_sparsity

PRUNED = ("conv2", "conv3", "fc1")


def onnx_weight_of(path, node_name):
    graph = onnx.load(str(path)).graph
    node = next(n for n in graph.node if n.name == node_name)
    init = next(i for i in graph.initializer if i.name == node.input[1])
    return numpy_helper.to_array(init)


def test_onnx_weights_stay_2to4_and_compute_the_same(rng, tmp_path):
    seeded(rng)
    model = randomize_batch_norms(ConvNet())
    sparsify(model)
    path = tmp_path / "model.onnx"
    weights = export_onnx(model, torch.randn(1, 3, 8, 8), path)

    assert {w.node: w.is_2to4 for w in weights} == {
        "/conv1/Conv": False,
        "/conv2/Conv": True,
        "/conv3/Conv": True,
        "/fc1/Gemm": True,
        "/fc2/Gemm": False,
    }
    # Independent reading of the file: groups of four input channels hold at most two non-zeros.
    for node, axis in (("/conv2/Conv", 1), ("/conv3/Conv", 1), ("/fc1/Gemm", 1)):
        w = np.moveaxis(onnx_weight_of(path, node), axis, -1)
        assert (np.count_nonzero(w.reshape(*w.shape[:-1], -1, 4), axis=-1) <= 2).all()
        assert np.count_nonzero(w) > 0.45 * w.size  # pruned, not zeroed out

    import onnxruntime

    x = torch.randn(5, 3, 8, 8)  # another batch size: the batch axis is dynamic
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, rtol=1e-4, atol=1e-4)
    assert [name for name, _, _ in sparse_layers(model)] == list(PRUNED)  # the model itself is unchanged
    assert not list(tmp_path.glob("*.partial"))


def test_nested_sequentials_are_found(rng, tmp_path):
    """The exporter scopes a container's child with the container's scope as a prefix
    ("/1/1.0/Conv"): verification still finds every pruned layer of nested Sequentials."""
    seeded(rng)
    inner = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU())
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 1),
        torch.nn.Sequential(inner, torch.nn.Conv2d(16, 16, 1)),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 4 * 4, 8),
    ).eval()
    report = sparsify(model)
    assert [r.name for r in report.sparsified] == ["1.0.0", "1.1", "3"]
    weights = export_onnx(model, torch.randn(1, 3, 4, 4), tmp_path / "nested.onnx")
    assert sum(w.is_2to4 for w in weights) == 3


def test_verification_catches_a_dense_weight(rng, tmp_path):
    seeded(rng)
    model = ConvNet().eval()
    export_onnx(model, torch.randn(1, 3, 8, 8), tmp_path / "dense.onnx")  # nothing pruned: nothing to check
    with pytest.raises(ValueError, match=r"not 2:4 along input channels: \['conv2'\]"):
        verify_onnx_sparsity(tmp_path / "dense.onnx", ["conv2"])
    with pytest.raises(ValueError, match=r"weights not found for \['nonexistent'\]"):
        verify_onnx_sparsity(tmp_path / "dense.onnx", ["nonexistent"])


def test_safetensors_loads_into_the_dense_architecture(rng, tmp_path):
    seeded(rng)
    model = randomize_batch_norms(ConvNet())
    sparsify(model)
    path = tmp_path / "model.safetensors"
    save_safetensors(model, path)
    tensors = load_file(str(path))
    assert "conv2.weight" in tensors and not any("parametrizations" in k for k in tensors)
    dense = ConvNet().eval()
    dense.load_state_dict(tensors)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(dense(x), model(x), rtol=0, atol=0)


def test_pysparse24_compress_takes_the_saved_file(rng, tmp_path):
    checkpoint = pytest.importorskip(
        "pysparse24.checkpoint", reason="the lead's `pysparse24 compress` is not merged yet"
    )
    seeded(rng)
    model = ConvNet()
    sparsify(model)
    save_safetensors(model, tmp_path / "model.safetensors")
    manifest = checkpoint.compress_checkpoint(tmp_path / "model.safetensors", tmp_path / "compressed")
    compressed = {name for name, entry in manifest["tensors"].items() if entry["status"] == "compressed"}
    assert compressed == {f"{name}.weight" for name in PRUNED}
