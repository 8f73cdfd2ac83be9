"""`repq-hw ablation` (pipeline.run_ablation) on the bundled real-data ViT: the rows, their order and
properties that hold under any torch float path (this module runs again in the second test pass with torch
on other CPU paths)."""

import pytest

from repq_hw.pipeline import ABLATION_ROWS, ablation_markdown, eval_batches, run_ablation

pytestmark = pytest.mark.float_dependent


@pytest.fixture(scope="module")
def w8_rows():
    return run_ablation("vit_digits", bits=(8,), calib_size=16, progress=False)


def test_rows_are_float_then_every_method_in_order(w8_rows):
    assert [(label, bits) for label, bits, _ in w8_rows] == \
        [("float", "fp32")] + [(label, "W8A8") for label, _ in ABLATION_ROWS]
    n = w8_rows[0][2].n
    assert n == 360 and all(acc.n == n for *_, acc in w8_rows)


def test_float_row_is_the_float_model(w8_rows):
    from repq_hw.evaluate import evaluate
    from repq_hw.models.registry import create_model

    m = create_model("vit_digits")
    data, n = eval_batches(m, "vit_digits", None)
    assert evaluate(m, data, "float", False, n)[0] == w8_rows[0][2]


def test_w8a8_methods_stay_near_float(w8_rows):
    """At W8A8 every method is within 2 points (7 images of 360) of float on this model and its loss within
    0.05: far outside the one-ulp float differences between CPU paths, inside any real regression."""
    f = w8_rows[0][2]
    for label, _, acc in w8_rows[1:]:
        assert abs(acc.top1 - f.top1) <= 2.0, label
        assert abs(acc.loss - f.loss) <= 0.05, label


def test_markdown_table_has_every_row(w8_rows):
    md = ablation_markdown("vit_digits", w8_rows)
    for label, bits, acc in w8_rows:
        assert f"| {label} | {bits} | {acc.top1:.2f} |" in md
