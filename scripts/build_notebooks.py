"""Writes the notebooks in notebooks/ from the cell texts below, outputs stripped.

Each notebook has an "Open in Colab" badge, an install cell that runs only on
Colab, and a cell tagged `parameters`: on Colab it picks real data and bases;
elsewhere (and in the test suite, which executes every notebook) the bundled
base and demo data, offline.

    python scripts/build_notebooks.py
"""

from pathlib import Path

import nbformat

REPO = "https://github.com/tftransfer/tftransfer"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

INSTALL = f'''import sys
if "google.colab" in sys.modules:  # Elsewhere, install with `pip install -e .`.
    %pip install -q "git+{REPO}"'''

PARAMETERS = '''import sys
IN_COLAB = "google.colab" in sys.modules
# On Colab: real data and ImageNet weights. Elsewhere: the bundled base and
# demo data, which need no download.
DATA = "tfds:tf_flowers" if IN_COLAB else None  # None: the bundled demo.
BASE = "efficientnet_v2_b0" if IN_COLAB else "fashion_mobilenet_v2"
HEAD_EPOCHS = 20 if IN_COLAB else 10
TOP_EPOCHS = 10 if IN_COLAB else 5'''

SETUP = '''import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
import tftransfer
from tftransfer.cli import DEMO_DATA

base = tftransfer.load_base(BASE)
data = tftransfer.load_data(DATA or DEMO_DATA, base.input_size, batch_size=16)
print(base.name, base.input_size, base.preprocessing, data.class_names)'''


def badge(name):
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({REPO.replace('https://github.com', 'https://colab.research.google.com/github')}"
            f"/blob/main/notebooks/{name})")


