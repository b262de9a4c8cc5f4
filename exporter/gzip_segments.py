"""One gzip stream assembled from pieces compressed separately, as pigz does in parallel.

Each piece is raw deflate ending in a sync flush (byte-aligned, not final), so pieces concatenate
into one valid deflate stream; the gzip trailer's CRC-32 is combined from the pieces' own CRCs.
A scrape then compresses only the pieces that changed since the last one: at thousands of jobs
the exposition is tens of megabytes, too much to compress whole on every scrape.

A single gzip member, not several concatenated ones: Go's reader (Prometheus) takes both, but
some clients stop after the first member.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_POLY = 0xEDB88320  # CRC-32 (ISO-HDLC), reflected, as zlib.crc32
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # gzip, deflate, no mtime, OS unknown
_FINAL_BLOCK = b"\x03\x00"  # an empty final block with fixed codes
# The fastest level: pieces are recompressed whenever their jobs change, and the higher levels
# cost several times the CPU for little smaller output.
LEVEL = 1


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC polynomial (bit-reflected), from zlib's crc32.c."""
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _powers() -> tuple[int, ...]:
    """x^(2^k) modulo the polynomial, k = 0..31."""
    table = [1 << 30]  # x^1
    for _ in range(31):
        table.append(_multmodp(table[-1], table[-1]))
    return tuple(table)


_X2N = _powers()


def crc_shift(length: int) -> int:
    """The operator that moves a CRC past `length` more bytes: x^(8 * length) mod P."""
    p = 1 << 31  # x^0
    k = 3
    while length:
        if length & 1:
            p = _multmodp(_X2N[k & 31], p)
        length >>= 1
        k += 1
    return p


@dataclass(frozen=True, slots=True)
class Piece:
    """Compressed bytes of one piece, with what the trailer needs about its plain bytes."""

    data: bytes
    crc: int
    size: int
    shift: int


EMPTY = Piece(b"", 0, 0, 1 << 31)


def compress(plain: bytes, level: int = LEVEL) -> Piece:
    if not plain:
        return EMPTY
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = compressor.compress(plain) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return Piece(data, zlib.crc32(plain), len(plain), crc_shift(len(plain)))


def assemble(pieces: Iterable[Piece]) -> bytes:
    """A gzip member whose content is the pieces' plain bytes, in order."""
    crc = 0
    size = 0
    parts = [_HEADER]
    for piece in pieces:
        if piece.size:
            parts.append(piece.data)
            crc = _multmodp(piece.shift, crc) ^ piece.crc
            size += piece.size
    parts.append(_FINAL_BLOCK)
    parts.append(struct.pack("<II", crc, size & 0xFFFFFFFF))
    return b"".join(parts)


def join(pieces: Sequence[Piece]) -> Piece:
    """Several pieces as one, so a run that did not change is not combined again."""
    crc = 0
    size = 0
    for piece in pieces:
        if piece.size:
            crc = _multmodp(piece.shift, crc) ^ piece.crc
            size += piece.size
    if not size:
        return EMPTY
    return Piece(b"".join(piece.data for piece in pieces), crc, size, crc_shift(size))
