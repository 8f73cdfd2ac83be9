"""The fidelity targets on the bundled Swin (swin_digits): the integer emulator tracks fake-quant with the
same targets as ViT, decided with 95 % intervals on all 1,797 digits images (``--data digits-all``).

Agreement and the accuracy gap compare two implementations of one quantized model on the same images, so
held-out images are not needed, only many of them: on the 360 test images alone the W8A8 Wilson interval
cannot exclude 99 % (README, "Fidelity ladder (bundled swin_digits)")."""

import pytest
import torch

from repq_hw.pipeline import DIGITS_ALL, run_fidelity
from repq_hw.quant.model import QuantConfig

AGREEMENT_TARGET = {8: 0.99, 4: 0.97}  # lower 95 % Wilson bound of integer vs fake-quant top-1 agreement
GAP_TARGET_W8A8 = 0.005  # the 95 % paired interval of integer minus fake-quant top-1 within +-0.5 pt
N_DIGITS = 1797


@pytest.fixture(scope="module")
def swin_reports():
    reports = run_fidelity("swin_digits", [QuantConfig(w_bits=b, a_bits=b) for b in AGREEMENT_TARGET], DIGITS_ALL,
                           progress=False)
    return dict(zip(AGREEMENT_TARGET, reports))


@pytest.mark.slow
@pytest.mark.float_dependent
@pytest.mark.parametrize("bits", sorted(AGREEMENT_TARGET, reverse=True))
def test_agreement_target_on_swin_digits(swin_reports, bits):
    st = swin_reports[bits].targets()
    assert st.n == N_DIGITS
    assert st.agreement.low >= AGREEMENT_TARGET[bits], st.line()


@pytest.mark.slow
@pytest.mark.float_dependent
def test_accuracy_gap_target_on_swin_digits(swin_reports):
    rep = swin_reports[8]
    st = rep.targets()
    fq, integer = rep.rows[1], rep.rows[3]
    assert 100 * st.gap.estimate == pytest.approx(integer.top1 - fq.top1, abs=1e-9)
    assert -GAP_TARGET_W8A8 <= st.gap.low and st.gap.high <= GAP_TARGET_W8A8, st.line()
    sq = rep.sqnr
    assert any(k.endswith("window_partition.out") for k in sq) and "head.fc_in.out" in sq
    assert torch.isfinite(torch.tensor(list(sq.values()))).all()
