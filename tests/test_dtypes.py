"""pysparse24.dtypes: every spelling of a dtype maps to one canonical name, and table precisions from it."""

import ml_dtypes
import numpy as np
import pytest
import torch

from pysparse24 import dtypes


@pytest.mark.parametrize(
    "spelling, name",
    [
        ("fp16", "float16"),
        ("half", "float16"),
        ("float16", "float16"),
        (torch.float16, "float16"),
        (np.float16, "float16"),
        (np.dtype("float16"), "float16"),
        ("bf16", "bfloat16"),
        (torch.bfloat16, "bfloat16"),
        (ml_dtypes.bfloat16, "bfloat16"),
        ("FP32", "float32"),
        (torch.float32, "float32"),
        ("int8", "int8"),
        (torch.float8_e4m3fn, "float8_e4m3fn"),
        (ml_dtypes.float8_e4m3fn, "float8_e4m3fn"),
        ("e5m2", "float8_e5m2"),
        (torch.zeros(2, dtype=torch.bfloat16), "bfloat16"),
        (np.zeros(2, dtype=np.int8), "int8"),
    ],
)
def test_every_spelling_has_one_name(spelling, name):
    assert dtypes.canonical(spelling) == name


def test_table_precisions_and_torch_dtypes():
    assert [dtypes.precision_name(s) for s in ("float32", torch.float16, "bf16", np.int8)] == [
        "fp32",
        "fp16",
        "bf16",
        "int8",
    ]
    assert dtypes.torch_dtype("fp16") is torch.float16 and dtypes.torch_dtype(ml_dtypes.bfloat16) is torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'fp12'"):
        dtypes.canonical("fp12")
    with pytest.raises(ValueError, match="no table precision for float8_e5m2"):
        dtypes.precision_name("float8_e5m2")


def test_the_maps_that_used_to_be_separate_agree():
    from profiler.backends.torch_backend import DTYPES
    from profiler.spec import PRECISIONS
    from pysparse24.cuda.arrays import dtype_name

    assert PRECISIONS is dtypes.PRECISIONS == ("fp32", "fp16", "int8", "bf16")

    assert DTYPES == {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    assert dtype_name("fp16") == dtype_name(torch.float16) == dtype_name(np.float16) == "float16"
