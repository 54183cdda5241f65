"""The signature gate in front of Pillow (service/images/image_gate.py) and the bounds it and the decoder put on
each image container and codec, in process: which plugin reads an upload, and what each class of the
second hostile corpus gets."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from PIL import Image

from service.api.classification import prepare_all
from service.api.uploads import Upload
from service.core.errors import BadImage, DeadlineExceeded, ImageTooLarge, ServiceError, UnsupportedMediaType
from service.core.registry import ModelEntry, Preprocessing
from service.images import image_gate
from service.images.preprocess import decode, tensors_of
from service.server.preprocess_pool import PreprocessPool, header_size
from tests.security import hostile
from tests.service.conftest import encode

BIG = 40_000_000


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """The formats whose Pillow plugin was asked to open something during the test."""
    calls: list[str] = []
    Image.init()
    saved = dict(Image.OPEN)

    def spy(name: str, factory: Callable[..., Image.Image]) -> Callable[..., Image.Image]:
        def open_(*args: object) -> Image.Image:
            calls.append(name)
            return factory(*args)

        return open_

    for name, (factory, accept) in saved.items():
        Image.OPEN[name] = (spy(name, factory), accept)  # type: ignore[assignment]
    try:
        yield calls
    finally:
        Image.OPEN.clear()
        Image.OPEN.update(saved)


@pytest.mark.parametrize("fmt", image_gate.ACCEPTED_FORMATS)
def test_an_accepted_format_is_opened_by_its_own_plugin_only(fmt: str, opened: list[str]) -> None:
    data = encode(Image.new("RGB", (20, 10), (10, 20, 30)), fmt)
    assert image_gate.sniff(data) == fmt
    assert decode(data, max_pixels=BIG).size == (20, 10)
    assert header_size(data) == (20, 10)
    assert set(opened) == {fmt}


REFUSED: dict[str, Callable[[], bytes]] = {
    "EPS": lambda: hostile.eps_comments(2_000_000),
    "PPM": lambda: hostile.ppm_comments(2_000_000),
    "ICO": lambda: encode(Image.new("L", (16, 16)), "ICO"),
    "PCX": lambda: encode(Image.new("L", (16, 16)), "PCX"),
    "TGA": lambda: encode(Image.new("L", (16, 16)), "TGA"),
}


@pytest.mark.parametrize("name", REFUSED)
def test_a_refused_format_is_named_without_being_parsed(name: str, opened: list[str]) -> None:
    data = REFUSED[name]()
    with pytest.raises(UnsupportedMediaType, match=name):
        decode(data, max_pixels=BIG)
    assert header_size(data) == (0, 0)
    assert opened == []  # no plugin read the megabytes of header comments


def test_bytes_no_plugin_claims_are_400_unparsed(opened: list[str]) -> None:
    with pytest.raises(BadImage):
        decode(b"\x00\x01 not an image" * 1000, max_pixels=BIG)
    assert opened == []


def test_mpo_is_decoded_as_jpeg_and_its_scans_are_capped() -> None:
    with pytest.raises(ImageTooLarge, match="scans"):
        decode(hostile.mpo_scans_jpeg(2000), max_pixels=BIG)
    few = hostile.mpo_scans_jpeg(3)
    assert Image.open(io.BytesIO(few)).format == "MPO"
    assert decode(few, max_pixels=BIG).size == (2048, 2048)


def test_jpeg_junk_between_markers_is_bounded() -> None:
    assert decode(hostile.junk_jpeg(100), max_pixels=BIG).size == (8, 8)  # libjpeg's tolerance kept
    with pytest.raises(BadImage, match="junk"):
        decode(hostile.junk_jpeg(4_000_000), max_pixels=BIG)


def test_gif_extension_blocks_are_capped() -> None:
    assert decode(hostile.gif_comment_blocks(100), max_pixels=BIG).size == (8, 8)
    with pytest.raises(ImageTooLarge, match="extension blocks"):
        decode(hostile.gif_comment_blocks(image_gate.MAX_GIF_BLOCKS + 1), max_pixels=BIG)


def test_run_length_bmp_is_415_and_plain_bmp_decodes() -> None:
    with pytest.raises(UnsupportedMediaType, match="RLE8"):
        decode(hostile.rle_bmp(), max_pixels=BIG)
    assert decode(encode(Image.new("P", (9, 9)), "BMP"), max_pixels=BIG).size == (9, 9)


def test_png_ancillary_chunks_are_capped_from_their_headers() -> None:
    assert decode(hostile.iccp_png(1), max_pixels=BIG).size == (28, 28)  # one profile: fine
    with pytest.raises(BadImage, match="colour profile"):
        decode(hostile.iccp_png(3000), max_pixels=BIG)
    png = hostile.grey_png(28, 28)
    texts = png[:33] + hostile._chunk(b"tEXt", b"k\0v") * 1000 + png[33:]
    with pytest.raises(ImageTooLarge, match="text"):
        decode(texts, max_pixels=BIG)
    many = png[:33] + hostile._chunk(b"zzZz", b"") * (image_gate.MAX_PNG_CHUNKS + 1) + png[33:]
    with pytest.raises(ImageTooLarge, match="chunks"):
        decode(many, max_pixels=BIG)


def test_a_large_exif_is_not_parsed_for_its_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    exif[0x010E] = "x" * 100_000  # ImageDescription: the EXIF block grows past the cap
    buf = io.BytesIO()
    Image.new("L", (20, 10)).save(buf, "PNG", exif=exif.tobytes())
    assert decode(buf.getvalue(), max_pixels=BIG).size == (20, 10)  # kept as stored
    small = Image.Exif()
    small[0x0112] = 6
    buf = io.BytesIO()
    Image.new("L", (20, 10)).save(buf, "PNG", exif=small.tobytes())
    assert decode(buf.getvalue(), max_pixels=BIG).size == (10, 20)


def test_tensors_of_makes_one_tensor_per_preprocessing() -> None:
    grey = Preprocessing(color_mode="L", resize=28, crop=28, interpolation="bilinear", mean=[0.5], std=[0.25])
    rgb = Preprocessing(
        color_mode="RGB", resize=64, crop=56, interpolation="bicubic", mean=[0.5] * 3, std=[0.25] * 3
    )
    data = encode(Image.new("RGB", (300, 200), (200, 100, 0)), "PNG")
    made = tensors_of(data, [grey, rgb], max_pixels=BIG)
    assert made.size == (300, 200)
    assert [t.shape for t in made.tensors] == [(1, 28, 28), (3, 56, 56)]
    assert all(t.dtype == np.float32 for t in made.tensors)


@pytest.mark.parametrize("case", hostile.SECOND_PASS, ids=lambda c: c.name)
def test_every_second_pass_image_class_is_a_4xx_or_an_answer(case: hostile.Hostile) -> None:
    if case.path not in ("/classify", "/compare") or case.content_type.startswith("multipart"):
        pytest.skip("not one image")
    try:
        decode(case.body(), max_pixels=BIG, draft_size=28)
    except ServiceError as exc:
        assert isinstance(exc, BadImage | ImageTooLarge | UnsupportedMediaType)


def _entry() -> ModelEntry:
    from service.core.registry import load_registry
    from tests.paths import REPO

    registry = load_registry(REPO / "registry.yaml")
    return next(m for m in registry.models if m.preprocessing.color_mode == "L")


@pytest.mark.anyio
async def test_a_request_has_one_pixel_budget_and_its_deadline_stops_preparation() -> None:
    pool = PreprocessPool(small_threads=1, large_threads=1, large_pixels=2_000_000, process_memory_mb=None)
    entry = _entry()
    try:
        parts = [Upload(None, hostile.grey_png(3000, 3000)) for _ in range(5)]  # 9 Mpx each
        with pytest.raises(ImageTooLarge, match="together"):
            await prepare_all(parts, entry, 40_000_000, pool)
        small = [Upload(None, hostile.grey_png(300, 300)) for _ in range(3)]
        assert len(await prepare_all(small, entry, 40_000_000, pool)) == 3
        with pytest.raises(DeadlineExceeded):
            await prepare_all(small, entry, 40_000_000, pool, deadline=time.monotonic() - 1)
    finally:
        pool.shutdown()


def test_libtiff_has_no_handler_that_writes_to_stderr() -> None:
    import ctypes
    from pathlib import Path

    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("Linux only")
    paths = {line.split()[-1] for line in maps.read_text().splitlines() if "libtiff" in line}
    assert paths  # Pillow's C module, and libtiff with it, is loaded
    for path in paths:
        lib = ctypes.CDLL(path)
        for name in ("TIFFSetWarningHandler", "TIFFSetErrorHandler"):
            setter = getattr(lib, name)
            setter.argtypes, setter.restype = [ctypes.c_void_p], ctypes.c_void_p
            assert setter(None) is None  # the handler it replaced: none, set when the gate was imported
