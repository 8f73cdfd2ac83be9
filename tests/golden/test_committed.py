"""The committed sample sets in golden_vectors/: size, hashes, schema, verify, and byte equality with a
regeneration (any change to the integer arithmetic changes these bytes and must be committed on purpose:
`repq-hw golden committed --force`)."""

import hashlib
import json

import pytest

from repq_hw.golden import COMMITTED_SETS, GoldenSet, validate_manifest, verify_golden_set
from repq_hw.golden.model import GOLDEN_ROOT, HASH_FILE, check_committed, compare_sets, hash_lines
from tests.golden.helpers import bundled_weights_present, committed_paths

MAX_BYTES = 16_000_000  # two vit_digits sets, the swin_digits set, the directed sets


def _need_sets():
    if len(committed_paths()) < len(COMMITTED_SETS):
        if not bundled_weights_present():
            pytest.skip("the committed golden sets need the bundled vit_digits weights (not trained yet)")
        pytest.fail("golden_vectors/ lacks the committed sets: run `repq-hw golden committed --force`")


def test_committed_specs_are_named_by_convention():
    assert [s.name for s in COMMITTED_SETS] == ["vit_digits.w4a4.seed0", "vit_digits.w8a8.seed0",
                                                "swin_digits.w8a8.seed0"]
    cmd = COMMITTED_SETS[0].command()
    assert cmd.startswith("repq-hw golden --model vit_digits --bits 4 --images 2 --seed 0 ")
    assert cmd.endswith("--out golden_vectors/vit_digits.w4a4.seed0")


def test_folder_is_small():
    size = sum(p.stat().st_size for p in GOLDEN_ROOT.rglob("*") if p.is_file())
    assert size < MAX_BYTES, f"golden_vectors/ holds {size} bytes (limit {MAX_BYTES})"


def test_manifests_hashes_and_contents():
    _need_sets()
    for spec in COMMITTED_SETS:
        gs = GoldenSet(GOLDEN_ROOT / spec.name)
        m = gs.manifest
        validate_manifest(m)
        assert (m["model"], m["bits"]["w"], m["bits"]["a"], m["seed"]) == (spec.model, spec.bits, spec.bits, spec.seed)
        assert m["inputs"]["ids"] == [f"digits:test:{i}" for i in range(spec.images)]
        assert m["selection"] == spec.selection.to_json() and m["formats"] == spec.formats.to_json()
        for f in m["files"]:
            assert hashlib.sha256((gs.path / f["path"]).read_bytes()).hexdigest() == f["sha256"]
        assert json.loads((gs.path / "provenance.json").read_text())["tool"] == "repq-hw"
    assert (GOLDEN_ROOT / HASH_FILE).read_text() == hash_lines(GOLDEN_ROOT, [s.name for s in COMMITTED_SETS])


def test_committed_sets_verify():
    _need_sets()
    for p in committed_paths():
        rep = verify_golden_set(p)
        assert rep.ok, rep.text()


def test_regeneration_is_byte_identical():
    """Rebuild both sets from their stored IR and input codes (numpy only) and compare every byte."""
    _need_sets()
    diffs = check_committed(GOLDEN_ROOT)
    assert not diffs, "committed golden sets differ from a regeneration:\n" + "\n".join(diffs[:20])


@pytest.mark.slow
@pytest.mark.float_dependent
def test_regeneration_from_the_model_is_byte_identical(tmp_path):
    """Calibrate and lower vit_digits again (torch) and rewrite the sets: catches lowering changes too.

    In the reproducible float mode the bytes must equal the committed ones whatever CPU runs this.  When
    this process runs torch on other float paths (the second test pass: fast float, other CPU levels
    pinned), the sets are regenerated in a fresh interpreter in the reproducible mode, which must override
    those settings and still give the committed bytes."""
    _need_sets()
    import os
    import subprocess
    import sys

    from repq_hw import float_env
    from repq_hw.golden.model import regenerate_committed

    if float_env.fast_float_requested():
        env = {k: v for k, v in os.environ.items() if k != float_env.FAST_FLOAT_ENV}
        code = ("import sys; from repq_hw.golden.model import regenerate_committed; "
                "regenerate_committed(sys.argv[1], progress=False)")
        subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, check=True, timeout=1200)
        prov = json.loads((tmp_path / COMMITTED_SETS[0].name / "provenance.json").read_text())
        assert prov["float_env"]["reproducible"] is True, prov["float_env"]
        assert prov["float_env"]["overridden"] == {k: os.environ[k] for k in float_env.PINNED_ENV
                                                   if k in os.environ and os.environ[k] != float_env.PINNED_ENV[k]}
    else:
        regenerate_committed(tmp_path, progress=False)
    lines = []
    for s in COMMITTED_SETS:  # compare_sets says why they may differ (fast-float / no record, torch versions)
        c = compare_sets(GOLDEN_ROOT / s.name, tmp_path / s.name, labels=("committed", "regenerated"))
        lines += [f"{s.name}: {ln}" for ln in c.lines()]
    assert not lines, "a fresh calibration + lowering gives different golden bytes:\n" + "\n".join(lines)


def test_the_documented_command_line_selects_what_the_spec_says():
    """`CommittedSpec.command()` (printed in golden_vectors/regenerate.sh) parses to the same selection
    and formats as the committed specs."""
    import shlex

    from repq_hw.cli import build_parser
    from repq_hw.golden.command import _selection
    from repq_hw.golden.writer import Formats

    for spec in COMMITTED_SETS:
        a = build_parser().parse_args(shlex.split(spec.command())[1:])
        assert _selection(a) == spec.selection
        assert Formats(tensors=a.formats, constants=a.const_formats, lanes=a.lanes,
                       rom_max_words=a.rom_max_words) == spec.formats
        assert (a.model, a.bits, a.images, a.seed) == (spec.model, spec.bits, spec.images, spec.seed)


def test_demo_helper_writes_a_set_and_prints_how_to_replay(tmp_path, monkeypatch):
    from repq_hw.golden import model as gm
    from tests.golden.helpers import tiny_graph

    g, codes = tiny_graph()
    monkeypatch.setattr(gm, "digits_inputs", lambda g, n=2, ids=None: (codes[:n], [f"digits:test:{i}" for i in range(n)]))
    printed = []
    p = gm.write_demo_golden(g, tmp_path / "golden" / "demo", selection=gm.Selection(ops=("blocks.0.*", "head*")),
                             progress=False, print_fn=printed.append)
    p = gm.write_demo_golden(g, p, selection=gm.Selection(ops=("blocks.0.*", "head*")), progress=False,
                             print_fn=printed.append)  # a second demo run replaces its own set
    text = printed[-1]
    assert f"repq-hw golden verify {p}" in text
    assert f"repq-hw golden replay {p} --op blocks.0.attn.softmax" in text
    assert f"repq-hw golden replay {p} --op blocks.0.norm1" in text
    assert verify_golden_set(p).ok
