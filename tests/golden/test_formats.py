"""Exact byte layouts of every golden file format (docs/golden_format.md)."""

import io

import numpy as np
import pytest

from repq_hw.golden import formats as fmt


@pytest.mark.parametrize("bits,digits", [(1, 1), (4, 1), (5, 2), (8, 2), (10, 3), (16, 4), (17, 5), (23, 6),
                                         (32, 8), (33, 9), (64, 16)])
def test_hex_digits_per_word(bits, digits):
    assert fmt.hex_digits(bits) == digits
    data = fmt.encode_hex(np.array([0, 1]), bits, signed=False) if bits < 64 else \
        fmt.encode_hex(np.array([0, 1]), bits, signed=True)
    assert data.split(b"\n")[:2] == [b"0" * digits, b"0" * (digits - 1) + b"1"]


@pytest.mark.parametrize("values,bits,expected", [
    ([-1, 0, 127, -128], 8, b"ff\n00\n7f\n80\n"),
    ([-1, -512, 511, -2], 10, b"3ff\n200\n1ff\n3fe\n"),   # 10-bit pattern in 3 digits, top digit bits above 9 are 0
    ([-2, 32767, -32768], 16, b"fffe\n7fff\n8000\n"),
    ([-(1 << 31), -1, (1 << 31) - 1], 32, b"80000000\nffffffff\n7fffffff\n"),
    ([-1, -(1 << 63)], 64, b"ffffffffffffffff\n8000000000000000\n"),
    ([-1, -8], 4, b"f\n8\n"),
])
def test_hex_twos_complement_of_negatives(values, bits, expected):
    data = fmt.encode_hex(np.array(values, dtype=np.int64), bits, signed=True)
    assert data == expected
    assert fmt.decode_hex(data, bits, True, len(values)).tolist() == values


def test_hex_unsigned_17_bit():
    assert fmt.encode_hex(np.array([65536, 1011], dtype=np.uint32), 17, signed=False) == b"10000\n003f3\n"


def test_hex_lanes_order_lane0_rightmost_and_padding():
    v = np.array([1, 2, 3, 4, 5], dtype=np.uint8)
    assert fmt.encode_hex(v, 4, False, lanes=2) == b"21\n43\n05\n"
    assert fmt.encode_hex(v, 8, False, lanes=4) == b"04030201\n00000005\n"
    # signed lanes: each lane is its own ceil(bits/4)-digit field
    assert fmt.encode_hex(np.array([-1, 1, -512]), 10, True, lanes=2) == b"0013ff\n000200\n"
    for lanes in (1, 2, 3, 8):
        data = fmt.encode_hex(v, 4, False, lanes=lanes)
        assert fmt.decode_hex(data, 4, False, 5, lanes=lanes).tolist() == [1, 2, 3, 4, 5]


def test_hex_range_checked_on_write():
    with pytest.raises(ValueError, match="outside int8"):
        fmt.encode_hex(np.array([128]), 8, signed=True)
    with pytest.raises(ValueError, match="outside uint4"):
        fmt.encode_hex(np.array([16]), 4, signed=False)


@pytest.mark.parametrize("bad,msg", [
    (b"3ff\n20\n", "line 2 has 2 characters"),
    (b"3ff\n2x0\n", "invalid hex character"),
    (b"3ff\n200", "bytes"),
    (b"3ff\nc00\n", "bits set above bit 9"),
])
def test_hex_decode_is_strict(bad, msg):
    with pytest.raises(ValueError, match=msg):
        fmt.decode_hex(bad, 10, True, 2)


def test_hex_padding_lanes_must_be_zero():
    with pytest.raises(ValueError, match="padding"):
        fmt.decode_hex(b"21\n15\n", 4, False, 3, lanes=2)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "uint32", "int32", "int64"])
@pytest.mark.parametrize("shape", [(3,), (2, 3), (1, 2, 3, 4), (0,)])
def test_npy_bytes_are_npy_1_0_readable_by_numpy(dtype, shape):
    a = (np.arange(int(np.prod(shape))) % 7).astype(dtype).reshape(shape)
    data = fmt.npy_bytes(a, dtype)
    assert data[:8] == b"\x93NUMPY\x01\x00"
    hlen = int.from_bytes(data[8:10], "little")
    assert (10 + hlen) % 64 == 0 and data[10 + hlen - 1:10 + hlen] == b"\n"
    back = np.load(io.BytesIO(data), allow_pickle=False)
    assert back.dtype == np.dtype(dtype).newbyteorder("<") and back.shape == shape
    np.testing.assert_array_equal(back, a)
    np.testing.assert_array_equal(fmt.parse_npy(data), a)
    # same bytes as numpy's own writer (format 1.0, little-endian)
    buf = io.BytesIO()
    np.save(buf, a.astype(np.dtype(dtype).newbyteorder("<")))
    assert buf.getvalue() == data


