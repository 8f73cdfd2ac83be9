"""Byte-exact encoders and decoders of the golden-vector file formats (numpy, plus one Numba kernel that writes hex text).

Every format stores the elements of one integer array in C (row-major) order. Layouts
(``docs/golden_format.md`` states them for RTL engineers):

* ``.npy``  -- NPY format 1.0, little-endian, the storage dtype of the IR type (``uint8`` for ``uint4``).
  Written by :func:`npy_bytes` (not ``np.save``) so that the header bytes never depend on the numpy
  version. ``np.load`` reads it.
* ``.hex``  -- for ``$readmemh``: one word per line, ``\\n`` line ends, lower-case hex digits, no
  comments, no address markers. Each element is its ``W``-bit two's complement pattern (``W`` = the IR
  type's bit width), written with exactly ``D = ceil(W/4)`` digits (unused high bits of the top digit are
  0). With ``lanes = L > 1`` a line holds ``L`` elements, ``L*D`` digits; **lane 0 is the rightmost
  (least significant) group**, i.e. element ``i`` of the array is lane ``i % L`` of word ``i // L``;
  the last word is padded with zero lanes.
* ``.bin``  -- the raw little-endian bytes of the storage dtype (the NPY payload without its header).
* ``.coe``  -- Xilinx coefficient file: ``memory_initialization_radix=16;`` then
  ``memory_initialization_vector=`` and one word per line, ``,`` after every word but the last, which
  ends with ``;``. Words as in ``.hex`` (one element per word).
* ``.mif``  -- Intel memory initialization file: ``WIDTH=W; DEPTH=n; ADDRESS_RADIX=HEX; DATA_RADIX=HEX;
  CONTENT BEGIN``, one ``addr : word;`` line per element (hex address zero-padded to the digits of
  ``n - 1``), ``END;``.
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np
from numba import njit, prange

from repq_hw.errors import InputError

__all__ = [
    "CONST_FORMATS",
    "FORMATS",
    "TENSOR_FORMATS",
    "FormatError",
    "decode",
    "encode",
    "from_words",
    "hex_digits",
    "npy_bytes",
    "parse_npy",
    "sha256_bytes",
    "text_words",
    "to_words",
]

TENSOR_FORMATS = ("npy", "hex", "bin")
CONST_FORMATS = ("npy", "hex", "bin", "coe", "mif")
FORMATS = CONST_FORMATS



class FormatError(InputError):
    """Bytes that are not a valid file of the format (wrong length, bad character, bad header, value out of
    range). Subclasses :class:`repq_hw.errors.InputError` (hence ``ValueError``); the message names the file
    when the caller passed one (``what``)."""


_HEXCHARS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hex_digits(bits: int) -> int:
    """Hex digits per element of a ``bits``-wide word: ``ceil(bits / 4)``."""
    if not 1 <= int(bits) <= 64:
        raise FormatError(f"word width must be in 1..64, got {bits}")
    return (int(bits) + 3) // 4


# ---------------------------------------------------------------------------------------------------
# Two's complement words


def to_words(values: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """The ``bits``-wide two's complement patterns of ``values`` as uint64 (range-checked).

    Raises:
        ValueError: a value outside the range of the (signed, bits) type.
    """
    v = np.asarray(values)
    if v.dtype.kind not in "iu":
        raise FormatError(f"expected an integer array, got dtype {v.dtype}")
    bits = int(bits)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if v.size:
        vmin, vmax = int(v.min()), int(v.max())
        if vmin < lo or vmax > hi:
            raise FormatError(f"values [{vmin}, {vmax}] outside {'int' if signed else 'uint'}{bits} [{lo}, {hi}]")
    if v.dtype == np.uint64:
        u = v.reshape(-1)
    else:
        u = v.reshape(-1).astype(np.int64).view(np.uint64)
    if bits < 64:
        u = u & np.uint64((1 << bits) - 1)
    return u


def from_words(words: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Inverse of :func:`to_words`: uint64 patterns -> int64 values (sign-extended when signed).

    Raises:
        ValueError: a pattern has bits set above ``bits``.
    """
    u = np.asarray(words, dtype=np.uint64).reshape(-1)
    bits = int(bits)
    if bits < 64:
        over = u >> np.uint64(bits)
        if over.any():
            i = int(np.flatnonzero(over)[0])
            raise FormatError(f"word {i}: 0x{int(u[i]):x} has bits set above bit {bits - 1}")
    if not signed:
        if bits == 64:
            raise FormatError("uint64 words are not supported")
        return u.astype(np.int64)
    if bits == 64:
        return u.view(np.int64).copy()
    sign = (u >> np.uint64(bits - 1)) & np.uint64(1)
    return (u.astype(np.int64) - (sign.astype(np.int64) << np.int64(bits)))


