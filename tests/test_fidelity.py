"""The fidelity ladder on the bundled real-data ViT: the integer emulator tracks fake-quant."""

import numpy as np
import pytest
import torch

from repq_hw.emu.execute import run_graph
from repq_hw.pipeline import calibrated_and_lowered, host_input_codes, run_fidelity
from repq_hw.quant.model import QuantConfig


@pytest.mark.parametrize("bits", [8, 6, 4])
def test_bundled_vit_bit_exact_on_real_images(bits):
    from repq_hw.data.digits import load_digits_split

    _, q, g, calib = calibrated_and_lowered("vit_digits", QuantConfig(w_bits=bits, a_bits=bits))
    xs, _ = load_digits_split("test")
    codes = host_input_codes(g, xs[:7].numpy())
    # host preprocessing is the fake-quant input quantizer, bit for bit
    assert np.array_equal(codes, q.patch_embed.proj.input_quantizer.codes(xs[:7]).numpy().astype(np.uint8))
    ref = run_graph(g, codes, "ref", keep_all=True)
    fast = run_graph(g, codes, "fast", keep_all=True)
    for k in ref:
        assert np.array_equal(ref[k], fast[k]), k
    one = run_graph(g, codes[3:4], "fast", keep_all=True)
    for k in one:
        assert np.array_equal(one[k][0], fast[k][3]), k


# The targets are statistics over the 3,000 held-out MNIST test images of the bundled vit_mnist (trained on
# the 2,000-image MNIST train split, calibrated on 32 of those; repq_hw.data.mnist), so that no single
# flipped image decides them (on vit_digits' 360 digits test images, 0.5 pt is under two images; its
# ladder is still run below, and its numbers are the README's). Intervals are 95 %: Wilson for the
# agreement proportion, Bonett-Price paired for the accuracy gap (repq_hw.fidelity).
TARGET_MODEL = "vit_mnist"
TARGET_DATA = "mnist"  # vit_mnist's own data: its MNIST test split, all of it
TARGET_N = 3000
AGREEMENT_TARGET = {8: 0.99, 4: 0.97}  # lower 95 % bound of integer vs fake-quant top-1 agreement
GAP_TARGET_W8A8 = 0.005  # the 95 % interval of integer minus fake-quant top-1 lies within +-0.5 pt


@pytest.fixture(scope="module")
def target_reports():
    reports = run_fidelity(TARGET_MODEL, [QuantConfig(w_bits=b, a_bits=b) for b in AGREEMENT_TARGET],
                           TARGET_DATA, progress=False)
    return dict(zip(AGREEMENT_TARGET, reports))


@pytest.mark.slow
@pytest.mark.float_dependent
@pytest.mark.parametrize("bits", sorted(AGREEMENT_TARGET, reverse=True))
def test_agreement_target_on_vit_mnist(target_reports, bits):
    """Integer emulator vs fake-quant top-1 agreement: the 95 % Wilson lower bound meets the target."""
    st = target_reports[bits].targets()
    assert st.n == TARGET_N
    assert st.agreement.low >= AGREEMENT_TARGET[bits], st.line()


@pytest.mark.slow
@pytest.mark.float_dependent
def test_accuracy_gap_target_on_vit_mnist(target_reports):
    """W8A8: the 95 % paired interval of integer minus fake-quant top-1 lies within +-0.5 pt."""
    rep = target_reports[8]
    st = rep.targets()
    assert st.n == TARGET_N
    fq, integer = rep.rows[1], rep.rows[3]
    assert 100 * st.gap.estimate == pytest.approx(integer.top1 - fq.top1, abs=1e-9)
    assert -GAP_TARGET_W8A8 <= st.gap.low and st.gap.high <= GAP_TARGET_W8A8, st.line()
    assert torch.isfinite(torch.tensor(list(rep.sqnr.values()))).all()


@pytest.mark.slow
def test_vit_digits_ladder_runs_on_its_test_split():
    """The ladder of vit_digits on its 360 digits test images (the README's numbers) still runs; the
    statistical targets are asserted on vit_mnist above, 360 images being too few to decide them."""
    reports = run_fidelity("vit_digits", [QuantConfig(w_bits=b, a_bits=b) for b in (8, 4)], progress=False)
    for rep in reports:
        st = rep.targets()
        assert st.n == 360
        assert rep.rows[0].stage == "float" and rep.rows[3].stage == "integer emulator"
        assert all(0.0 <= r.top1 <= 100.0 and 0.0 <= r.agreement <= 100.0 for r in rep.rows)
        assert torch.isfinite(torch.tensor(list(rep.sqnr.values()))).all()
