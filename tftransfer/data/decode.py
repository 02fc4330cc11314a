"""Decoding: image bytes to RGB pixels at a fixed size, and file headers.

Training and the exported SavedModel decode with the functions here, so a
served image becomes exactly the pixels that training saw. A file's header
is read before it is decoded, to choose its decoder (JPEGs at a DCT scale)
and to name what is wrong with a file that cannot be used.
"""

import functools

import tensorflow as tf


from tftransfer.defaults import MAX_PIXELS
from tftransfer.errors import TransferError


#: File extensions read as images; TensorFlow decodes all these formats.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")


#: The formats the pipeline decodes, and the only ones PIL is asked to parse
#: (its JPEG parser also opens MPO, a JPEG with more frames after the first).
DECODABLE_FORMATS = ("BMP", "GIF", "JPEG", "PNG", "WEBP")
#: The reason a file of any other format is skipped.
NOT_DECODABLE = "not a JPEG, PNG, GIF, BMP or WebP image"




#: Part of the image cache's key: bumped whenever decoding changes, so that
#: pixels cached by an older version are not reused.
DECODER_VERSION = 2


# libjpeg's DCT scales, largest first.
_JPEG_RATIOS = (8, 4, 2)


_JPEG_FORMATS = ("JPEG", "MPO")


def jpeg_ratio(height, width, image_size):
    """Returns the DCT scale at which a JPEG is decoded for a target size.

    libjpeg decodes a JPEG at 1/2, 1/4 or 1/8 of its size for less work
    than a full decode; the smallest scale that keeps both sides at least
    the target size is used. `decode_image` applies the same rule in the
    graph, so training and the export decode each JPEG alike.

    Args:
        height: The JPEG's height.
        width: The JPEG's width.
        image_size: The target `(height, width)`.

    Returns:
        The scale's denominator: 8, 4, 2, or 1 for a full decode.

    Example:
    >>> jpeg_ratio(500, 666, (224, 224))
    2
    """
    for ratio in _JPEG_RATIOS:
        if height // ratio >= image_size[0] and width // ratio >= image_size[1]:
            return ratio
    return 1