def _hex_text_numpy(words: np.ndarray, digits: int) -> np.ndarray:
    """uint64 words -> [n, digits] ASCII hex characters (most significant digit first), in numpy: the
    plain form, kept as the oracle of :func:`_hex_text` (tests)."""
    n = words.shape[0]
    shifts = np.arange(digits - 1, -1, -1, dtype=np.uint64) * np.uint64(4)
    nib = (words[:, None] >> shifts[None, :]) & np.uint64(15)
    return _HEXCHARS[nib.astype(np.intp)].reshape(n, digits)


@njit(parallel=True, cache=True)
def _hex_text_kernel(words, digits, chars, out):
    for i in prange(words.shape[0]):
        w = words[i]
        for k in range(digits - 1, -1, -1):  # least significant digit last
            out[i, k] = chars[np.intp(w & np.uint64(15))]
            w = w >> np.uint64(4)


def _hex_text(words: np.ndarray, digits: int) -> np.ndarray:
    """uint64 words -> [n, digits] ASCII hex characters (most significant digit first). One Numba pass
    (the numpy form needs 8 * digits bytes of temporaries per element)."""
    out = np.empty((words.shape[0], digits), dtype=np.uint8)
    if words.shape[0]:
        _hex_text_kernel(np.ascontiguousarray(words, dtype=np.uint64), int(digits), _HEXCHARS, out)
    return out


def _parse_hex_chars(chars: np.ndarray, what: str) -> np.ndarray:
    """[n, d] ASCII bytes -> uint64 (d <= 16). Raises ValueError on a non-hex character."""
    c = chars.astype(np.int64)
    val = np.full(c.shape, -1, dtype=np.int64)
    digit = (c >= 48) & (c <= 57)
    lower = (c >= 97) & (c <= 102)
    upper = (c >= 65) & (c <= 70)
    val[digit] = c[digit] - 48
    val[lower] = c[lower] - 87
    val[upper] = c[upper] - 55
    if (val < 0).any():
        r, k = (int(t) for t in np.argwhere(val < 0)[0])
        raise FormatError(f"{what}: line {r + 1}: invalid hex character {bytes([int(c[r, k])])!r}")
    out = np.zeros(c.shape[0], dtype=np.uint64)
    for k in range(c.shape[1]):
        out = (out << np.uint64(4)) | val[:, k].astype(np.uint64)
    return out


# ---------------------------------------------------------------------------------------------------
# .hex


