"""Transfer learning against training from scratch, on the bundled demo.

The demo target is Fashion-MNIST classes 5-9 with 20 training images per
class (plus 10 per class for early stopping), scored on 100 test images per
class. Three ways to get a classifier, each timed:

* from scratch: the same MobileNetV2-0.35 architecture, randomly
  initialised, every layer trained;
* feature extraction: the bundled pretrained base, frozen, phase 1 only;
* fine-tuned: phase 1, then the top layers at a low learning rate.

Usage:
    python bench/transfer_vs_scratch.py [--seed 1337]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

import tftransfer
from tftransfer.builder import set_trainable_flag
from tftransfer.bases import BUNDLED_BASE
from tftransfer.cli import DEMO_DATA


def from_scratch(data, seed):
    keras.utils.set_random_seed(seed)
    base = tftransfer.load_base(BUNDLED_BASE, weights=None)  # Same architecture.
    model = tftransfer.build_classifier(base, len(data.class_names))
    set_trainable_flag(model.get_layer("features"), True)  # BatchNorm included.
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(data.train, validation_data=data.validation, epochs=60, verbose=0,
              callbacks=[keras.callbacks.EarlyStopping(
                  "val_loss", patience=10, restore_best_weights=True)])
    return model


def transfer(data, seed, fine_tune_epochs):
    keras.utils.set_random_seed(seed)
    base = tftransfer.load_base(BUNDLED_BASE)
    model = tftransfer.build_classifier(base, len(data.class_names))
    tftransfer.fine_tune(
        model, data.train, data.validation,
        fine_tune=tftransfer.Phase.fine_tune(epochs=fine_tune_epochs), verbose=0)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()
    data = tftransfer.image_folder(DEMO_DATA, (48, 48), seed=args.seed, batch_size=16)
    runs = [
        ("from scratch", lambda: from_scratch(data, args.seed)),
        ("feature extraction", lambda: transfer(data, args.seed, 0)),
        ("fine-tuned", lambda: transfer(data, args.seed, 10)),
    ]
    print("| method | test accuracy | wall time |")
    print("|---|---|---|")
    for name, train in runs:
        start = time.time()
        model = train()
        seconds = time.time() - start
        accuracy = model.evaluate(data.test, verbose=0, return_dict=True)["accuracy"]
        print(f"| {name} | {accuracy:.1%} | {seconds:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
