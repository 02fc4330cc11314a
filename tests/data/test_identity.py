import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import tftransfer
from tftransfer.data import identify

from conftest import write_image_folder


def pairs(images, labels, batch_size=4):
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (20, 8, 8, 3)).astype("float32"), np.arange(20) % 3


def test_counts_and_rows_come_from_the_same_pass(image_folder_path, tmp_path):
    data = tftransfer.image_folder(image_folder_path, (8, 8), validation_split=0.25)
    known = identify(data.train, 3)
    assert known.counts == (6, 6, 6) and known.rows == 18
    root = write_image_folder(tmp_path / "data", 4)
    (root / "red" / "003.png").unlink()
    data = tftransfer.image_folder(root, (16, 16), validation_split=0, image_cache=False)
    assert identify(data.train, 3).counts == (4, 4, 3)


def test_the_key_follows_the_content_not_the_order_or_the_pipeline(arrays):
    images, labels = arrays
    key = identify(pairs(images, labels)).key
    assert identify(pairs(images, labels).shuffle(20).prefetch(2)).key == key
    assert identify(pairs(images, labels, batch_size=7).map(lambda x, y: (x, y))).key == key
    relabelled = labels.copy()
    relabelled[3] = (relabelled[3] + 1) % 3
    changed = images.copy()
    changed[5, 0, 0, 0] += 1
    others = {identify(pairs(images, relabelled)).key, identify(pairs(changed, labels)).key,
              identify(pairs(images[:-1], labels[:-1])).key,
              identify(pairs(images[::-1].copy(), labels)).key}  # Pixels paired anew.
    assert key not in others and len(others) == 4


def test_what_cannot_be_identified_says_why(arrays):
    images, labels = arrays
    assert "repeats forever" in identify(pairs(images, labels).repeat()).why_no_key
    assert "(images, labels)" in identify(tf.data.Dataset.range(3)).why_no_key


USER_PIPELINE = """
import sys
import numpy as np
import tensorflow as tf
import tftransfer

base = tftransfer.load_base(sys.argv[1], preprocessing="unit")
rng = np.random.default_rng(int(sys.argv[3]))
images = rng.uniform(0, 255, (24, 32, 32, 3)).astype("float32")
labels = np.arange(24) % 3
# A pipeline of the user's own, as tf.data code is written: shuffled, mapped, prefetched.
train = (tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(24)
         .batch(8).map(lambda x, y: (tf.image.flip_left_right(x), y)).prefetch(2))
model = tftransfer.build_classifier(base, 3, augmentation=None)
history = tftransfer.fine_tune(model, train, head=tftransfer.Phase.head(epochs=1),
                               top=tftransfer.Phase.top(epochs=0), verbose=0,
                               options=tftransfer.RunOptions(feature_cache=sys.argv[2]))
print("reused" if history.head_cache["reused"] else "extracted", history.head_cache["path"])
"""


@pytest.mark.slow
def test_a_user_pipeline_reuses_its_feature_cache_in_a_second_process(tiny_base_file,
                                                                      tmp_path):
    script = tmp_path / "user.py"
    script.write_text(textwrap.dedent(USER_PIPELINE))

    def run(seed):
        out = subprocess.run([sys.executable, str(script), str(tiny_base_file),
                              str(tmp_path / "cache"), str(seed)],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split()[-2:]

    first, second, changed = run(0), run(0), run(1)
    assert first[0] == "extracted" and second == ["reused", first[1]]
    assert changed[0] == "extracted" and changed[1] != first[1]  # Other pixels: a new entry.


def test_the_same_bytes_in_another_shape_or_dtype_of_the_same_values(arrays):
    images, labels = arrays
    key = identify(pairs(images, labels)).key
    assert identify(pairs(images.reshape(20, 8, 24, 1), labels)).key != key
    whole = np.round(images)
    assert identify(pairs(whole.astype("uint8"), labels)).key == identify(
        pairs(whole, labels)).key  # The model reads both as the same float32 pixels.
    unknown = pairs(images, labels).map(lambda x, y: tf.py_function(
        lambda a, b: (a, b), [x, y], [tf.float32, tf.int64]))
    assert identify(unknown).key == key  # A py_function hides the shapes, not the content.


def test_a_loaders_files_are_identified_without_a_read(tmp_path, monkeypatch):
    import os

    from tftransfer.data import identity

    root = write_image_folder(tmp_path / "data", 4)
    load = lambda: tftransfer.image_folder(root, (16, 16), validation_split=0.25,  # noqa: E731
                                           image_cache=False)
    data = load()
    # No pass over the pixels: the key comes from the files.
    monkeypatch.setattr(identity, "_fingerprint_batch", None)
    first = identify(data.train, 3)
    assert first.key.startswith("files-") and first.rows == 9 and first.counts == (3, 3, 3)
    assert identify(data.train).counts is None
    assert identify(load().train, 3).key == first.key  # The same files: the same key.
    assert identify(tftransfer.image_folder(root, (24, 24), validation_split=0.25,
                                            image_cache=False).train, 3).key != first.key
    changed = sorted(root.rglob("*.png"))
    for path in changed:  # Rewritten (a new modification time) or relabelled: a new key.
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert identify(load().train, 3).key != first.key