def encode_hex(values: np.ndarray, bits: int, signed: bool, lanes: int = 1) -> bytes:
    """``$readmemh`` text: ``ceil(bits/4)`` digits per element, ``lanes`` elements per line, lane 0
    rightmost; the last line is padded with zero lanes."""
    lanes = int(lanes)
    if lanes < 1:
        raise FormatError(f"lanes must be >= 1, got {lanes}")
    d = hex_digits(bits)
    w = to_words(values, bits, signed)
    n = w.shape[0]
    nwords = -(-n // lanes)
    padded = np.zeros(nwords * lanes, dtype=np.uint64)
    padded[:n] = w
    chars = _hex_text(padded, d).reshape(nwords, lanes, d)[:, ::-1, :].reshape(nwords, lanes * d)
    lines = np.concatenate([chars, np.full((nwords, 1), ord("\n"), dtype=np.uint8)], axis=1)
    return lines.tobytes()


def hex_words(data: bytes, bits: int, count: int, lanes: int = 1, what: str = "hex") -> np.ndarray:
    """The raw uint64 words of :func:`encode_hex` output (layout checked strictly: exact line width, no
    extra lines, zero padding lanes; the value range is not checked)."""
    lanes = int(lanes)
    d = hex_digits(bits)
    width = lanes * d
    nwords = -(-int(count) // lanes)
    if len(data) != nwords * (width + 1):
        lines = data.split(b"\n")
        for i, ln in enumerate(lines[:-1] if data.endswith(b"\n") else lines):
            if len(ln) != width:
                raise FormatError(f"{what}: line {i + 1} has {len(ln)} characters, expected {width}")
        raise FormatError(f"{what}: {len(data)} bytes, expected {nwords} lines of {width} digits")
    arr = np.frombuffer(data, dtype=np.uint8).reshape(nwords, width + 1)
    bad_nl = np.flatnonzero(arr[:, width] != ord("\n"))
    if bad_nl.size:
        raise FormatError(f"{what}: line {int(bad_nl[0]) + 1} is not {width} digits followed by a newline")
    chars = arr[:, :width].reshape(nwords, lanes, d)[:, ::-1, :].reshape(nwords * lanes, d)
    words = _parse_hex_chars(chars, what)
    if nwords * lanes > count and words[count:].any():
        raise FormatError(f"{what}: padding lanes of the last line are not zero")
    return words[:count]


def _checked(words: np.ndarray, bits: int, signed: bool, what: str) -> np.ndarray:
    try:
        return from_words(words, bits, signed)
    except ValueError as e:
        raise FormatError(f"{what}: {e}") from None


def decode_hex(data: bytes, bits: int, signed: bool, count: int, lanes: int = 1, what: str = "hex") -> np.ndarray:
    """Parse :func:`encode_hex` output strictly (layout and value range)."""
    return _checked(hex_words(data, bits, count, lanes, what), bits, signed, what)


# ---------------------------------------------------------------------------------------------------
# .npy / .bin


def _le(values: np.ndarray, dtype) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values).astype(np.dtype(dtype).newbyteorder("<")))


def npy_bytes(values: np.ndarray, dtype) -> bytes:
    """NPY 1.0 bytes of ``values`` cast to little-endian ``dtype``, header built here (deterministic)."""
    a = _le(values, dtype)
    shape = tuple(int(s) for s in a.shape)
    shape_txt = "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
    header = f"{{'descr': '{a.dtype.str}', 'fortran_order': False, 'shape': {shape_txt}, }}"
    # magic (6) + version (2) + header length (2) + header + padding + '\n' is a multiple of 64
    pad = 64 - (10 + len(header) + 1) % 64
    if pad == 64:
        pad = 0
    header = header + " " * pad + "\n"
    hlen = len(header)
    if hlen > 65535:
        raise FormatError("npy header too long")
    return b"\x93NUMPY\x01\x00" + hlen.to_bytes(2, "little") + header.encode("latin1") + a.tobytes()


_NPY_HEADER = re.compile(r"^\{'descr': '([<>|][iu][1248])', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \} *\n$")


def parse_npy(data: bytes, what: str = "npy") -> np.ndarray:
    """Read NPY 1.0 bytes without pickle (integer dtypes, C order only)."""
    if data[:8] != b"\x93NUMPY\x01\x00":
        raise FormatError(f"{what}: not an NPY 1.0 file")
    hlen = int.from_bytes(data[8:10], "little")
    header = data[10:10 + hlen].decode("latin1")
    m = _NPY_HEADER.match(header)
    if not m:
        raise FormatError(f"{what}: unsupported NPY header {header.strip()!r}")
    dt = np.dtype(m.group(1))
    shape = tuple(int(s) for s in m.group(2).replace(" ", "").split(",") if s)
    body = data[10 + hlen:]
    n = math.prod(shape)  # exact: a hostile header cannot overflow it
    if len(body) != n * dt.itemsize:
        raise FormatError(f"{what}: payload has {len(body)} bytes, expected {n * dt.itemsize}")
    return np.frombuffer(body, dtype=dt).reshape(shape)


def encode_bin(values: np.ndarray, dtype) -> bytes:
    return _le(values, dtype).tobytes()


