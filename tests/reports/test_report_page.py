import os
import shutil

import keras
import numpy as np
import pytest
from PIL import Image

from tftransfer.reports.evaluation import classification_report
from tftransfer.reports.report_page import plot_history, write_report_page
from tftransfer.training.history import FineTuneHistory


def browser_path():
    """Debian's chromium (which .ci/run installs); in CI its absence is a failure."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI"):
        pytest.fail("no chromium: .ci/run installs it with apt-get install -y chromium")
    pytest.skip("no chromium here (apt-get install -y chromium)")


def fake_history():
    head, tune = keras.callbacks.History(), keras.callbacks.History()
    head.epoch, tune.epoch = [0, 1, 2], [3, 4]
    head.history = {"loss": [1.0, 0.6, 0.5], "val_loss": [1.1, 0.7, 0.6],
                    "accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.4, 0.6, 0.7]}
    tune.history = {"loss": [0.4, 0.3], "val_loss": [0.5, 0.45],
                    "accuracy": [0.85, 0.9], "val_accuracy": [0.75, 0.8]}
    return FineTuneHistory(head=head, top=tune, kept_phase="top")


@pytest.fixture
def page(tmp_path):
    """A report on 12 JPEG files of 3 classes, half of them wrong, with curves."""
    rng = np.random.default_rng(0)
    files = []
    for i in range(12):
        path = tmp_path / "images" / f"photo_{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), np.uint8)).save(path)
        files.append(path)
    labels = np.arange(12) % 3
    probabilities = rng.dirichlet(np.ones(3), size=12)
    report = classification_report(labels, probabilities, ["rose", "tulip", "daisy"],
                                   files=files)
    assert report.top_losses  # The grid below has thumbnails to check.
    return write_report_page(report, tmp_path / "report", history=fake_history())


def test_the_page_is_self_contained_and_keeps_its_pngs(page):
    for png in ("confusion_matrix.png", "reliability.png", "history.png"):
        assert (page.parent / png).stat().st_size > 1000
    text = page.read_text()
    assert "src=\"images/" not in text and "http" not in text  # Nothing to fetch.
    assert text.count("data:image/jpeg;base64,") >= 1


def test_curves_mark_the_phase_boundary(tmp_path):
    import matplotlib.pyplot as plt

    path = plot_history(fake_history(), tmp_path / "history.png")
    assert path.stat().st_size > 1000
    plt.close("all")


def test_headless_chromium_renders_every_image(page, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    executable = browser_path()
    errors = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable,
                                    args=["--no-sandbox", "--disable-gpu"])
        tab = browser.new_page(viewport={"width": 1200, "height": 900})
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto(page.as_uri())
        tab.wait_for_load_state("load")
        widths = tab.evaluate("Array.from(document.images, i => i.complete ? "
                              "i.naturalWidth : 0)")
        screenshot = tmp_path / "screenshot.png"
        tab.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    assert errors == []
    assert len(widths) >= 4 and all(w > 0 for w in widths), widths
    pixels = np.asarray(Image.open(screenshot).convert("L"), np.float32)
    assert pixels.std() > 10  # Not a blank page.


def test_a_thousand_classes_give_a_bounded_matrix_and_the_whole_table(tmp_path):
    from tftransfer.reports.report_page import MATRIX_CLASSES, most_confused

    rng = np.random.default_rng(0)
    classes = 1000
    labels = np.repeat(np.arange(classes), 2)
    probabilities = rng.dirichlet(np.full(classes, 0.05), len(labels)).astype("float32")
    names = [f"class {i}" for i in range(classes)]
    report = classification_report(labels, probabilities, names)
    page = write_report_page(report, tmp_path)
    matrix = Image.open(tmp_path / "confusion_matrix.png")
    assert matrix.size[0] * matrix.size[1] < 4000 * 4000  # Not 1,000 rows of cells.
    text = page.read_text()
    assert all(f">class {i}<" in text for i in (0, 499, 999))  # Every row of the table.
    assert (tmp_path / "confusion_matrix.png").stat().st_size < 2_000_000
    assert len(most_confused(report.confusion_matrix)) == MATRIX_CLASSES
