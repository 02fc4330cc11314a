import numpy as np
import pytest
from PIL import Image

from tftransfer.reports.copies import (FEATURE_CUT_RANGE, HASH_CUT_RANGE, copy_cuts,
                                       hash_neighbours, perceptual_hash)


def _grey32(image):
    return np.asarray(image.convert("L").resize((32, 32), Image.BOX), np.float32)


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (8, 8, 3)).astype("uint8")
    return Image.fromarray(texture).resize((200, 160), Image.BICUBIC)


def test_resized_reencoded_and_colour_shifted_copies_keep_their_hash(photo, tmp_path):
    photo.resize((180, 144)).save(tmp_path / "small.jpg", quality=50)
    shifted = Image.fromarray(np.clip(np.asarray(photo, np.float32) * [1.06, 1.0, 0.94] + 6,
                                      0, 255).astype("uint8"))
    other = Image.fromarray(np.random.default_rng(1).integers(0, 255, (8, 8, 3))
                            .astype("uint8")).resize((200, 160), Image.BICUBIC)
    bits = perceptual_hash(np.stack([_grey32(photo), _grey32(Image.open(tmp_path / "small.jpg")),
                                     _grey32(shifted), _grey32(other)]))
    distance = (bits[:, None, :] != bits[None, :, :]).sum(axis=2)
    assert distance[0, 1] <= HASH_CUT_RANGE[0] and distance[0, 2] <= HASH_CUT_RANGE[0]
    assert distance[0, 3] > HASH_CUT_RANGE[1]


def test_the_cuts_follow_the_set_within_their_bounds():
    rng = np.random.default_rng(0)
    # A set whose distinct photos are far apart, and one where they are close.
    spread_out = copy_cuts(rng.normal(0.70, 0.03, 400), rng.normal(26, 3, 400))
    crowded = copy_cuts(rng.normal(0.93, 0.01, 400), rng.normal(16, 2, 400))
    assert spread_out["features"].value == FEATURE_CUT_RANGE[0]
    assert 0.95 < crowded["features"].value <= FEATURE_CUT_RANGE[1]
    assert crowded["hash"].value < spread_out["hash"].value
    assert "median" in crowded["features"].why and "robust sd" in crowded["hash"].why


def test_hash_neighbours_agree_with_a_double_loop():
    rng = np.random.default_rng(2)
    bits = rng.random((50, 64)) > 0.5
    bits[7] = bits[3]
    bits[9] = bits[3] ^ (np.arange(64) < 3)  # Three bits off.
    nearest, closest, pairs = hash_neighbours(bits, cut=3, block=16)
    full = (bits[:, None, :] != bits[None, :, :]).sum(axis=2).astype(float)
    np.fill_diagonal(full, np.inf)
    np.testing.assert_array_equal(nearest, full.min(axis=1))
    np.testing.assert_array_equal(full[np.arange(50), closest], nearest)
    assert sorted(pairs) == sorted((i, j, full[i, j]) for i in range(50)
                                   for j in range(i + 1, 50) if full[i, j] <= 3)
    assert (3, 7, 0.0) in pairs and (3, 9, 3.0) in pairs


def test_a_central_crop_is_as_close_as_its_crop_of_the_whole(photo):
    from tftransfer.reports.copies import CROPS

    def views(image):
        w, h = image.size
        out = [_grey32(image)]
        for share in CROPS:
            dw, dh = int(w * (1 - share) / 2), int(h * (1 - share) / 2)
            out.append(_grey32(image.crop((dw, dh, w - dw, h - dh))))
        return np.stack(out)

    w, h = photo.size
    cropped = photo.crop((int(w * 0.1), int(h * 0.1), w - int(w * 0.1), h - int(h * 0.1)))
    other = Image.fromarray(np.random.default_rng(3).integers(0, 255, (8, 8, 3))
                            .astype("uint8")).resize((200, 160), Image.BICUBIC)
    grey = np.stack([views(photo), views(cropped), views(other)])
    bits = perceptual_hash(grey)
    assert bits.shape == (3, len(CROPS) + 1, 64)
    whole_only, _, _ = hash_neighbours(bits[:, 0])
    nearest, _, pairs = hash_neighbours(bits, cut=HASH_CUT_RANGE[0])
    assert whole_only[1] > HASH_CUT_RANGE[1]  # The crop's whole hash is far from the photo's.
    assert nearest[1] <= HASH_CUT_RANGE[0] and pairs == [(0, 1, nearest[1])]


def test_a_set_of_look_alike_images_does_not_make_the_spread_zero():
    # Flat tiles: every nearest hash 16 bits away, so the MAD is 0.
    cuts = copy_cuts(np.full(100, 0.8), np.full(100, 16.0))
    assert cuts["hash"].spread == 1.0 and cuts["hash"].value == 10.0
    assert cuts["features"].spread == 0.01


def _thumbnail(image):
    from tftransfer.reports.data_audit import _small_views

    pixels = np.asarray(image.convert("RGB").resize((160, 160)), np.float32)[None]
    return _small_views(pixels)[1][0]


def test_a_cropped_shifted_reencoded_copy_aligns_and_another_view_does_not(photo, tmp_path):
    from tftransfer.reports.copies import ALIGNED_CUT, aligned_similarity

    w, h = photo.size
    copy = photo.crop((int(w * 0.075), int(h * 0.075), w - int(w * 0.075), h - int(h * 0.075)))
    copy = Image.fromarray(np.clip(np.asarray(copy, np.float32) * [1.06, 1.0, 0.94] + 6,
                                   0, 255).astype("uint8"))
    copy.save(tmp_path / "copy.jpg", quality=50)
    # The same object seen again: moved a little, and lit from another side.
    moved = np.asarray(photo.rotate(4, resample=Image.BICUBIC, translate=(6, 3)), np.float32)
    lit = moved * np.linspace(0.7, 1.2, w)[None, :, None]
    other_view = Image.fromarray(np.clip(lit, 0, 255).astype("uint8"))
    flat = Image.new("RGB", (200, 160), (90, 120, 40))
    thumbnails = np.stack([_thumbnail(photo), _thumbnail(Image.open(tmp_path / "copy.jpg")),
                           _thumbnail(other_view), _thumbnail(flat)])
    copy_score, view_score, flat_score = aligned_similarity(thumbnails, [(0, 1), (0, 2), (3, 3)])
    assert copy_score >= ALIGNED_CUT
    assert view_score < ALIGNED_CUT
    assert flat_score == 0.0