def decode_bin(data: bytes, dtype, count: int, what: str = "bin") -> np.ndarray:
    dt = np.dtype(dtype).newbyteorder("<")
    if len(data) != int(count) * dt.itemsize:
        raise FormatError(f"{what}: {len(data)} bytes, expected {count} x {dt.itemsize}")
    return np.frombuffer(data, dtype=dt).astype(np.int64)


# ---------------------------------------------------------------------------------------------------
# .coe / .mif (constant ROMs)


def encode_coe(values: np.ndarray, bits: int, signed: bool, title: str) -> bytes:
    d = hex_digits(bits)
    w = to_words(values, bits, signed)
    chars = _hex_text(w, d)
    n = w.shape[0]
    head = (f"; repq-hw golden ROM {title}: {n} words of {bits} bits, "
            f"{'signed' if signed else 'unsigned'} two's complement, row-major\n"
            "memory_initialization_radix=16;\nmemory_initialization_vector=\n").encode()
    if n == 0:
        return head + b";\n"
    sep = np.full((n, 2), [ord(","), ord("\n")], dtype=np.uint8)
    sep[-1, 0] = ord(";")
    return head + np.concatenate([chars, sep], axis=1).tobytes()


def coe_words(data: bytes, bits: int, count: int, what: str = "coe") -> np.ndarray:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        raise FormatError(f"{what}: byte {e.start} is not ASCII") from None
    body = [ln for ln in text.split("\n") if ln and not ln.startswith(";")]
    if len(body) < 2 or body[0] != "memory_initialization_radix=16;" or body[1] != "memory_initialization_vector=":
        raise FormatError(f"{what}: missing radix / vector header")
    vec = "".join(body[2:])
    if not vec.endswith(";"):
        raise FormatError(f"{what}: vector does not end with ';'")
    toks = vec[:-1].split(",") if vec[:-1] else []
    if len(toks) != int(count):
        raise FormatError(f"{what}: {len(toks)} words, expected {count}")
    d = hex_digits(bits)
    if any(len(t) != d for t in toks):
        raise FormatError(f"{what}: every word must have {d} hex digits")
    chars = np.frombuffer("".join(toks).encode(), dtype=np.uint8).reshape(len(toks), d)
    return _parse_hex_chars(chars, what)


def decode_coe(data: bytes, bits: int, signed: bool, count: int, what: str = "coe") -> np.ndarray:
    return _checked(coe_words(data, bits, count, what), bits, signed, what)


def _mif_addr_digits(n: int) -> int:
    return max(1, len(f"{max(n - 1, 0):x}"))


def encode_mif(values: np.ndarray, bits: int, signed: bool, title: str) -> bytes:
    d = hex_digits(bits)
    w = to_words(values, bits, signed)
    n = w.shape[0]
    head = (f"-- repq-hw golden ROM {title}: {n} words of {bits} bits, "
            f"{'signed' if signed else 'unsigned'} two's complement, row-major\n"
            f"WIDTH={bits};\nDEPTH={n};\nADDRESS_RADIX=HEX;\nDATA_RADIX=HEX;\nCONTENT BEGIN\n").encode()
    if n == 0:
        return head + b"END;\n"
    a = _mif_addr_digits(n)
    addr = _hex_text(np.arange(n, dtype=np.uint64), a)
    mid = np.frombuffer(b" : ", dtype=np.uint8)
    end = np.frombuffer(b";\n", dtype=np.uint8)
    lines = np.concatenate([addr, np.broadcast_to(mid, (n, 3)), _hex_text(w, d), np.broadcast_to(end, (n, 2))], axis=1)
    return head + lines.tobytes() + b"END;\n"


