"""Backups of a `fine_tune` run, for resuming it after a crash or preemption.

`PhaseBackups` keeps, in one folder, each phase's latest epoch
(`EpochBackup`) and, once the head phase ends, its result, so that a
restart with the same folder goes on in the right phase at the right
epoch. The folder may be the user's own: it is marked as a backup folder,
a folder that holds anything else and no mark is refused, and once training
ends only what the backups wrote is removed.
"""

import json
import logging
import shutil
from pathlib import Path

import keras
import numpy as np

from tftransfer import _atomic, _locks
from tftransfer.errors import TransferError
from tftransfer.training.distribute import is_chief

logger = logging.getLogger("tftransfer")

#: The file that marks a folder as holding a `fine_tune` run's backups.
MARKER = "tftransfer-backup.json"
#: The file that the training writing the backups holds locked.
LOCK = "in-use.lock"


class EpochBackup(keras.callbacks.Callback):
    """Backs up weights and optimizer state after every epoch, for resumption.

    Like `keras.callbacks.BackupAndRestore`, but safe with several workers:
    only the chief writes, each backup is written under a new name and
    then published by an atomic rename of its small index file, so a kill
    at any moment leaves the previous backup readable; every worker
    restores from the same files before training.

    Args:
        directory: The backup folder (shared by all workers).
    """

    INDEX = "latest.json"

    def __init__(self, directory):
        super().__init__()
        self.directory = Path(directory)

    def restore(self, model: keras.Model) -> int:
        """Loads the latest backup into a compiled model.

        Args:
            model: The compiled model that the backups were made of.

        Returns:
            The epoch to resume at (the number of epochs done), 0 if there
            is no backup.
        """
        try:
            index = json.loads((self.directory / self.INDEX).read_text())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as error:
            raise TransferError(f"cannot read the backup index "
                                f"{self.directory / self.INDEX}: {error}") from None
        path = self.directory / index["weights"]
        with model.distribute_strategy.scope():
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(path)
        except (OSError, ValueError) as error:
            raise TransferError(
                f"the backup {path} does not fit this model ({error}); delete "
                f"{self.directory.parent} or choose another backup folder") from None
        return int(index["epoch"])

    def on_epoch_end(self, epoch, logs=None):
        if not is_chief(self.model.distribute_strategy):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1}.weights.h5"
        # A new name each epoch; the index's rename below publishes it, once
        # the weights are on disk.
        self.model.save_weights(self.directory / name, overwrite=True)
        _atomic.sync_tree(self.directory)
        index = json.dumps({"epoch": epoch + 1, "weights": name})
        _atomic.replace_file(self.directory / self.INDEX, lambda path: path.write_text(index))
        for old in self.directory.glob("epoch-*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)


class PhaseBackups:
    """The backups of one `fine_tune` run, for resuming it in the right phase.

    `DIR/head/`, `DIR/refit/` and `DIR/top/` hold each phase's epoch
    backups (`EpochBackup`); once the head phase ends, its result (the
    weights that it kept, and its history) is saved as `DIR/head.npz` +
    `DIR/head.json`, so that a restart goes straight to the top phase.
    `DIR/tftransfer-backup.json` marks the folder as a backup folder.

    Args:
        directory: The backup folder: new, empty, or one that these
            backups marked.
        run: What makes a run this run (the data's keys, each phase's
            settings, ...), JSON-serialisable; the mark records it, and a
            folder marked by another run is refused rather than resumed.

    Raises:
        TransferError: `directory` holds other files and no mark, or the
            backups of another run.
    """

    #: What the backups write in their folder; `remove` deletes only these.
    WRITES = ("head", "refit", "top", "head.npz", "head.json", MARKER, LOCK)

    def __init__(self, directory, run=None):
        self.directory = Path(directory)
        self.run = run
        self._lock = None
        marker = self.directory / MARKER
        if self.directory.is_dir() and not marker.is_file():
            # The mark being written (by the chief, while the other workers
            # start) is not another file: only a finished mark or nothing.
            if any(not _atomic.is_partial_of(p, marker) for p in self.directory.iterdir()):
                raise TransferError(
                    f"the backup folder {self.directory} holds other files and is not a "
                    "tftransfer backup folder; choose a new or empty folder")
        if marker.is_file() and run is not None:
            try:
                marked = json.loads(marker.read_text()).get("run")
            except ValueError:
                marked = None
            # As the mark holds it: through JSON, tuples as lists.
            written = json.loads(json.dumps(run, default=str))
            if marked is not None and marked != written:
                changed = sorted(k for k in set(marked) | set(written)
                                 if marked.get(k) != written.get(k))
                raise TransferError(
                    f"the backups in {self.directory} are of another run (it differs in: "
                    f"{', '.join(changed)}); resuming would continue that run, so pass "
                    "another --backup-dir, or delete the folder to start again")

    def hold(self, strategy=None):
        """Keeps other trainings out of the folder until `remove` (or this process ends).

        Args:
            strategy: The training's strategy; only the process that writes
                the backups (the chief) holds the folder.

        Raises:
            TransferError: Another training holds the folder.
        """
        if self._lock is not None or not is_chief(strategy):
            return
        self._mark()  # First, so that the lock file is not taken for the user's.
        lock = _locks.try_lock(self.directory / LOCK, shared=False, create=True)
        if lock is False:
            raise TransferError(
                f"the backup folder {self.directory} is in use by another training; "
                "wait for it to end, or pass another --backup-dir")
        self._lock = lock

    def release(self):
        """Lets other trainings use the folder (`hold` undone)."""
        _locks.release(self._lock)
        self._lock = None

    def for_phase(self, phase: str) -> EpochBackup:
        """The `EpochBackup` callback of a phase (`"head"`, `"refit"` or `"top"`)."""
        self._mark()
        return EpochBackup(self.directory / phase)

    def finished_head(self, model: keras.Model):
        """Restores a finished head phase into `model`.

        Args:
            model: The classifier.

        Returns:
            `(history, feature_cache, decided)`: the head phase's `History`,
            its feature cache manifest, and what the evidence decided before
            it (`save_head`'s `decided`), or `None` if it did not finish.
        """
        try:
            state = json.loads((self.directory / "head.json").read_text())
            with np.load(self.directory / "head.npz") as arrays:
                weights = [arrays[f"w{i}"] for i in range(len(arrays.files))]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as error:
            raise TransferError(f"cannot read the backup of the head phase in "
                                f"{self.directory}: {error}") from None
        try:
            model.set_weights(weights)
        except ValueError as error:
            raise TransferError(f"the backup in {self.directory} is from another model "
                                f"({error}); delete it or choose another backup "
                                "folder") from None
        history = keras.callbacks.History()
        history.history = state["history"]
        history.epoch = state["epoch"]
        logger.info("resuming: the head phase finished earlier after %d epochs; its "
                    "weights are restored from %s", state["epochs"], self.directory)
        return history, state.get("feature_cache"), state.get("decided")

    def save_head(self, model: keras.Model, history: keras.callbacks.History,
                  feature_cache=None, decided=None):
        """Saves the head phase's result, so that a restart skips it.

        Args:
            model: The classifier, with the weights the head phase kept.
            history: The head phase's `History`.
            feature_cache: Its feature cache manifest, or `None`.
            decided: What the evidence decided before the head phase (a
                JSON-serialisable dict), so that a resumed run decides alike.
        """
        if not is_chief(model.distribute_strategy):
            return
        self._mark()
        weights = {f"w{i}": w for i, w in enumerate(model.get_weights())}
        _atomic.replace_file(self.directory / "head.npz",
                             lambda path: np.savez(path, **weights))
        epochs = history.epoch[-1] + 1 if history.epoch else 0
        state = json.dumps({"epochs": epochs, "epoch": history.epoch,
                            "history": history.history,
                            "feature_cache": feature_cache, "decided": decided},
                           default=float)
        _atomic.replace_file(self.directory / "head.json",
                             lambda path: path.write_text(state))
        shutil.rmtree(self.directory / "head", ignore_errors=True)

    def remove(self, model: keras.Model):
        """Deletes what the backups wrote, and the folder if that leaves it empty.

        Args:
            model: The classifier (only the chief deletes).
        """
        if not is_chief(model.distribute_strategy) or not self.directory.is_dir():
            return
        for name in self.WRITES:
            path = self.directory / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.release()
        try:
            self.directory.rmdir()
        except OSError:
            pass  # It holds something the backups did not write: the user's.

    def _mark(self):
        if (self.directory / MARKER).is_file():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        _atomic.replace_file(self.directory / MARKER, lambda path: path.write_text(
            json.dumps({"written_by": "tftransfer.fine_tune", "run": self.run},
                       default=str)))
