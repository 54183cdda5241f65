"""The gate in front of Pillow: an upload's format decided from its signature, and the structure of
that format walked with bounded work, before any Pillow plugin reads a byte.

Pillow's `Image.open` without `formats` runs every plugin's header reader until one claims the bytes,
and several of those readers loop in Python over client-sized input (megabytes of EPS or PPM header
comments cost seconds just to name the format). So: an accepted format is recognised here by its magic
bytes, and only its own plugin is then opened; a refused format is named from the plugins' prefix
checks (`accept`, 16 bytes, no parsing), never opened. Then, per format, what its Python header reader
or decoder would loop over is counted here, with a cap, and refused beyond it (docs/security.md):

- PNG: the chunks (Pillow reads each in a Python loop, and inflates every iCCP/zTXt/iTXt chunk);
- JPEG (and MPO, a JPEG with more pictures after the first): the markers before the first scan, and the
  junk or fill bytes between them (Pillow reads those one byte at a time);
- GIF: the extension blocks before the first image (Pillow reads each sub-block in a Python loop);
- BMP: run-length compression, which Pillow decodes in pure Python (a 25 KB file cost 4-6 s).
"""

from __future__ import annotations

import contextlib
import ctypes
import struct
from pathlib import Path

from PIL import Image, PngImagePlugin

from service.core.errors import BadImage, ImageTooLarge, UnsupportedMediaType

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
_SEND = "send JPEG, PNG, WEBP, BMP, GIF or TIFF"

# PNG. A 16 MB upload written by libpng (8 KiB IDAT chunks) has about 2,000 chunks; this many cost Pillow
# about 50 ms to read. Chunks that Pillow decompresses or parses into Python objects are capped apart:
# a PNG has at most one colour profile (the specification's rule), and rarely more than a few texts.
MAX_PNG_CHUNKS = 16_384
MAX_PNG_METADATA_CHUNKS = 64  # tEXt, zTXt, iTXt, eXIf together
_PNG_METADATA = frozenset({b"tEXt", b"zTXt", b"iTXt", b"eXIf"})
# Pillow's own bounds on what one text chunk, and all of them together, may inflate to (1 MiB and
# 64 MiB by default): 64 chunks of 1 MiB took 0.1 s and 64 MiB; 4 MiB in all is far above any real file.
PngImagePlugin.MAX_TEXT_MEMORY = 4 << 20

# JPEG. A camera file has about 10-20 markers before its first scan (an ICC profile split over APP2
# segments adds one per 64 KiB); junk between markers is an encoder bug that libjpeg skips with a warning.
MAX_JPEG_MARKERS = 1024
MAX_JPEG_JUNK_BYTES = 1024

# GIF. Pillow reads the extension blocks before the first image one data sub-block (at most 255 bytes)
# per Python iteration: 16 MB of 1-byte comment sub-blocks took about 1.8 s. An XMP packet of 1 MiB is
# about 4,000 sub-blocks.
MAX_GIF_BLOCKS = 16_384

_BMP_RLE = {1: "RLE8", 2: "RLE4"}