CELLS = {
    "01_quickstart.ipynb": [
        ("md", "# Quickstart: a folder of images to a classifier\n\nA pretrained base "
               "extracts features; a new softmax head learns your classes on top of them "
               "(feature extraction: the base stays frozen)."),
        ("md", "Load a base and the data. `load_data` takes a folder of class "
               "subfolders, a CSV, a TFDS name, numpy arrays or a `tf.data.Dataset`."),
        ("code", SETUP),
        ("md", "`load_data` checked every file before it returned: each one that "
               "training cannot use (corrupt, truncated, empty, not an image) is "
               "skipped and named, and nothing vanishes: found = used + skipped. "
               "The check decoded each image once, at the base's input size, and "
               "kept the pixels, so the first epoch does not decode again. "
               "`check_data` runs the same check on a folder alone (the CLI: "
               "`tftransfer check-data DIR`)."),
        ("code", "from tftransfer.data import check_data\n"
                 "report = check_data(DEMO_DATA)\n"
                 "print(report.summary())\n"
                 "for split, classes in report.used.items():\n"
                 "    print(split, {name: len(paths) for name, paths in classes.items()})"),
        ("md", "Build the classifier: the base's `features`, then a new `head`. With "
               "`top=Phase.top(epochs=0)` only the head trains, on features the frozen base "
               "computes once and caches."),
        ("code", "model = tftransfer.build_classifier(base, len(data.class_names))\n"
                 "history = tftransfer.fine_tune(\n"
                 "    model, data.train, data.validation,\n"
                 "    head=tftransfer.Phase.head(epochs=HEAD_EPOCHS, learning_rate=3e-3),\n"
                 "    top=tftransfer.Phase.top(epochs=0), verbose=0)\n"
                 "print('validation accuracy', history.history['val_accuracy'][-1])"),
        ("md", "Predictions on validation images, with the true class in brackets."),
        ("code", "images, labels = next(iter(data.validation))\n"
                 "probabilities = model.predict(images, verbose=0)\n"
                 "fig, axes = plt.subplots(1, 6, figsize=(12, 2.5))\n"
                 "for ax, image, label, p in zip(axes, images, labels, probabilities):\n"
                 "    ax.imshow(image.numpy().astype('uint8'))\n"
                 "    ax.set_title(f\"{data.class_names[p.argmax()]}\\n"
                 "[{data.class_names[label]}]\", fontsize=8)\n"
                 "    ax.axis('off')\n"
                 "plt.show()"),
    ],
    "02_fine_tuning.ipynb": [
        ("md", "# Two-phase fine-tuning, and what the model learned\n\nThe head phase "
               "trains the new head on the frozen base. The top phase unfreezes the top "
               "of the base and goes on at a learning rate 10x lower, warmed up, so the large "
               "gradients of a fresh head never wreck the pretrained features. "
               "BatchNormalization layers stay frozen, which in Keras 3 means inference "
               "mode: small batches never overwrite the pretrained statistics."),
        ("code", SETUP),
        ("md", "How much of the base trains in the top phase follows the data: "
               "`unfreeze='auto'` (the default) picks a share of the backbone by the "
               "training images in the smallest class (none below 30, where the head is "
               "refit on the validation images instead, a quarter up to 99, half up to "
               "499, then all); from 30, whether it runs at all waits for the evidence of "
               "the extracted features (out-of-fold accuracy of a linear head)."),
        ("code", "from tftransfer.training.auto import AUTO_UNFREEZE, auto_unfreeze\n"
                 "from tftransfer.models.builder import backbone_layers\n"
                 "model = tftransfer.build_classifier(base, len(data.class_names))\n"
                 "for per_class in (10, 50, 200, 1000):\n"
                 "    print(per_class, 'images per class ->', auto_unfreeze(model, per_class),\n"
                 "          'of', len(backbone_layers(model)), 'layers')"),
        ("md", "Before training, `plan_fine_tune` says what `fine_tune` will do with "
               "these arguments: what `'auto'` chose from the data, what is cached and "
               "why not, and the rule that keeps one phase's weights "
               "(`tftransfer train --dry-run` prints the same)."),
        ("code", "plan = tftransfer.plan_fine_tune(\n"
                 "    model, data.train, data.validation,\n"
                 "    head=tftransfer.Phase.head(epochs=HEAD_EPOCHS),\n"
                 "    top=tftransfer.Phase.top(epochs=TOP_EPOCHS))\n"
                 "print(plan.describe())"),
        ("md", "Train with the defaults; early stopping keeps the head phase's best "
               "weights, and a top phase runs down its cosine (on the demo's 20 images "
               "per class there is none: the head is refit instead)."),
        ("code", "history = tftransfer.fine_tune(\n"
                 "    model, data.train, data.validation,\n"
                 "    head=tftransfer.Phase.head(epochs=HEAD_EPOCHS),\n"
                 "    top=tftransfer.Phase.top(epochs=TOP_EPOCHS),\n"
                 "    verbose=0)\n"
                 "print('the top phase trained', history.unfrozen, 'layers; kept the weights '\n"
                 "      'of the', history.kept_phase, 'phase')"),
        ("md", "What the model learned, on images it never saw: per-class metrics, "
               "the confusion matrix, the most confidently wrong images, calibration "
               "and both phases' curves. `report.save` writes `report.html`, one "
               "self-contained page."),
        ("code", "report = tftransfer.evaluate(model, data.test or data.validation, "
                 "data.class_names)\n"
                 "print(report.summary())\n"
                 "page = report.save('report_02', history=history)\n"
                 "plt.imshow(plt.imread('report_02/confusion_matrix.png')); plt.axis('off')\n"
                 "plt.show()\n"
                 "print('open', page)"),
        ("md", "Transfer against the same network trained from scratch, scored on the "
               "same test images: `tftransfer.compare` (the CLI: `tftransfer compare`). "
               "It needs an untouched pretrained base, so it loads the base again."),
        ("code", "comparison = tftransfer.compare(tftransfer.load_base(BASE), data,\n"
                 "                                scratch_epochs=HEAD_EPOCHS)\n"
                 "print(comparison.table())"),
    ],
    "03_tf_hub.ipynb": [
        ("md", "# A TF Hub module as the base, in Keras 3\n\n`hub.KerasLayer` is a "
               "tf_keras layer that Keras 3 models reject; `tftransfer.models.hub.HubModule` "
               "is a Keras 3 layer that wraps a TF2 SavedModel and fine-tunes it."),
        ("code", "import sys\nIN_COLAB = 'google.colab' in sys.modules\n"
                 "from tftransfer.models.bases import SAVED_MODELS_DIR\n"
                 "HANDLE = ('https://www.kaggle.com/models/google/mobilenet-v2/TensorFlow2/'\n"
                 "          '100-224-feature-vector/2') if IN_COLAB else str(\n"
                 "    SAVED_MODELS_DIR / 'fashion_mobilenet_v2_hub')\n"
                 "DATA = 'tfds:tf_flowers' if IN_COLAB else None\n"
                 "HEAD_EPOCHS, TOP_EPOCHS = (10, 3) if IN_COLAB else (5, 1)"),
        ("md", "Load the module: a handle, a local folder, or a module in "
               "`TFHUB_CACHE_DIR`. Hub image modules take `[0, 1]` pixels; the base "
               "carries that."),
        ("code", "import tftransfer\nfrom tftransfer.cli import DEMO_DATA\n"
                 "base = tftransfer.load_base(HANDLE)\n"
                 "data = tftransfer.load_data(DATA or DEMO_DATA, base.input_size, "
                 "batch_size=16)\n"
                 "print(base.preprocessing, base.input_size, base.feature_dim)"),
        ("md", "Train the head, then fine-tune the whole module at a low rate."),
        ("code", "model = tftransfer.build_classifier(base, len(data.class_names))\n"
                 "history = tftransfer.fine_tune(\n"
                 "    model, data.train, data.validation,\n"
                 "    head=tftransfer.Phase.head(epochs=HEAD_EPOCHS),\n"
                 "    top=tftransfer.Phase.top(epochs=TOP_EPOCHS, "
                 "unfreeze='all'),\n"
                 "    verbose=0)\n"
                 "print(history.kept_phase, history.history['val_accuracy'][-1])"),
        ("md", "The model saves to `.keras` and loads back like any Keras model. The "
               "file names the module's handle, which loading would fetch or run, so "
               "Keras's safe mode refuses it: load your own file with `safe_mode=False` "
               "(the CLI: `--trust-model`)."),
        ("code", "import numpy as np\n"
                 "model.save('/tmp/hub_classifier.keras')\n"
                 "import keras\n"
                 "again = keras.saving.load_model('/tmp/hub_classifier.keras', "
                 "safe_mode=False)\n"
                 "images, _ = next(iter(data.validation))\n"
                 "print(np.abs(again.predict(images, verbose=0) - "
                 "model.predict(images, verbose=0)).max())"),
    ],
    "04_accelerators.ipynb": [
        ("md", "# GPUs, TPUs and several machines through `tf.distribute`\n\nThe same "
               "code runs on a CPU, a GPU, several GPUs, a TPU or a cluster of workers: "
               "`tftransfer.training.distribute.select_strategy('auto')` picks the strategy, "
               "`select_precision('auto')` the compute dtype (mixed_float16 on recent "
               "GPUs, mixed_bfloat16 on TPU), and the base and classifier are built in "
               "the strategy's scope. On Colab pick a GPU or TPU runtime; elsewhere this "
               "runs on one device."),
        ("code", PARAMETERS),
        ("code", "from tftransfer import distribute\n"
                 "strategy = distribute.select_strategy('auto')\n"
                 "precision = distribute.select_precision('auto', strategy)\n"
                 "print(distribute.describe(strategy), strategy.num_replicas_in_sync, "
                 "'replica(s),', precision)"),
        ("md", "The batch size is per replica: the global batch grows with the "
               "replicas, and the learning rates by the square root of their number "
               "(Adam). `RunOptions(backup_dir=...)` backs up every epoch of both phases, so a "
               "preempted run resumes where it stopped when it is started again."),
        ("code", "import tempfile\nimport tftransfer\nfrom tftransfer.cli import DEMO_DATA\n"
                 "with strategy.scope():\n"
                 "    base = tftransfer.load_base(BASE)\n"
                 "    model_data = tftransfer.load_data(DATA or DEMO_DATA, base.input_size,\n"
                 "        batch_size=distribute.global_batch_size(16, strategy))\n"
                 "    model = tftransfer.build_classifier(base, len(model_data.class_names))\n"
                 "history = tftransfer.fine_tune(model, model_data.train, "
                 "model_data.validation,\n"
                 "    head=tftransfer.Phase.head(epochs=HEAD_EPOCHS),\n"
                 "    top=tftransfer.Phase.top(epochs=TOP_EPOCHS),\n"
                 "    options=tftransfer.RunOptions(backup_dir=tempfile.mkdtemp() + '/backup'),\n"
                 "    verbose=0)\n"
                 "print(model.output.dtype, history.history['val_accuracy'][-1])"),
        ("md", "What does not change: the model, the data, the export. What changes: "
               "the strategy, the global batch, the compute dtype. With several "
               "machines, set `TF_CONFIG` on each and run the same code (or "
               "`tftransfer train --strategy multi_worker`); Keras' `model.fit` fails "
               "there (keras-team/keras#20585), so `fine_tune` runs its own "
               "`strategy.run` loop."),
    ],
    "05_export_and_serve.ipynb": [
        ("md", "# Export and serve\n\nA versioned SavedModel that TF Serving loads "
               "as is, a REST request body, and TFLite models with their accuracy."),
        ("code", SETUP),
        ("code", "model = tftransfer.build_classifier(base, len(data.class_names))\n"
                 "tftransfer.fine_tune(\n"
                 "    model, data.train, data.validation,\n"
                 "    head=tftransfer.Phase.head(epochs=HEAD_EPOCHS, learning_rate=3e-3),\n"
                 "    top=tftransfer.Phase.top(epochs=0), "
                 "verbose=0)\n"
                 "import tempfile\nout = tempfile.mkdtemp()\n"
                 "path = tftransfer.export_saved_model(model, f'{out}/demo', "
                 "data.class_names)\n"
                 "print(path)"),
        ("md", "Inspect the signatures: `serving_default` takes encoded image bytes."),
        ("code", "import subprocess\n"
                 "print(subprocess.run(['saved_model_cli', 'show', '--dir', str(path),\n"
                 "    '--tag_set', 'serve', '--signature_def', 'serving_default'],\n"
                 "    capture_output=True, text=True).stdout)"),
        ("md", "A REST `:predict` body: base64 bytes under `b64`."),
        ("code", "import base64, json, pathlib\n"
                 "image = sorted(pathlib.Path(DEMO_DATA, 'test').rglob('*.png'))[0] "
                 "if DATA is None else None\n"
                 "if image is not None:\n"
                 "    body = {'instances': [{'b64': "
                 "base64.b64encode(image.read_bytes()).decode()}]}\n"
                 "    print(json.dumps(body)[:120], '...')\n"
                 "    print(tftransfer.predict_files(f'{out}/demo', [image]))"),
        ("md", "TFLite: each variant's size and validation accuracy."),
        ("code", "from tftransfer.export.tflite import export_tflite_variants\n"
                 "report = export_tflite_variants(model, f'{out}/tflite', "
                 "validation=data.validation,\n"
                 "    representative_data=data.train, class_names=data.class_names)\n"
                 "for row in report:\n"
                 "    print(row['quantization'], row['bytes'], round(row['accuracy'], 3))\n"
                 "plt.bar([r['quantization'] for r in report], [r['accuracy'] for r in "
                 "report])\n"
                 "plt.ylabel('validation accuracy'); plt.show()"),
    ],
}


def build(name, cells):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata.update({
        "kernelspec": {"name": "python3", "display_name": "Python 3",
                       "language": "python"},
        "colab": {"provenance": []}})
    first, *rest = cells
    notebook.cells.append(nbformat.v4.new_markdown_cell(first[1] + "\n\n" + badge(name)))
    notebook.cells.append(nbformat.v4.new_code_cell(INSTALL))
    if name != "03_tf_hub.ipynb" and rest[0][1] != PARAMETERS:
        rest.insert(0, ("code", PARAMETERS))
    for kind, text in rest:
        if kind == "md":
            notebook.cells.append(nbformat.v4.new_markdown_cell(text))
        else:
            cell = nbformat.v4.new_code_cell(text)
            if text in (PARAMETERS,) or text.startswith("import sys\nIN_COLAB"):
                cell.metadata["tags"] = ["parameters"]
            notebook.cells.append(cell)
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index}"
    return notebook


def main():
    NOTEBOOKS.mkdir(exist_ok=True)
    for name, cells in CELLS.items():
        nbformat.write(build(name, list(cells)), NOTEBOOKS / name)
        print(NOTEBOOKS / name)


if __name__ == "__main__":
    main()
