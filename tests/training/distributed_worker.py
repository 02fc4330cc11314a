"""One worker of a test cluster: `fine_tune` on the bundled demo through the API.

    TF_CONFIG=... python distributed_worker.py OUT_DIR BACKUP_DIR [--die-at-epoch N]

Writes `OUT_DIR/worker-<index>.npz` (the final weights) and
`OUT_DIR/worker-<index>.json` (the epochs each phase ran). With
`--die-at-epoch N`, the process kills itself with SIGKILL as epoch N
begins, as a preempted machine would vanish.
"""

import argparse
import json
import logging
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("backup_dir")
    parser.add_argument("--die-at-epoch", type=int)
    args = parser.parse_args()
    logging.basicConfig(format="tftransfer: %(message)s", level=logging.INFO)

    import keras
    import numpy as np

    import tftransfer
    from tftransfer.training import distribute
    from tftransfer.cli import DEMO_DATA

    strategy = distribute.select_strategy("multi_worker")
    task = strategy.cluster_resolver.task_id
    keras.utils.set_random_seed(0)
    with strategy.scope():
        base = tftransfer.load_base("fashion_mobilenet_v2")
        data = tftransfer.load_data(str(DEMO_DATA), base.input_size,
                                    batch_size=distribute.global_batch_size(8, strategy))
        model = tftransfer.build_classifier(base, len(data.class_names), augmentation=None)

    def maybe_die(epoch, logs=None):
        if epoch == args.die_at_epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    history = tftransfer.fine_tune(
        model, data.train, data.validation,
        head=tftransfer.Phase.head(epochs=3, patience=100),
        top=tftransfer.Phase.top(epochs=4, patience=100, unfreeze=20,
                                             learning_rate=1e-5),
        options=tftransfer.RunOptions(backup_dir=args.backup_dir, seed=0),
        verbose=2, callbacks=[keras.callbacks.LambdaCallback(on_epoch_begin=maybe_die)])
    np.savez(os.path.join(args.out_dir, f"worker-{task}.npz"), *model.get_weights())
    with open(os.path.join(args.out_dir, f"worker-{task}.json"), "w") as f:
        json.dump({"head": history.head.epoch,
                   "top": history.top.epoch if history.top else []}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
