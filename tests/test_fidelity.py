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


@pytest.mark.slow
def test_fidelity_targets_on_bundled_vit():
    """Targets of the fidelity ladder (digits test split, 360 images)."""
    w8, w4 = run_fidelity("vit_digits", [QuantConfig(w_bits=8, a_bits=8), QuantConfig(w_bits=4, a_bits=4)],
                          progress=False)
    fq8, int8 = w8.rows[1], w8.rows[3]
    assert int8.agreement >= 99.0
    assert abs(int8.top1 - fq8.top1) <= 0.5
    assert w4.rows[3].agreement >= 97.0
    assert torch.isfinite(torch.tensor(list(w8.sqnr.values()))).all()
