import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import pysparse24
import pysparse24.checkpoint
from pysparse24.cli import main


def test_npy_round_trip_with_prune(tmp_path, rng):
    w = rng.standard_normal((64, 128)).astype(np.float16)
    np.save(tmp_path / "w.npy", w)
    assert main(["compress", str(tmp_path / "w.npy"), str(tmp_path / "out"), "--prune"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["tensors"]["w"]["status"] == "compressed"
    assert manifest["totals"]["compressed_bytes"] == 64 * 64 * 2 + 64 * 16
    assert main(["decompress", str(tmp_path / "out"), str(tmp_path / "back.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "back.npy"), pysparse24.prune(w))


def test_safetensors_state_dict_reports_skips(tmp_path, capsys):
    state = {
        "fc1.weight": pysparse24.prune(torch.randn(32, 64).bfloat16()),  # already 2:4: compressed
        "fc1.bias": torch.randn(32),  # 1-D: skipped
        "fc2.weight": torch.randn(16, 64),  # dense, no --prune: skipped
        "conv.weight": pysparse24.prune(torch.randn(8, 16, 3, 3), dim=1),  # conv, groups along C
        "odd.weight": torch.randn(8, 12),  # 12 columns: not /8
    }
    save_file(state, str(tmp_path / "model.safetensors"))
    assert main(["compress", str(tmp_path / "model.safetensors"), str(tmp_path / "c")]) == 0
    entries = json.loads((tmp_path / "c" / "manifest.json").read_text())["tensors"]
    assert entries["fc1.weight"]["status"] == "compressed"
    assert entries["conv.weight"]["status"] == "compressed" and entries["conv.weight"]["layout"] == "KRSC"
    assert "1-D" in entries["fc1.bias"]["reason"]
    # The manifest keeps the library's wording (parameter names); the progress lines use the flags.
    assert "not 2:4 sparse (compress with prune=True to prune it)" in entries["fc2.weight"]["reason"]
    assert "fc2.weight (16, 64) float32: skipped: not 2:4 sparse (pass --prune to prune it)" in capsys.readouterr().err
    assert "divisible by 8" in entries["odd.weight"]["reason"]
    assert main(["decompress", str(tmp_path / "c"), str(tmp_path / "back.safetensors")]) == 0
    back = load_file(str(tmp_path / "back.safetensors"))
    assert set(back) == set(state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name


def test_bad_paths_are_clear_errors(tmp_path, capsys):
    assert main(["compress", str(tmp_path / "missing.npy"), str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "w.txt").write_text("x")
    assert main(["compress", str(tmp_path / "w.txt"), str(tmp_path / "o")]) == 2
    assert main(["decompress", str(tmp_path), str(tmp_path / "x.safetensors")]) == 2


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "pysparse24", "--help"], capture_output=True, text=True, check=True)
    assert "compress" in out.stdout


def test_big_endian_npy_is_read_by_value(tmp_path):
    """A .npy written on a big-endian machine: compressed weights and skipped tensors come back with
    the same values (the old path pruned byte-swapped garbage and exited 0)."""
    w = np.arange(1, 65, dtype=">f4").reshape(4, 16)
    np.save(tmp_path / "w.npy", w)
    assert main(["compress", str(tmp_path / "w.npy"), str(tmp_path / "c"), "--prune"]) == 0
    assert main(["decompress", str(tmp_path / "c"), str(tmp_path / "back.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "back.npy"), pysparse24.prune(w.astype(np.float32)))
    odd = np.arange(6, dtype=">f4").reshape(2, 3)  # not compressible: stored as it is
    np.save(tmp_path / "odd.npy", odd)
    assert main(["compress", str(tmp_path / "odd.npy"), str(tmp_path / "c2")]) == 0
    assert main(["decompress", str(tmp_path / "c2"), str(tmp_path / "odd_back.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "odd_back.npy"), odd)


def test_output_over_the_input_is_refused(tmp_path, capsys):
    w = pysparse24.prune(np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32))
    assert main(["compress", _npy(tmp_path, w), str(tmp_path / "d")]) == 0
    tensors = tmp_path / "d" / "tensors.safetensors"
    before = tensors.read_bytes()
    assert main(["compress", str(tensors), str(tmp_path / "d"), "--prune"]) == 2
    assert main(["decompress", str(tmp_path / "d"), str(tensors)]) == 2
    assert main(["decompress", str(tmp_path / "d"), str(tmp_path / "d" / "manifest.json")]) == 2
    assert "would destroy the input" in capsys.readouterr().err
    assert tensors.read_bytes() == before
    assert main(["decompress", str(tmp_path / "d"), str(tmp_path / "w2.npy")]) == 0


def _npy(tmp_path, w):
    np.save(tmp_path / "w.npy", w)
    return str(tmp_path / "w.npy")


def test_no_partial_files_after_an_error_or_a_killed_run(tmp_path, monkeypatch):
    """A failed write removes its NAME.partial; one left by a SIGKILLed run is removed by the next."""
    import safetensors.torch

    w = pysparse24.prune(torch.randn(32, 64))
    save_file({"fc.weight": w}, str(tmp_path / "m.safetensors"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "tensors.safetensors.partial").write_bytes(b"left by a killed run")

    def fails_midway(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", fails_midway)
    with pytest.raises(OSError, match="disk full"):
        pysparse24.checkpoint.compress_checkpoint(tmp_path / "m.safetensors", out)
    assert sorted(p.name for p in out.iterdir()) == []
    monkeypatch.undo()
    (out / "tensors.safetensors.partial").write_bytes(b"left by a killed run")
    assert main(["compress", str(tmp_path / "m.safetensors"), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "tensors.safetensors"]