def test_bin_is_raw_little_endian():
    a = np.array([1, -2, 0x01020304], dtype=np.int32)
    data = fmt.encode_bin(a, np.int32)
    assert data == b"\x01\x00\x00\x00\xfe\xff\xff\xff\x04\x03\x02\x01"
    assert fmt.decode_bin(data, np.int32, 3).tolist() == [1, -2, 0x01020304]
    assert fmt.encode_bin(np.array([1, 258]), np.uint16) == b"\x01\x00\x02\x01"


def test_coe_layout():
    data = fmt.encode_coe(np.array([-1, 5, -512]), 10, True, "x.table")
    lines = data.decode().split("\n")
    assert lines[0].startswith("; repq-hw golden ROM x.table: 3 words of 10 bits")
    assert lines[1:] == ["memory_initialization_radix=16;", "memory_initialization_vector=", "3ff,", "005,", "200;", ""]
    assert fmt.decode_coe(data, 10, True, 3).tolist() == [-1, 5, -512]


def test_mif_layout():
    data = fmt.encode_mif(np.array([3, 0, 15], dtype=np.uint8), 4, False, "t")
    lines = data.decode().split("\n")
    assert lines[0].startswith("-- repq-hw golden ROM t: 3 words of 4 bits")
    assert lines[1:] == ["WIDTH=4;", "DEPTH=3;", "ADDRESS_RADIX=HEX;", "DATA_RADIX=HEX;", "CONTENT BEGIN",
                         "0 : 3;", "1 : 0;", "2 : f;", "END;", ""]
    assert fmt.decode_mif(data, 4, False, 3).tolist() == [3, 0, 15]
    assert b"\n0 : ffffffff;\n" in fmt.encode_mif(np.array([-1]), 32, True, "s")
    # addresses are zero-padded hex with the digits of DEPTH - 1
    big = fmt.encode_mif(np.arange(300) % 7, 10, True, "b").decode().split("\n")
    assert big[6:8] == ["000 : 000;", "001 : 001;"] and big[-3] == "12b : 005;"
    bad = data.replace(b"1 : 0;", b"2 : 0;")
    with pytest.raises(ValueError, match="address"):
        fmt.decode_mif(bad, 4, False, 3)


@pytest.mark.parametrize("name", ["npy", "hex", "bin", "coe", "mif"])
@pytest.mark.parametrize("bits,signed,dtype", [(4, False, "uint8"), (10, True, "int16"), (17, False, "uint32"),
                                               (32, True, "int32"), (40, True, "int64")])
def test_round_trip_every_format(name, bits, signed, dtype):
    rng = np.random.default_rng(bits)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    a = rng.integers(lo, hi, size=(3, 5), endpoint=True).astype(dtype)
    a.flat[0], a.flat[1] = lo, hi
    data = fmt.encode(name, a, bits=bits, signed=signed, dtype=dtype, title="t")
    back = fmt.decode(name, data, bits=bits, signed=signed, dtype=dtype, shape=(3, 5))
    np.testing.assert_array_equal(back, a.astype(np.int64))


@pytest.mark.parametrize("digits", [1, 2, 3, 5, 8, 16])
def test_hex_text_kernel_equals_numpy_form_and_python_format(digits):
    from repq_hw.golden.formats import _hex_text, _hex_text_numpy

    rng = np.random.default_rng(digits)
    words = rng.integers(0, 2**63, 5000, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    if digits < 16:
        words &= np.uint64((1 << (4 * digits)) - 1)
    words[:3] = [0, 1, (1 << (4 * digits)) - 1 if digits < 16 else 2**64 - 1]
    got = _hex_text(words, digits)
    assert np.array_equal(got, _hex_text_numpy(words, digits))
    assert [bytes(r).decode() for r in got[:50]] == [format(int(w), f"0{digits}x") for w in words[:50]]
    assert _hex_text(np.zeros(0, np.uint64), digits).shape == (0, digits)


def test_every_op_names_spec_pages_that_exist():
    """Each op's manifest 'spec' links point at pages in docs/ (the add link once pointed elsewhere)."""
    from pathlib import Path

    from repq_hw.golden.spec import spec_pages
    from repq_hw.ir.ops import Op

    root = Path(__file__).resolve().parents[2]
    for op in Op:
        pages = spec_pages(op)
        assert pages and all((root / p).is_file() for p in pages), (op, pages)
        assert "docs/lowering.md" not in pages, op
