"""``repq-hw golden``: write, verify and replay golden-vector sets (registered by ``repq_hw.cli``).

    repq-hw golden --model vit_digits --bits 4 --images 2 --out golden_vectors/vit_digits.w4a4.seed0
    repq-hw golden --ir runs/ir --inputs codes.npy --out gs/                 # numpy only
    repq-hw golden verify DIR
    repq-hw golden replay DIR [--op NAME ...]                                # Icarus Verilog
    repq-hw golden diff DIR DUMP_DIR [--map MAPPING.json] [--partial]        # first divergence of a device dump
    repq-hw golden committed [--check] [--from-ir golden_vectors]            # the committed sample sets
    repq-hw golden --directed [--op-type T] [--bits 4,8] --out DIR           # directed corner-case sets
    repq-hw golden coverage SET [SET ...] [--no-write]                       # functional coverage bins
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repq_hw.argtypes import bits, nonneg_int, positive_int

_TENSOR_FORMATS = ("npy", "hex", "bin")
_CONST_FORMATS = ("npy", "hex", "bin", "coe", "mif")


def _csv(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


def _ints(s: str) -> list[int]:
    """Comma-separated image indices (integers >= 0), at least one."""
    items = _csv(s)
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated image indices such as 0,5,7, got {s!r}")
    return [nonneg_int(x) for x in items]


def _formats_of(known: tuple[str, ...]):
    def parse(s: str) -> tuple[str, ...]:
        items = _csv(s)
        if not items:
            raise argparse.ArgumentTypeError(f"expected comma-separated formats from {','.join(known)}, got {s!r}")
        bad = [x for x in items if x not in known]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown format(s) {','.join(bad)}; known: {','.join(known)}")
        return items

    return parse


def _bits_list(s: str) -> int | tuple[int, ...]:
    """One bit width (``4`` -> 4) or, for ``--directed``, a comma-separated list (``4,8`` -> (4, 8))."""
    items = _csv(s)
    if not items:
        raise argparse.ArgumentTypeError(f"expected a bit width such as 4 or a list such as 4,8, got {s!r}")
    if len(items) == 1 and "," not in s:
        return bits(items[0])
    return tuple(bits(x) for x in items)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "golden", help="golden vectors for RTL verification: write a set, verify it, replay it on the RTL",
        allow_abbrev=False,
        description="Write a golden-vector set: for every selected op of the integer IR, in execution order, "
                    "its input and output tensors and its integer constants (.npy/.hex/.bin, .coe/.mif for "
                    "constant ROMs), the IR itself and a manifest. Format: docs/golden_format.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="actions:\n  repq-hw golden verify DIR\n  repq-hw golden replay DIR [--op NAME]\n"
               "  repq-hw golden committed [--check]\n  repq-hw golden coverage SET [SET ...]\n"
               "  repq-hw golden --directed [--op-type T] [--bits 4,8] --out DIR")
    src = p.add_argument_group("IR source (--ir, or --model to calibrate and lower)")
    src.add_argument("--ir", help="an IR directory (graph.json + constants.npz): numpy only")
    src.add_argument("--model", help="calibrate + lower this model (torch), e.g. vit_digits")
    src.add_argument("--bits", type=_bits_list, help="W and A bits (e.g. 4 for W4A4; with --directed a list, 4,8)")
    src.add_argument("--directed", action="store_true",
                     help="write the directed corner-case sets (one per op type and bit setting, selected with "
                          "--op-type and --bits) under --out (repq_hw/golden/directed.py)")
    src.add_argument("--w-bits", type=bits)
    src.add_argument("--a-bits", type=bits)
    src.add_argument("--seed", type=nonneg_int, help="calibration seed (recorded; default 0 with --model)")
    src.add_argument("--calib-size", type=positive_int, default=32)
    src.add_argument("--checkpoint", help="weights for --model")
    inp = p.add_argument_group("inputs (default: the first 2 digits test images)")
    inp.add_argument("--images", type=positive_int, help="the first N digits test images")
    inp.add_argument("--image-ids", type=_ints, help="digits test image indices, e.g. 0,5,7")
    inp.add_argument("--inputs", help=".npy of graph input codes [B, ...] (integer; numpy only) or float images")
    sel = p.add_argument_group("layer selection (default: every op)")
    sel.add_argument("--ops", action="append", default=[], metavar="GLOB",
                     help="node-name glob, repeatable or comma-separated (e.g. 'blocks.0.*')")
    sel.add_argument("--op-type", action="append", default=[], metavar="TYPE",
                     help="op type, repeatable or comma-separated (e.g. softmax,gemm)")
    sel.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="node-name glob to drop")
    fm = p.add_argument_group("formats")
    fm.add_argument("--formats", type=_formats_of(_TENSOR_FORMATS), default=("npy", "hex", "bin"),
                    help="tensor formats (npy,hex,bin)")
    fm.add_argument("--const-formats", type=_formats_of(_CONST_FORMATS), default=("npy", "hex", "coe", "mif"),
                    help="constant formats (npy,hex,bin,coe,mif)")
    fm.add_argument("--lanes", type=positive_int, default=1,
                    help="elements per .hex line (lane 0 = least significant)")
    fm.add_argument("--rom-max-words", type=nonneg_int,
                    help="write .coe/.mif only for constants of at most N words")
    p.add_argument("--out", help="output directory (e.g. golden_vectors/<model>.<wXaY>.seed<seed>)")
    p.add_argument("--force", action="store_true", help="replace an existing golden set")
    p.add_argument("--backend", choices=("fast", "ref"), default="fast")
    p.add_argument("--no-progress", action="store_true")
    from repq_hw.cli import add_cluster_args

    add_cluster_args(p)
    p.set_defaults(func=cmd_golden)

    act = p.add_subparsers(dest="golden_action", metavar="{verify,replay,diff,committed,coverage}")
    v = act.add_parser("verify", help="re-execute the stored IR, check every hash and every element")
    v.add_argument("dir")
    v.add_argument("--backend", choices=("fast", "ref"), default="fast")
    v.set_defaults(func=cmd_verify)
    r = act.add_parser("replay", help="replay ops of a set on the reference RTL with Icarus Verilog")
    r.add_argument("dir")
    r.add_argument("--op", action="append", default=[], help="op name (repeatable; default: every op with a unit)")
    r.add_argument("--list", action="store_true", help="list the replayable ops and exit")
    r.set_defaults(func=cmd_replay)
    d = act.add_parser("diff", help="first divergence of a device dump (RTL simulation, board) from a set")
    d.add_argument("dir", help="the golden set")
    d.add_argument("dump", help="directory of dumped tensors: <tensor>.hex/.npy/.bin (or in its tensors/)")
    d.add_argument("--map", help="JSON mapping tensor name -> dump file (or {path, format, lanes})")
    d.add_argument("--partial", action="store_true", help="compare only the op outputs present in the dump")
    d.set_defaults(func=cmd_diff)
    c = act.add_parser("committed", help="regenerate (or --check) the committed sample sets in golden_vectors/")
    c.add_argument("--root", default=None, help="where the sets go (default: the repo's golden_vectors/)")
    c.add_argument("--from-ir", help="rebuild from the IR + inputs stored in these sets (numpy only, no calibration)")
    c.add_argument("--check", action="store_true",
                   help="rebuild into a temporary folder from the sets' own IR and compare byte for byte")
    c.add_argument("--force", action="store_true")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_committed)
    cv = act.add_parser("coverage", help="functional-coverage bins the set(s) hit, with counts; stored in each "
                                         "manifest's 'coverage' field")
    cv.add_argument("sets", nargs="+", metavar="SET")
    cv.add_argument("--no-write", action="store_true", help="print only; leave the manifests unchanged")
    cv.add_argument("--full", action="store_true", help="list log2_code's per-threshold bins one by one")
    cv.set_defaults(func=cmd_coverage)


def _selection(a):
    from repq_hw.golden.writer import Selection

    def flat(xs):
        return tuple(y for x in xs for y in _csv(x))

    return Selection(ops=flat(a.ops), op_types=flat(a.op_type), exclude=flat(a.exclude))


def cmd_golden(a) -> int:
    from repq_hw.golden.model import replay_hint
    from repq_hw.golden.writer import Formats, GoldenError, check_out, set_name, write_golden_set

    if a.directed:
        return cmd_directed(a)
    if isinstance(a.bits, tuple):
        raise GoldenError("--bits takes one width here (a list such as 4,8 is for --directed)")
    if a.ir and a.model:
        raise GoldenError("give either --ir or --model, not both")
    if not a.ir and not a.model:
        raise GoldenError("give --ir DIR (an existing IR) or --model NAME --bits B (calibrate and lower)")
    sel = _selection(a)
    fmts = Formats(tensors=a.formats, constants=a.const_formats, lanes=a.lanes, rom_max_words=a.rom_max_words)
    if a.inputs and (a.images or a.image_ids):
        raise GoldenError("give either --inputs or --images/--image-ids")
    if a.images is not None and a.image_ids:
        raise GoldenError("give either --images or --image-ids")
    if a.ir and any(v is not None for v in (a.bits, a.w_bits, a.a_bits, a.checkpoint)):
        raise GoldenError("--bits/--w-bits/--a-bits/--checkpoint apply to --model; an --ir IR has its bit widths")
    if a.out:
        check_out(Path(a.out), a.force, "--out")  # before any work: unwritable, or an existing set without --force
    if a.inputs and not Path(a.inputs).is_file():
        raise GoldenError(f"--inputs {a.inputs!r}: no such file")
    from repq_hw.execution import runner_from_args

    runner = runner_from_args(a)  # its options are checked now; the cluster starts after calibration
    progress = not a.no_progress
    if a.model:
        w = a.w_bits or a.bits
        x = a.a_bits or a.bits
        if w is None or x is None:
            raise GoldenError("--model needs --bits (or --w-bits and --a-bits)")
        from repq_hw.golden.model import lower_model

        seed = 0 if a.seed is None else a.seed
        g = lower_model(a.model, w, x, seed, a.calib_size, a.checkpoint)
        model = a.model
        from repq_hw.float_env import record  # torch is loaded on this path anyway

        fenv = record()
    else:
        from repq_hw.ir.graph import load_graph

        g = load_graph(a.ir)
        model, seed = g.meta.get("model"), a.seed
        fenv = None  # an existing IR: its meta.float_env says how its floats were made
    # without --out the name comes from the IR (meta.model, bit widths): set_name makes it one safe segment
    out = Path(a.out) if a.out else Path(set_name(model or "model", g, seed))
    check_out(out, a.force)
    if a.inputs:
        from repq_hw.cli import npy_input_codes  # one reader for run --npy and golden --inputs
        from repq_hw.golden.formats import sha256_bytes

        raw = Path(a.inputs).read_bytes()
        x = npy_input_codes(a.inputs, g, "--inputs")  # no pickles; shape, finiteness and code range checked
        ids = [f"npy:{sha256_bytes(raw)[:16]}:{i}" for i in range(len(x))]
        source = f"npy file {Path(a.inputs).name}"
    else:
        from repq_hw.golden.model import digits_inputs

        x, ids = digits_inputs(g, a.images if a.images is not None else 2, a.image_ids)
        source = "digits test split (repq_hw.data.digits), host-quantized"
    with runner as r:
        p = write_golden_set(g, x, out, input_ids=ids, model=model, seed=seed, selection=sel, formats=fmts,
                             force=a.force, backend=a.backend, progress=progress, input_source=source,
                             float_env=fenv, runner=r)
    print(f"golden set written to {p}/")
    print(replay_hint(p))
    return 0


def cmd_directed(a) -> int:
    from repq_hw.golden.directed import DIRECTED_BITS, write_directed
    from repq_hw.golden.writer import GoldenError

    if a.ir or a.model or a.inputs or a.images or a.image_ids or a.checkpoint:
        raise GoldenError("--directed builds its own graphs and inputs: drop --ir/--model/--inputs/--images")
    if not a.out:
        raise GoldenError("--directed needs --out DIR (the sets go to DIR/directed.<op>.w<b>a<b>/)")
    types = tuple(y for x in a.op_type for y in _csv(x)) or None
    widths = DIRECTED_BITS if a.bits is None else (a.bits if isinstance(a.bits, tuple) else (a.bits,))
    paths = write_directed(a.out, types, widths, force=a.force, backend=a.backend)
    for p in paths:
        print(f"wrote {p}/")
    return 0


def cmd_coverage(a) -> int:
    from repq_hw.golden.coverage import missed, set_coverage, table, write_coverage

    covs = []
    for d in a.sets:
        cov = set_coverage(d)
        if not a.no_write:
            write_coverage(d, cov)
        covs.append(cov)
        if len(a.sets) > 1:
            print(f"== {d}")
            print(table([cov], compact=not a.full))
    print(f"== {'all ' + str(len(a.sets)) + ' sets' if len(a.sets) > 1 else a.sets[0]}")
    print(table(covs, compact=not a.full))
    miss = missed(covs)
    print("every bin hit" if not miss else
          "missed: " + "; ".join(f"{op}: {', '.join(bs)}" for op, bs in sorted(miss.items())))
    if not a.no_write:
        print(f"coverage written to the manifest of {len(a.sets)} set(s)")
    return 0


def cmd_verify(a) -> int:
    from repq_hw.golden.verify import verify_golden_set

    rep = verify_golden_set(a.dir, backend=a.backend)
    print(rep.text())
    return 0 if rep.ok else 1


def cmd_replay(a) -> int:
    from repq_hw.golden.rtl import check_set, have_icarus, replay, replayable_ops

    check_set(a.dir)  # a corrupt set is refused (naming the file or field) before any simulation
    ops = a.op or replayable_ops(a.dir)
    if a.list:
        print("\n".join(replayable_ops(a.dir)))
        return 0
    if not have_icarus():
        print("repq-hw: error: Icarus Verilog (iverilog, vvp) is not installed", file=sys.stderr)
        return 2
    bad = 0
    for op in ops:
        r = replay(a.dir, op, check=False)
        print(r.line(), flush=True)
        if not r.ok:
            bad += 1
            print("\n".join("    " + ln for ln in r.output.strip().splitlines()[-15:]))
    return 1 if bad else 0


def cmd_diff(a) -> int:
    from repq_hw.golden.diff import diff_dump

    rep = diff_dump(a.dir, a.dump, a.map, partial=a.partial)
    print(rep.text())
    return 1 if rep.diverged else 0


def cmd_committed(a) -> int:
    from repq_hw.golden.model import GOLDEN_ROOT, check_committed, regenerate_committed

    root = Path(a.root) if a.root else GOLDEN_ROOT
    if a.check:
        diffs = check_committed(root, progress=not a.no_progress)
        if diffs:
            print("committed golden sets differ from a regeneration:")
            for d in diffs[:30]:
                print(f"  {d}")
            return 1
        print(f"committed golden sets in {root} are byte-identical to a regeneration from their IR")
        return 0
    paths = regenerate_committed(root, from_ir=a.from_ir, force=a.force, progress=not a.no_progress)
    for p in paths:
        print(f"wrote {p}")
    print(f"hashes: {root / 'SHA256SUMS'}")
    return 0