def decode_image(contents, image_size, max_pixels=MAX_PIXELS):
    """Decodes encoded image bytes to RGB pixels at a fixed size.

    Grayscale, paletted, 16-bit, CMYK and RGBA images become 8-bit RGB; an
    animated GIF gives its first frame. A JPEG is decoded at the DCT scale
    that `jpeg_ratio` picks and resized bilinearly; other formats are
    resized with antialiasing. Pixels are rounded to whole values: the
    uint8 pixels that training caches are exactly these. The image's size
    is read from its header first (`header_pixels`), and an image of more
    than `max_pixels` fails with `InvalidArgumentError` before it is
    decoded.

    Args:
        contents: A scalar `tf.string` tensor of JPEG, PNG, GIF, BMP or
            WebP bytes.
        image_size: `(height, width)`.
        max_pixels: The most pixels (width x height x GIF frames) decoded.

    Returns:
        A float32 tensor of shape `(height, width, 3)` in `[0, 255]`.
    """
    height, width = image_size
    check = tf.debugging.assert_less_equal(
        header_pixels(contents), tf.constant(max_pixels, tf.int64),
        message=f"image too large: more than {max_pixels} pixels (width x height x "
                "frames), refused before decoding")
    with tf.control_dependencies([check]):
        contents = tf.identity(contents)

    def scaled_jpeg():
        shape = tf.image.extract_jpeg_shape(contents)
        fits = [tf.logical_and(shape[0] // r >= height, shape[1] // r >= width)
                for r in _JPEG_RATIOS]
        branch = tf.cast(tf.argmax(tf.stack([*fits, True])), tf.int32)
        return tf.switch_case(branch, [
            functools.partial(decode_jpeg, contents, image_size, r)
            for r in (*_JPEG_RATIOS, 1)])

    image = tf.cond(tf.io.is_jpeg(contents), scaled_jpeg,
                    functools.partial(_decode_other, contents, image_size))
    return tf.cast(image, tf.float32)


def header_pixels(contents):
    """Width x height (x frames, for a GIF) of encoded image bytes, from their header.

    Read in the graph, without decoding: JPEG (`tf.image.extract_jpeg_shape`),
    PNG (IHDR), GIF (the logical screen, and its frames counted by walking
    its blocks, as TensorFlow's GIF decoder decodes them all), BMP and WebP
    (VP8, VP8L, VP8X). 0 for bytes of no known format, which the decoder
    then refuses itself.

    Args:
        contents: A scalar `tf.string` tensor.

    Returns:
        A scalar int64 tensor.
    """
    head = tf.io.decode_raw(tf.strings.substr(contents, 0, 32) + b"\0" * 32, tf.uint8)
    head = tf.cast(head, tf.int64)

    def little(start, count):
        return tf.reduce_sum(head[start:start + count] * (256 ** tf.range(count, dtype=tf.int64)))

    def big(start, count):
        return little(start, count) if count == 1 else tf.reduce_sum(
            head[start:start + count] * (256 ** tf.range(count - 1, -1, -1, dtype=tf.int64)))

    def starts(magic, at=0):
        return tf.equal(tf.strings.substr(contents, at, len(magic)), magic)

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(contents), tf.int64)
        return shape[0] * shape[1]

    def webp():
        vp8 = little(26, 2) % 16384 * (little(28, 2) % 16384)
        lossless = ((little(21, 2) % 16384) + 1) * ((little(22, 3) // 64 % 16384) + 1)
        extended = (little(24, 3) + 1) * (little(27, 3) + 1)
        return tf.case([(starts(b"VP8 ", 12), lambda: vp8), (starts(b"VP8L", 12), lambda: lossless)],
                       default=lambda: extended)

    return tf.case([
        (tf.io.is_jpeg(contents), jpeg),
        (starts(b"\x89PNG\r\n\x1a\n"), lambda: big(16, 4) * big(20, 4)),
        (starts(b"GIF8"), lambda: little(6, 2) * little(8, 2) * _gif_frames(contents)),
        (starts(b"BM"), lambda: little(18, 4) * tf.abs(_signed32(little(22, 4)))),
        (tf.logical_and(starts(b"RIFF"), starts(b"WEBP", 8)), webp),
    ], default=lambda: tf.constant(0, tf.int64), exclusive=False)


def _signed32(value):
    return tf.where(value >= 2 ** 31, value - 2 ** 32, value)


def _gif_frames(contents):
    """The image descriptors of a GIF, counted by walking its blocks (at least 1)."""
    data = tf.cast(tf.io.decode_raw(contents, tf.uint8), tf.int32)
    size = tf.size(data)

    def byte(i):
        return tf.gather(data, tf.minimum(i, size - 1))

    def table(flags):  # A colour table's bytes, from a packed-fields byte.
        return tf.where(flags >= 128, 3 * tf.bitwise.left_shift(2, flags % 8), 0)

    def step(position, frames, in_blocks, done):
        value = byte(position)
        # In sub-blocks: a size byte, 0 ending them.
        after_blocks = (tf.where(value == 0, position + 1, position + value + 1),
                        frames, value != 0, done)
        yes, no = tf.constant(True), tf.constant(False)
        extension = (position + 2, frames, yes, done)
        image = (position + 11 + table(byte(position + 9)), frames + 1, yes, done)
        end = (position, frames, no, yes)
        return tf.case([(in_blocks, lambda: after_blocks),
                        (tf.equal(value, 0x21), lambda: extension),
                        (tf.equal(value, 0x2C), lambda: image)],
                       default=lambda: end, exclusive=False)

    start = 13 + table(byte(10))
    _, frames, _, _ = tf.while_loop(
        lambda position, frames, in_blocks, done: tf.logical_and(
            tf.logical_not(done), position < size),
        step, (start, tf.constant(0), tf.constant(False), tf.constant(False)))
    return tf.cast(tf.maximum(frames, 1), tf.int64)


def decode_jpeg(contents, image_size, ratio):
    """uint8 pixels at `image_size` (or as decoded, if `None`) of JPEG bytes."""
    image = tf.io.decode_jpeg(contents, channels=3, ratio=ratio)
    if image_size is None:
        return image
    # What is left to shrink after DCT scaling is less than 2x (unless even
    # 1/8 is more than twice the target), where bilinear barely aliases and
    # runs several times faster than antialiased resizing.
    return _resized(image, image_size, antialias=False)


def _decode_other(contents, image_size):
    """uint8 pixels at `image_size` (or as decoded, if `None`) of PNG, GIF, BMP, WebP."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    if image_size is None:
        return image
    return _resized(image, image_size, antialias=True)


def _resized(image, image_size, *, antialias):
    """uint8 `image` resized to `image_size`, rounded back to uint8."""
    resized = tf.image.resize(image, image_size, antialias=antialias)
    # Bilinear and triangle weights are convex, so the result stays within
    # [0, 255] and a plain cast suffices; `saturate_cast`'s clip costs more
    # than the resize itself.
    return tf.cast(tf.round(resized), tf.uint8)


def rounded(pixels):
    """Rounds pixels of any range to uint8, clipping what lies outside."""
    return tf.saturate_cast(tf.round(pixels), tf.uint8)


def file_decoder(image_size, ratio):
    """`(path, label, index) -> (pixels, label, index)` with a fixed decoder.

    Choosing the decoder per file ahead of time (from its header) keeps
    control flow out of the input pipeline's hot loop.

    Args:
        image_size: `(height, width)`; `None` only checks that files decode
            (the least work: JPEGs at 1/8 scale) and yields their shape.
        ratio: A JPEG DCT scale (1, 2, 4 or 8), or 0 for the other formats.
    """
    def decode(path, label, index):
        contents = tf.io.read_file(path)
        if ratio:
            image = decode_jpeg(contents, image_size, 8 if image_size is None else ratio)
        else:
            image = _decode_other(contents, image_size)
        return (tf.shape(image) if image_size is None else image), label, index

    return decode


def decoder_of(header, image_size):
    """The fixed decoder of a file (`file_decoder`'s `ratio`), from its header."""
    image_format, height, width = header
    if image_format not in _JPEG_FORMATS:
        return 0
    return 8 if image_size is None else jpeg_ratio(height, width, image_size)


def read_header(path):
    """`(format, height, width)` of an image file, or why it cannot be used."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_JPEG_HEAD_BYTES)
    except FileNotFoundError:
        return "file not found"
    except OSError as error:
        return f"unreadable: {error.strerror or error}"
    if not head:
        return "empty file"
    # Parsing a JPEG's frame header here costs a third of opening the file
    # with PIL, and this runs for every file before the first epoch.
    size = _jpeg_size(head)
    header = ("JPEG", *size) if size else read_header_with_pil(path)
    if isinstance(header, tuple) and header[1] * header[2] > MAX_PIXELS:
        return f"too large: {header[2]}x{header[1]} pixels"
    return header


_JPEG_HEAD_BYTES = 1 << 16


# Start-of-frame markers, which hold the size: 0xC0-0xCF but for DHT, JPG and DAC.
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(head):
    """`(height, width)` from a JPEG's first bytes, or `None` if not found there."""
    if head[:3] != b"\xff\xd8\xff":
        return None
    position = 2
    while position + 9 <= len(head):
        if head[position] != 0xFF:
            return None
        marker = head[position + 1]
        if marker == 0xFF:  # Fill byte.
            position += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # No length follows.
            position += 2
        elif marker in _JPEG_FRAME_MARKERS:
            height = int.from_bytes(head[position + 5:position + 7], "big")
            width = int.from_bytes(head[position + 7:position + 9], "big")
            return (height, width) if height and width else None
        else:
            position += 2 + int.from_bytes(head[position + 2:position + 4], "big")
    return None


def read_header_with_pil(path):
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Only the pipeline's formats: PIL's other parsers never see the bytes.
            with Image.open(path, formats=DECODABLE_FORMATS) as image:
                image_format, (width, height) = image.format, image.size
                # TensorFlow decodes every frame of a GIF: they all count.
                frames = getattr(image, "n_frames", 1) if image_format == "GIF" else 1
    except UnidentifiedImageError:
        return NOT_DECODABLE
    except Image.DecompressionBombError:
        return "too large to decode"
    except OSError as error:
        return f"unreadable: {error.strerror or error}"
    if frames > 1 and width * height * frames > MAX_PIXELS:
        return f"too large: {width}x{height} pixels x {frames} frames"
    return image_format, height, width


def _to_rgb(image):
    channels = image.shape[-1]
    check_channels(channels)
    if channels == 1:
        return tf.image.grayscale_to_rgb(image)
    if channels == 4:
        return image[..., :3]
    return image


def check_channels(channels):
    # Checked before tracing too: raised inside a traced function, the
    # error would reach the caller wrapped in AutoGraph's StagingError.
    if channels not in (1, 3, 4):
        raise TransferError(f"images must have 1, 3 or 4 channels, got {channels}")


def fit_pixels(image, image_size):
    """RGB uint8 pixels at `image_size`, rounded as `decode_image` rounds."""
    image = tf.cast(_to_rgb(image), tf.float32)
    if tuple(image.shape[-3:-1]) != tuple(image_size):
        # Already-fitted images (TFDS ones come from `decode_image`) skip this.
        image = tf.image.resize(image, image_size, antialias=True)
    return rounded(image)
