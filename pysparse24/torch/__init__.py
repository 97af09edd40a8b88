"""The PyTorch 2:4 workflow: permute channels, prune, retrain with the masks kept, export.

    report = pysparse24.torch.permute_channels(model, example_input)  # optional: keeps more magnitude
    report = pysparse24.torch.sparsify(model, pattern="2:4")          # masks fixed from now on
    # or, without retraining: sparsify(model, "2:4", method="sparsegpt" | "wanda", calibration=batches)
    print(report)                                                     # layer, shape, pattern, kept |w|
    ... retrain as usual ...
    pysparse24.torch.export_onnx(model, example_input, "model.onnx")  # weights stay 2:4 (verified)
    pysparse24.torch.save_safetensors(model, "model.safetensors")     # for `pysparse24 compress`
"""
from pysparse24.torch.export import export_onnx, save_safetensors, verify_onnx_sparsity
from pysparse24.torch.permutation import PermutationResult, find_permutation, permute_channels
from pysparse24.torch.sparsify import SparsityReport, finalize, restore, sparse_layers, sparsify, undo

__all__ = [
    "PermutationResult", "SparsityReport", "export_onnx", "finalize", "find_permutation", "permute_channels",
    "restore", "save_safetensors", "sparse_layers", "sparsify", "undo", "verify_onnx_sparsity",
]
