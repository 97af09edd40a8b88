"""The published GPUNet configs import into LayerSpecs, build, and match the published sizes."""

import json

import pytest

from profiler.blocks import build_network, output_shape
from profiler.nas.complexity import complexity
from profiler.nas.gpunet import CONFIG_DIR, GPUNET_MODELS, load_gpunet_config


def config(name):
    return CONFIG_DIR / GPUNET_MODELS[name]


@pytest.mark.parametrize("name", sorted(GPUNET_MODELS))
def test_configs_import_as_chained_specs(name):
    specs = load_gpunet_config(config(name))
    raw = json.loads(config(name).read_text())
    assert len(specs) == len(raw) - 1
    res = raw[0]["img_resolution"]
    assert specs[0].in_shape == (1, 3, res, res)
    assert specs[-1].op == "tail"
    for prev, cur in zip(specs, specs[1:]):
        assert cur.in_shape == output_shape(prev)
    for spec, layer in zip(specs, raw[1:]):
        assert spec.out_channels == layer["num_out_channels"]
        assert spec.distill == raw[0]["distill"]
        if "expansion" in layer:
            assert spec.expansion == pytest.approx(layer["expansion"])


def test_distill_family_and_defaults():
    d2 = load_gpunet_config(config("GPUNet-D2"))
    assert d2[0].op == "head_large" and all(s.distill and s.act == "relu" and not s.se for s in d2)
    g0 = load_gpunet_config(config("GPUNet-0"))
    assert g0[0].act == "swish"  # the published builder's default when a head omits "act"
    assert not any(s.distill for s in g0)
    assert load_gpunet_config(config("GPUNet-0"), batch=4, precision="fp16")[5].in_shape[0] == 4
    assert load_gpunet_config("GPUNet-0") == g0  # by published name


# Published sizes (paper Table, as listed by Papers with Code for arXiv 2205.00841: GPUNet-D1 10.6 M
# params / 3.66 GFLOPs; the 83.6 %-top-1 model released as GPUNet-D2: 19 M / 15.6 GFLOPs) and GPUNet-0's
# 11.9 M / 3.25 GFLOPs. FLOPs in these papers are multiply-adds. See benchmarks/RESULTS.md for all seven.
PUBLISHED_PARAMS_M = {"GPUNet-0": 11.9, "GPUNet-D1": 10.6, "GPUNet-D2": 19.0}
PUBLISHED_GMACS = {"GPUNet-0": 3.25, "GPUNet-D2": 15.6}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS_M))
def test_counts_match_published_models(name):
    c = complexity(load_gpunet_config(config(name)))
    assert c.params / 1e6 == pytest.approx(PUBLISHED_PARAMS_M[name], rel=0.01)
    if name in PUBLISHED_GMACS:
        assert c.macs / 1e9 == pytest.approx(PUBLISHED_GMACS[name], rel=0.01)


def test_mac_count_matches_hand_count_of_a_small_network():
    from profiler.spec import LayerSpec

    head = LayerSpec("head", (1, 3, 32, 32), 8, kernel=3, stride=2, act="relu")
    irb = LayerSpec("irb", (1, 8, 16, 16), 8, kernel=3, stride=1, expansion=2, act="relu")
    c = complexity([head, irb])
    mid = irb.mid_channels  # 16
    macs = 16 * 16 * 8 * 3 * 3 * 3 + 16 * 16 * (8 * mid + mid * 9 + mid * 8)
    params = 3 * 3 * 3 * 8 + 2 * 8 + (8 * mid + 2 * mid) + (9 * mid + 2 * mid) + (mid * 8 + 2 * 8)
    assert (c.macs, c.params) == (macs, params)
    assert sum(p.numel() for p in build_network([head, irb]).parameters()) == params


@pytest.mark.parametrize(
    "layer, message",
    [
        ({"layer_type": "warp", "num_in_channels": 3, "num_out_channels": 8}, "unknown layer_type"),
        ({"layer_type": "conv", "num_in_channels": 3, "num_out_channels": 8, "stride": 1}, "missing field"),
        ({"layer_type": "head", "num_in_channels": 4, "num_out_channels": 8}, "num_in_channels=4"),
        ({"layer_type": "tail", "num_in_channels": 3, "num_out_channels": 8, "num_classes": 10}, "1000-class"),
    ],
)
def test_bad_configs_rejected(tmp_path, layer, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"layer_type": "data", "img_resolution": 64, "distill": False}, layer]))
    with pytest.raises(ValueError, match=message):
        load_gpunet_config(path)
    path.write_text("[{]")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_gpunet_config(path)
