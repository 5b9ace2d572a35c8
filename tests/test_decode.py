"""Image decoding under limits: high-bit-depth conversion, decoded-size budgets, JPEG reduction."""

from __future__ import annotations

import io
import threading
import tracemalloc
import warnings

import numpy as np
import pytest
from PIL import Image

from data_trees import png_header
from mfclip.data.decode import (
    DecodeInterrupted,
    ImageTooLargeError,
    decoded_bytes,
    load_image,
    open_image,
    to_rgb,
)


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def reference_grey(values: np.ndarray, peak: float) -> np.ndarray:
    """The float64 formula 16/32-bit grey images were converted with before (the pixels must not change)."""
    return np.clip(values.astype(np.float64) / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)


def test_16_bit_grey_converts_exactly_without_widening_the_whole_image() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, (3000, 3000), dtype=np.uint16)
    values[0, :4] = (0, 128, 32767, 65535)
    data = encoded(Image.fromarray(values))
    expected = reference_grey(values, 65535.0)
    tracemalloc.start()
    try:
        rgb = load_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    pixels = np.asarray(rgb)
    assert rgb.mode == "RGB" and pixels.shape == (3000, 3000, 3)
    assert np.array_equal(pixels[..., 0], expected) and np.array_equal(pixels[..., 2], expected)
    # A float64 copy alone would be 8 bytes per pixel; the 8-bit result itself is 1.
    assert peak < 3 * values.size, f"decoding allocated {peak / 2**20:.0f} MiB in numpy"


def test_32_bit_and_float_grey_convert_as_before() -> None:
    wide = np.array([[-5, 0, 200, 255], [256, 40000, 65535, 70000]], dtype=np.int32)
    narrow = np.array([[-5, 0, 17, 255]], dtype=np.int32)
    unit = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    large = np.array([[-3.0, 12.4, 12.6, 300.0]], dtype=np.float32)
    assert np.array_equal(np.asarray(to_rgb(Image.fromarray(wide)))[..., 1], reference_grey(wide, 65535.0))
    assert np.array_equal(np.asarray(to_rgb(Image.fromarray(narrow)))[..., 1], reference_grey(narrow, 255.0))
    assert np.asarray(to_rgb(Image.fromarray(unit)))[0, :, 0].tolist() == [0, 64, 128, 255]
    assert np.asarray(to_rgb(Image.fromarray(large)))[0, :, 0].tolist() == [0, 12, 13, 255]


def test_decoded_size_limit_refuses_before_decoding() -> None:
    data = encoded(Image.fromarray(np.zeros((1500, 1500), dtype=np.uint16)))  # 4.3 MiB decoded
    assert decoded_bytes((1500, 1500), "I;16") == 1500 * 1500 * 2
    assert decoded_bytes((10, 10), "RGBA") == 400 and decoded_bytes((10, 10), "P") == 100
    opened = open_image(data, name="grey16.png", max_decoded_bytes=8 * 2**20)
    assert opened.decoded_bytes == 1500 * 1500 * 2 and opened.mode == "I;16"
    with pytest.raises(ImageTooLargeError, match=r"grey16\.png: image is 1500x1500 I;16, 4\.3 MiB decoded"):
        load_image(data, name="grey16.png", max_decoded_bytes=2 * 2**20)


def test_jpeg_above_the_decoded_limit_decodes_at_a_reduced_scale() -> None:
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (1200, 1600, 3), dtype=np.uint8))
    data = encoded(photo, "JPEG", quality=90)  # 5.5 MiB decoded at full size
    assert load_image(data).size == (1600, 1200)
    reduced = open_image(data, max_decoded_bytes=2 * 2**20)
    assert reduced.size == (800, 600) and reduced.decoded_bytes <= 2 * 2**20
    assert reduced.decode().size == (800, 600)
    assert load_image(data, max_decoded_bytes=400_000).size == (400, 300)  # 1/4
    # Never below what the model needs: at 1/8 the shorter side would be 150 < 224.
    with pytest.raises(ImageTooLargeError, match="decoded, above the limit"):
        load_image(data, max_decoded_bytes=100_000, draft_size=(224, 224))
    # A PNG cannot decode at a reduced scale: refused.
    with pytest.raises(ImageTooLargeError):
        load_image(encoded(photo), max_decoded_bytes=2 * 2**20)


def test_no_pillow_bomb_warning_for_an_image_our_limit_refuses() -> None:
    header = png_header(10_000, 10_000)  # 100 MP: above Pillow's warning threshold, below its error
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(
            ImageTooLargeError, match="10000x10000 = 100000000 pixels, above the limit 40000000"
        ):
            load_image(header, max_pixels=40_000_000, name="bomb.png")
    assert [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)] == []
    # Beyond Pillow's own refusal (~179 MP) the size is still stated.
    with pytest.raises(ImageTooLargeError, match="15000x15000 = 225000000 pixels"):
        load_image(png_header(15_000, 15_000), max_pixels=40_000_000)


def test_interrupt_stops_reading_and_converting() -> None:
    data = encoded(Image.fromarray(np.zeros((64, 64), dtype=np.uint16)))
    stop = threading.Event()
    opened = open_image(data, interrupt=stop)
    stop.set()
    with pytest.raises(DecodeInterrupted):
        opened.decode()
    loaded = Image.open(io.BytesIO(data))
    loaded.load()
    with pytest.raises(DecodeInterrupted):
        to_rgb(loaded, interrupt=stop)
