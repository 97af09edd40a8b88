"""The PyTorch 2:4 workflow: permute channels, prune, retrain with the masks kept, export.

    report = pysparse24.torch.permute_channels(model, example_input)  # optional: keeps more magnitude
    report = pysparse24.torch.sparsify(model, pattern="2:4")          # masks fixed from now on
    # or, without retraining: sparsify(model, "2:4", method="sparsegpt" | "wanda", calibration=batches)
    #   then, for a CNN with BatchNorm: recalibrate_batch_norms(model, batches)
    print(report)                                                     # layer, shape, pattern, kept |w|
    ... retrain as usual ...
    pysparse24.torch.export_onnx(model, example_input, "model.onnx")  # weights stay 2:4 (verified)
    pysparse24.torch.save_safetensors(model, "model.safetensors")     # for `pysparse24 compress`

Run it sparse (inference): every 2:4 Linear/Conv2d becomes a SparseLinear/SparseConv2d holding values +
metadata, whose forward is a torch.library op (pysparse24::linear / conv2d; torch.compile and torch.export
see them):
    report = pysparse24.torch.to_sparse_(model)                       # layer, shape, kernel, skipped and why
"""

from pysparse24.torch.convert import ConversionReport, LayerConversion, to_sparse_
from pysparse24.torch.export import export_onnx, save_safetensors, verify_onnx_sparsity
from pysparse24.torch.modules import SparseConv2d, SparseLinear
from pysparse24.torch.oneshot import recalibrate_batch_norms
from pysparse24.torch.permutation import PermutationResult, find_permutation, permute_channels
from pysparse24.torch.sparsify import SparsityReport, finalize, restore, sparse_layers, sparsify, undo

__all__ = [
    "ConversionReport",
    "LayerConversion",
    "PermutationResult",
    "SparseConv2d",
    "SparseLinear",
    "SparsityReport",
    "export_onnx",
    "finalize",
    "find_permutation",
    "permute_channels",
    "recalibrate_batch_norms",
    "restore",
    "save_safetensors",
    "sparse_layers",
    "sparsify",
    "to_sparse_",
    "undo",
    "verify_onnx_sparsity",
]