def sniff(data: bytes) -> str | None:
    """The accepted format whose signature `data` starts with, or None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):  # classic and BigTIFF, either byte order
        return "TIFF"
    if data[:2] == b"BM":
        return "BMP"
    return None


def refused_name(data: bytes) -> str | None:
    """The name of a format this service refuses, from the plugins' prefix checks alone; None for bytes
    that no plugin would claim."""
    prefix = data[:16]
    if _looks_like_tga(prefix):
        return "TGA"  # the one common format without a signature (Pillow's plugin has no prefix check)
    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        if name in ACCEPTED_FORMATS or accept is None:
            continue
        try:
            claimed = accept(prefix)
        except Exception:  # noqa: BLE001  (a prefix check that fails on short input: not that format)
            continue
        if claimed and not isinstance(claimed, str):  # a string is Pillow's "no, and here is why"
            return name
    return None


def _looks_like_tga(prefix: bytes) -> bool:
    if len(prefix) < 16:
        return False
    colour_map, kind = prefix[1], prefix[2]
    sized = prefix[12:14] != b"\0\0" and prefix[14:16] != b"\0\0"
    if kind in (1, 9):  # colour-mapped
        return colour_map == 1 and sized
    # Without a colour map its specification is zeros (which tells it from a cursor's image count).
    return colour_map == 0 and kind in (2, 3, 10, 11) and prefix[3:8] == b"\0" * 5 and sized


def gate(data: bytes) -> str:
    """The accepted format of an upload, its structure checked; 415 for a refused format, 400 for bytes
    that are no image, 413 for structure beyond the caps."""
    fmt = sniff(data)
    if fmt is None:
        name = refused_name(data)
        if name is None:
            raise BadImage(f"The upload is not a decodable image; {_SEND}.")
        raise UnsupportedMediaType(f"Image format {name} is not accepted; {_SEND}.")
    check = _CHECKS.get(fmt)
    if check is not None:
        check(data)
    return fmt


def _check_png(data: bytes) -> None:
    pos, chunks, metadata, profiles = 8, 0, 0, 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise ImageTooLarge(f"The PNG has more than {MAX_PNG_CHUNKS} chunks.")
        if kind in _PNG_METADATA:
            metadata += 1
            if metadata > MAX_PNG_METADATA_CHUNKS:
                raise ImageTooLarge(f"The PNG has more than {MAX_PNG_METADATA_CHUNKS} text and EXIF chunks.")
        elif kind == b"iCCP":
            profiles += 1
            if profiles > 1:
                raise BadImage("The PNG has more than one colour profile (iCCP chunk).")
        elif kind == b"IEND":
            return
        pos += 12 + length


def _check_jpeg(data: bytes) -> None:
    """The markers before the first scan, as Pillow's header reader walks them."""
    pos, markers, junk = 2, 0, 0
    while pos + 2 <= len(data):
        if data[pos] != 0xFF or data[pos + 1] in (0x00, 0xFF):
            junk += 1  # a byte Pillow reads on its own: junk, a stuffed zero or a fill byte
            if junk > MAX_JPEG_JUNK_BYTES:
                raise BadImage(
                    f"The JPEG has more than {MAX_JPEG_JUNK_BYTES} bytes of junk between its markers."
                )
            pos += 1
            continue
        marker = data[pos + 1]
        markers += 1
        if markers > MAX_JPEG_MARKERS:
            raise ImageTooLarge(f"The JPEG has more than {MAX_JPEG_MARKERS} markers before its image data.")
        if marker == 0xDA or marker == 0xD9:
            return
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        if pos + 4 > len(data):
            return
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")


def _check_bmp(data: bytes) -> None:
    if len(data) < 34:
        return  # too short to be a BMP: Pillow refuses it
    (header_size,) = struct.unpack_from("<I", data, 14)
    if header_size < 40:
        return  # OS/2 1.x: no compression field
    (compression,) = struct.unpack_from("<I", data, 30)
    if compression in _BMP_RLE:
        raise UnsupportedMediaType(
            f"Run-length compressed BMP ({_BMP_RLE[compression]}) is not accepted: its decoder costs "
            f"seconds for a few kilobytes; {_SEND}."
        )


def _check_gif(data: bytes) -> None:
    """The extension blocks and their sub-blocks before the first image."""
    flags = data[10] if len(data) > 10 else 0
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # after the global colour table
    blocks = 0
    while pos < len(data) and data[pos] == 0x21:  # an extension; an image (0x2C) or the end stop the walk
        pos += 2
        while pos < len(data) and data[pos] != 0:
            blocks += 1
            if blocks > MAX_GIF_BLOCKS:
                raise ImageTooLarge(
                    f"The GIF has more than {MAX_GIF_BLOCKS} extension blocks before its image."
                )
            pos += 1 + data[pos]
        pos += 1


def quiet_libtiff() -> None:
    """Silence libtiff's warning and error handlers, which write straight to the process's stderr (one raw
    line per unknown tag or missing field: a mutated TIFF wrote hundreds, breaking the one-JSON-object-
    per-line log). Pillow learns of libtiff's errors from its return codes, and refuses the file then."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return  # not Linux: Pillow's bundled library cannot be found this way
    paths = {line.split()[-1] for line in maps.read_text().splitlines() if "libtiff" in line}
    for path in paths:
        with contextlib.suppress(OSError, AttributeError):
            lib = ctypes.CDLL(path)  # the library Pillow loaded: the same handle, the same handlers
            for name in ("TIFFSetWarningHandler", "TIFFSetErrorHandler"):
                setter = getattr(lib, name)
                setter.argtypes, setter.restype = [ctypes.c_void_p], ctypes.c_void_p
                setter(None)


quiet_libtiff()  # Pillow's C module (and libtiff with it) is loaded by the import above

_CHECKS = {"PNG": _check_png, "JPEG": _check_jpeg, "GIF": _check_gif, "BMP": _check_bmp}
