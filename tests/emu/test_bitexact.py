"""The two executors (numpy references, Numba kernels) agree bit for bit on every tensor."""

import copy

import numpy as np
import pytest
import torch

from repq_hw.emu.execute import run_graph
from repq_hw.fidelity import input_codes
from repq_hw.lower.vit import LoweringError, lower_vit
from repq_hw.quant.model import QuantConfig, build_calibrated
from tests.conftest import calibrated, lowered


def assert_all_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert np.array_equal(a[k], b[k]), f"tensor {k} differs"


@pytest.mark.parametrize("name", ["test_vit", "test_deit"])
@pytest.mark.parametrize("bits", [8, 6, 4])
def test_ref_equals_fast_on_every_tensor(name, bits):
    q, g, _ = lowered(name, bits)
    x = torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(bits))
    codes = input_codes(q, x)
    ref = run_graph(g, codes, "ref", keep_all=True)
    fast = run_graph(g, codes, "fast", keep_all=True)
    assert len(ref) == len(g.tensors)
    assert_all_equal(ref, fast)


def test_random_integer_inputs_including_extremes():
    """Codes straight from an RNG (not via a quantizer), with all-0 and all-255 images."""
    q, g, _ = lowered("test_deit", 8)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    codes[0] = 0
    codes[1] = 255
    assert_all_equal(run_graph(g, codes, "ref", keep_all=True), run_graph(g, codes, "fast", keep_all=True))


@pytest.mark.parametrize("backend", ["ref", "fast"])
def test_results_do_not_depend_on_the_batch(backend):
    q, g, _ = lowered("test_deit", 4)
    x = torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    codes = input_codes(q, x)
    batch = run_graph(g, codes, backend, keep_all=True)
    for i in (0, 3, 6):
        one = run_graph(g, codes[i:i + 1], backend, keep_all=True)
        for k in one:
            assert np.array_equal(one[k][0], batch[k][i]), (i, k)


def test_thread_count_does_not_change_results(numba_threads):
    q, g, _ = lowered("test_vit", 6)
    codes = input_codes(q, torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(2)))
    numba_threads(1)
    one = run_graph(g, codes, "fast", keep_all=True)
    numba_threads(2)
    two = run_graph(g, codes, "fast", keep_all=True)
    assert_all_equal(one, two)


def test_input_errors():
    q, g, _ = lowered("test_deit", 4)
    with pytest.raises(ValueError, match=r"input 'input': expected shape \[B, 3, 32, 32\]"):
        run_graph(g, np.zeros((1, 3, 16, 16), np.uint8))
    with pytest.raises(TypeError, match="integer numpy array"):
        run_graph(g, np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="outside uint8"):
        run_graph(g, np.full((1, 3, 32, 32), 300, np.int32))
    with pytest.raises(ValueError, match="backend"):
        run_graph(g, np.zeros((1, 3, 32, 32), np.uint8), "gpu")


def test_lowering_refuses_what_it_cannot_represent():
    m, _, _, x = calibrated("test_deit", 4)
    for cfg in (QuantConfig(zero_point="mean"), QuantConfig(method="naive"), QuantConfig(reparam=False)):
        q = build_calibrated(copy.deepcopy(m), x, cfg, progress=False)
        with pytest.raises(LoweringError, match="zero_point='round'"):
            lower_vit(q, cfg, x)
    from repq_hw.models.registry import create_model

    ls = create_model("test_vit_layerscale")
    q = build_calibrated(ls, x, QuantConfig(), progress=False)
    with pytest.raises(LoweringError, match="blocks.0.ls1: LayerScale"):
        lower_vit(q, QuantConfig(), x)
    swin = create_model("test_swin")
    q = build_calibrated(swin, x, QuantConfig(), progress=False)
    with pytest.raises(LoweringError, match="VisionTransformer"):
        lower_vit(q, QuantConfig(), x)


def test_integer_tracks_fake_quant_on_random_model():
    """Sanity of the lowering itself: W8A8 integer logits are close to fake-quant ones."""
    from repq_hw.fidelity import fidelity

    m, q, cfg, x = calibrated("test_deit", 8)
    _, g, _ = lowered("test_deit", 8)
    xs = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ys = m(xs).argmax(1)
    rep = fidelity(m, q, g, xs, ys, "W8A8")
    integer = rep.rows[-1]
    assert integer.cosine > 0.999
    assert min(rep.sqnr.values()) > 25


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "deit_small_patch16_224"])
def test_full_size_deit_lowers_and_runs_bit_exact(name):
    from repq_hw.models.registry import create_model

    torch.manual_seed(0)
    m = create_model(name)
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    cfg = QuantConfig(w_bits=8, a_bits=8)
    q = build_calibrated(m, x, cfg, progress=False)
    g = lower_vit(q, cfg, x)
    codes = input_codes(q, x[:1])
    assert_all_equal(run_graph(g, codes, "ref", keep_all=True), run_graph(g, codes, "fast", keep_all=True))
