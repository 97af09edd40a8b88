"""profiler.calibration and profiler.validate: the estimate formula and the validation run."""

import json

import numpy as np
import pytest

from profiler import calibration
from profiler.backends import get_backend
from profiler.cli import main as profiler_main
from profiler.nas.space import load_space
from profiler.spec import LayerSpec
from profiler.table import LatencyTable
from profiler.validate import metrics


def test_fit_recovers_an_affine_law_and_apply_is_vectorised():
    rng = np.random.default_rng(3)
    sums = rng.uniform(0.2, 2.0, 40)
    layers = rng.integers(4, 12, 40)
    measured = 0.93 * sums - 0.004 * layers + 0.012
    calib = calibration.fit(sums, layers, measured)
    assert calib["scale"] == pytest.approx(0.93) and calib["per_layer_ms"] == pytest.approx(-0.004)
    assert calib["offset_ms"] == pytest.approx(0.012) and calib["fit_mape_pct"] < 1e-9
    grid = calibration.apply(sums.reshape(4, 10), layers.reshape(4, 10), calib)
    np.testing.assert_allclose(grid.ravel(), measured)
    with_nan = calibration.apply([0.5, np.nan], [5, 5], calib)
    assert np.isfinite(with_nan[0]) and np.isnan(with_nan[1])
    np.testing.assert_array_equal(calibration.apply([0.5, 1.5], [3, 4], None), [0.5, 1.5])
    np.testing.assert_allclose(calibration.apply(sums, layers, calibration.identity()), sums)


def test_fit_with_one_layer_count_and_bad_input():
    sums = np.array([0.1, 0.2, 0.4, 0.8])
    calib = calibration.fit(sums, [6, 6, 6, 6], 1.1 * sums - 0.02)
    assert calib["per_layer_ms"] == 0.0 and calib["offset_ms"] == pytest.approx(-0.02)
    with pytest.raises(ValueError, match="at least 3"):
        calibration.fit([0.1, 0.2], [3, 4], [0.1, 0.2])
    with pytest.raises(ValueError, match="same length"):
        calibration.fit([0.1, 0.2, 0.3], [3, 4], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="positive"):
        calibration.fit([0.1, 0.2, 0.3], [3, 4, 5], [0.1, 0.0, 0.3])
    with pytest.raises(ValueError, match="affine-v1"):
        calibration.apply([1.0], [1], {"kind": "other"})


def test_metrics():
    measured = np.array([1.0, 2.0, 3.0, 4.0])
    m = metrics(measured * [1.05, 0.8, 1.2, 0.7], measured)  # ranks 1 2 4 3
    assert m["n"] == 4 and m["within_10pct"] == 0.25 and m["mape_pct"] == pytest.approx(18.75)
    assert m["spearman"] == pytest.approx(0.8) and m["max_abs_err_pct"] == pytest.approx(30.0)


def test_validate_command_end_to_end(tmp_path):
    backend = get_backend("onnxruntime", threads=1, cpus=None)  # no pinning of the test process
    path = tmp_path / "lut.sqlite"
    LatencyTable(path, context=backend.context()).close()  # empty: validate fills what it needs
    out = tmp_path / "val"

    def argv(calibrate, seed, *extra):
        return [
            "validate",
            "--table",
            str(path),
            "--networks",
            "3",
            "--calibrate",
            str(calibrate),
            "--rounds",
            "1",
            "--seed",
            str(seed),
            "--out",
            str(out),
            "-o",
            "cpus=null",
            *extra,
        ]

    assert profiler_main(argv(3, 5)) == 0
    report = json.loads((out / "validation.json").read_text())
    assert (out / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with LatencyTable(path) as table:
        assert table.calibration() == report["calibration"]  # stored for NAS
        nets = report["networks"]
        assert len(nets) == 3 and len(report["calibration_networks"]) == 3
        for net in nets:  # sums really come from the table
            assert net["sum_ms"] == pytest.approx(float(table.medians_ms(net["keys"]).sum()))
            assert net["estimate_ms"] == pytest.approx(
                float(calibration.apply(net["sum_ms"], len(net["keys"]), report["calibration"]))
            )
            assert net["measured_ms"] > 0
        space = load_space("demo")  # networks of the demo space
        for net in nets:
            assert space.encode([LayerSpec.from_key(k) for k in net["keys"]]).shape == (space.width,)
    assert set(report["metrics"]) == {"calibrated", "plain_sum"}

    # --calibrate 0 re-validates the stored calibration on fresh networks; --remeasure refreshes
    # exactly the layers of the sampled networks; --min-within above 100% must fail the run.
    assert profiler_main(argv(0, 9, "--remeasure", "--min-within", "1.01")) == 1
    again = json.loads((out / "validation.json").read_text())
    assert again["calibration"] == report["calibration"] and again["missing_layers_measured"] == 0
    assert again["layers_remeasured"] == len({k for net in again["networks"] for k in net["keys"]})


def test_validate_refuses_another_context(tmp_path):
    path = tmp_path / "lut.sqlite"
    other = {**get_backend("onnxruntime", cpus=None).context(), "device": "some other CPU"}
    LatencyTable(path, context=other).close()
    assert (
        profiler_main(["validate", "--table", str(path), "--networks", "3", "--out", str(tmp_path), "-o", "cpus=null"])
        == 2
    )
    assert profiler_main(["validate", "--table", str(tmp_path / "nope.sqlite"), "--out", str(tmp_path)]) == 2
