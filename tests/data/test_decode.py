
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tftransfer
from tftransfer.data import decode_image

from conftest import (write_one_image_per_class)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_decode_image_gives_three_channels(tmp_path, mode):
    path = tmp_path / f"{mode}.png"
    Image.new(mode, (10, 6)).save(path)
    image = decode_image(tf.io.read_file(str(path)), (8, 8))
    assert image.shape == (8, 8, 3) and image.dtype == tf.float32


def test_decode_image_scales_large_jpegs_consistently(tmp_path):
    big = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(
        0, 255, (400, 640, 3), dtype=np.uint8)).save(big)
    contents = tf.io.read_file(str(big))
    scaled = decode_image(contents, (48, 48))  # Decoded at 1/8 scale: 50x80.
    full = tf.image.resize(tf.io.decode_jpeg(contents, channels=3, ratio=8), (48, 48))
    np.testing.assert_allclose(scaled, tf.clip_by_value(tf.round(full), 0, 255))
    assert decode_image(contents, (300, 300)).shape == (300, 300, 3)  # Full scale.


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("size", [(37, 51), (101, 131)])  # Shrunk, enlarged.
def test_decoded_pixels_are_rounded_without_wrapping(tmp_path, suffix, size):
    # Black, stripes, white: resized to an odd size, the pixels land on 0,
    # 255 and between; a plain cast that overflowed would turn 255.x into 0.
    stripes = np.zeros((64, 90, 3), np.uint8)
    stripes[:, 30:60:2] = 255
    stripes[:, 60:] = 255
    path = tmp_path / f"stripes{suffix}"
    Image.fromarray(stripes).save(path, quality=100)
    contents = tf.io.read_file(str(path))
    pixels = decode_image(contents, size).numpy()
    raw = tf.io.decode_image(contents, channels=3)
    resized = tf.image.resize(raw, size, antialias=suffix == ".png")
    np.testing.assert_array_equal(pixels, tf.saturate_cast(tf.round(resized), tf.uint8))
    assert pixels.min() == 0 and pixels.max() == 255


@pytest.mark.parametrize("cache", [True, False, "folder"])
def test_training_pixels_are_what_the_export_decodes(tmp_path, cache):
    root = write_one_image_per_class(tmp_path / "formats")
    cache = tmp_path / "image_cache" if cache == "folder" else cache
    data = tftransfer.image_folder(root, (24, 24), batch_size=64, validation_split=0,
                                   image_cache=cache)
    images, labels = next(iter(data.train))
    assert len(labels) == len(data.class_names) == 11 and not data.skipped
    for image, label in zip(images.numpy(), labels.numpy()):
        folder = root / data.class_names[label]
        path = next(folder.iterdir())
        expected = decode_image(tf.io.read_file(str(path)), (24, 24)).numpy()
        np.testing.assert_array_equal(image, expected, err_msg=path.name)


def test_jpeg_headers_are_read_without_pil_as_pil_reads_them(tmp_path):
    from tftransfer.data.decode import read_header, read_header_with_pil

    root = write_one_image_per_class(tmp_path / "formats")
    for path in sorted(root.rglob("*.*")):
        header = read_header(str(path))
        assert header[1:] == read_header_with_pil(str(path))[1:], path.name
        if path.suffix == ".jpg":
            assert header[0] == "JPEG"
        scale = {"a": 8, "b": 4, "c": 2, "d": 1}.get(path.name[0])
        if scale:
            assert tftransfer.data.jpeg_ratio(*header[1:], (24, 24)) == scale


def _encoded(fmt, size=(37, 23), frames=1, mode="RGB", **options):
    import io

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), np.uint8)).convert(mode)
              for _ in range(frames)]
    buffer = io.BytesIO()
    extra = dict(save_all=True, append_images=images[1:]) if frames > 1 else {}
    images[0].save(buffer, fmt, **extra, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt, options", [
    ("JPEG", {}), ("PNG", {}), ("GIF", {}), ("BMP", {}), ("WEBP", {"lossless": True}),
    ("WEBP", {"quality": 80}), ("WEBP", {"quality": 80, "mode": "RGBA"})])
def test_header_pixels_reads_each_format_without_decoding(fmt, options):
    from tftransfer.data.decode import header_pixels

    mode = options.pop("mode", "RGB")
    pixels = tf.function(header_pixels)(tf.constant(_encoded(fmt, mode=mode, **options)))
    assert int(pixels) == 37 * 23


def test_header_pixels_counts_every_frame_of_a_gif():
    from tftransfer.data.decode import header_pixels

    assert int(tf.function(header_pixels)(tf.constant(_encoded("GIF", frames=5)))) == 5 * 37 * 23
    assert int(header_pixels(tf.constant(b"not an image"))) == 0


def test_decode_image_refuses_more_pixels_than_its_limit():
    small = tf.constant(_encoded("PNG"))
    assert decode_image(small, (8, 8), max_pixels=37 * 23).shape == (8, 8, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
        decode_image(small, (8, 8), max_pixels=37 * 23 - 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
        decode_image(tf.constant(_encoded("GIF", frames=3)), (8, 8), max_pixels=2 * 37 * 23)
