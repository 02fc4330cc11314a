import io
import sys

import keras
import numpy as np
import pytest

import tftransfer
from tftransfer.progress import EpochLine, Progress, libjpeg_quiet


def test_a_bar_in_a_terminal_and_nothing_elsewhere(capsys):
    bar = Progress(10, "images", interactive=True)
    for _ in range(5):
        bar.add(2)
    assert "10/10" in capsys.readouterr().out
    quiet = Progress(10, "images", interactive=False)
    quiet.add(10)
    assert capsys.readouterr().out == ""


def test_data_check_and_extraction_show_progress_in_a_terminal(
        tiny_base, image_folder_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    data = tftransfer.image_folder(image_folder_path, tiny_base.input_size, batch_size=8,
                                   image_cache=False)
    checked = capsys.readouterr().out
    assert "24/24" in checked  # Every file of the data check.
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    run = lambda verbose: tftransfer.fine_tune(  # noqa: E731
        model, data.train, None, head=tftransfer.Phase.head(epochs=1),
        top=tftransfer.Phase.top(epochs=0),
        options=tftransfer.RunOptions(feature_cache=tmp_path / str(verbose)),
        verbose=verbose)
    run("auto")
    assert "18/18" in capsys.readouterr().out  # The training split's extraction.
    run(2)  # One line per epoch: no bars, even in a terminal.
    out = capsys.readouterr().out
    assert "18/18" not in out and "\x1b" not in out


def test_no_bars_silences_even_a_terminal(capsys, monkeypatch):
    from tftransfer.progress import no_bars

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    with no_bars():
        Progress(4, "images").add(4)
    assert capsys.readouterr().out == ""
    Progress(4, "images").add(4)
    assert "4/4" in capsys.readouterr().out


def test_epoch_line_is_one_line_per_epoch_without_the_learning_rate():
    stream = io.StringIO()
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(np.zeros((4, 2)), np.zeros(4), epochs=2, verbose=0,
              callbacks=[EpochLine("head", stream)])
    lines = stream.getvalue().splitlines()
    assert [line.split(" - ")[0] for line in lines] == ["head epoch 1/2", "head epoch 2/2"]
    assert all("loss: 0.0000" in line and "learning_rate" not in line for line in lines)


def test_auto_verbosity_is_bars_in_a_terminal_and_a_line_an_epoch_elsewhere(monkeypatch):
    from tftransfer.progress import verbosity

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    assert verbosity("auto") == 1
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert verbosity("auto") == 2
    assert [verbosity(v) for v in (0, 1, 2)] == [0, 1, 2]


def test_libjpeg_quiet_drops_libjpeg_lines_and_passes_the_rest(capfd):
    import os

    import tensorflow as tf

    jpeg = tf.io.encode_jpeg(tf.zeros((64, 64, 3), tf.uint8)).numpy()
    with libjpeg_quiet():
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf.io.decode_jpeg(jpeg[:len(jpeg) // 2])
        os.write(2, b"Improper call to JPEG library in state 201\nA line of our own\n"
                    b"tftransfer: skipped a.jpg: cannot decode JPEG\n")
        os.write(2, b"and a last one")
    err = capfd.readouterr().err
    assert "JPEG library" not in err and "read error" not in err
    assert "A line of our own\ntftransfer: skipped a.jpg: cannot decode JPEG\nand a last one" in err