def mif_words(data: bytes, bits: int, count: int, what: str = "mif") -> np.ndarray:
    count = int(count)
    d = hex_digits(bits)
    want = (f"WIDTH={bits};\nDEPTH={count};\nADDRESS_RADIX=HEX;\nDATA_RADIX=HEX;\nCONTENT BEGIN\n").encode()
    nl = data.find(b"\n")
    if not data.startswith(b"--") or data[nl + 1:nl + 1 + len(want)] != want or not data.endswith(b"END;\n"):
        raise FormatError(f"{what}: header must be WIDTH={bits}; DEPTH={count}; ADDRESS_RADIX=HEX; DATA_RADIX=HEX; "
                         "CONTENT BEGIN, and the file must end with END;")
    body = data[nl + 1 + len(want):len(data) - 5]
    a = _mif_addr_digits(count)
    width = a + 3 + d + 2
    if len(body) != count * width:
        raise FormatError(f"{what}: {len(body)} content bytes, expected {count} lines of '<{a} digits> : <{d} digits>;'")
    if count == 0:
        return np.zeros(0, dtype=np.uint64)
    arr = np.frombuffer(body, dtype=np.uint8).reshape(count, width)
    if (arr[:, a:a + 3] != np.frombuffer(b" : ", dtype=np.uint8)).any() or \
            (arr[:, a + 3 + d:] != np.frombuffer(b";\n", dtype=np.uint8)).any():
        raise FormatError(f"{what}: a line is not '<address> : <word>;'")
    addr = _parse_hex_chars(arr[:, :a], what)
    bad = np.flatnonzero(addr != np.arange(count, dtype=np.uint64))
    if bad.size:
        raise FormatError(f"{what}: line {int(bad[0]) + 1} has address {int(addr[bad[0]]):x}, expected {int(bad[0]):x}")
    return _parse_hex_chars(arr[:, a + 3:a + 3 + d], what)


def decode_mif(data: bytes, bits: int, signed: bool, count: int, what: str = "mif") -> np.ndarray:
    return _checked(mif_words(data, bits, count, what), bits, signed, what)


# ---------------------------------------------------------------------------------------------------
# dispatch


def encode(fmt: str, values: np.ndarray, *, bits: int, signed: bool, dtype, lanes: int = 1,
           title: str = "") -> bytes:
    """Bytes of one array in one format (``values`` in C order; ``dtype`` = the storage dtype)."""
    if fmt == "npy":
        return npy_bytes(values, dtype)
    if fmt == "hex":
        return encode_hex(values, bits, signed, lanes)
    if fmt == "bin":
        return encode_bin(values, dtype)
    if fmt == "coe":
        return encode_coe(values, bits, signed, title)
    if fmt == "mif":
        return encode_mif(values, bits, signed, title)
    raise FormatError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


def text_words(fmt: str, data: bytes, *, bits: int, count: int, lanes: int = 1, what: str = "") -> np.ndarray:
    """Raw uint64 words of a text format (hex, coe, mif) in element order, value range unchecked."""
    what = what or fmt
    if fmt == "hex":
        return hex_words(data, bits, count, lanes, what)
    if fmt == "coe":
        return coe_words(data, bits, count, what)
    if fmt == "mif":
        return mif_words(data, bits, count, what)
    raise FormatError(f"{fmt!r} is not a text format")


def decode(fmt: str, data: bytes, *, bits: int, signed: bool, dtype, shape, lanes: int = 1,
           what: str = "") -> np.ndarray:
    """Inverse of :func:`encode`: int64 array of ``shape`` (the npy header's shape must equal it)."""
    shape = tuple(int(s) for s in shape)
    count = math.prod(shape)  # exact (python ints): a hostile shape cannot overflow it
    what = what or fmt
    if fmt == "npy":
        a = parse_npy(data, what)
        if a.shape != shape:
            raise FormatError(f"{what}: shape {a.shape}, expected {shape}")
        if a.dtype != np.dtype(dtype).newbyteorder("<"):
            raise FormatError(f"{what}: dtype {a.dtype}, expected {np.dtype(dtype)}")
        return a.astype(np.int64)
    if fmt == "hex":
        flat = decode_hex(data, bits, signed, count, lanes, what)
    elif fmt == "bin":
        flat = decode_bin(data, dtype, count, what)
    elif fmt == "coe":
        flat = decode_coe(data, bits, signed, count, what)
    elif fmt == "mif":
        flat = decode_mif(data, bits, signed, count, what)
    else:
        raise FormatError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    return flat.reshape(shape)
