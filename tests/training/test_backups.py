import json

import keras
import numpy as np
import pytest

import tftransfer
from tftransfer import _atomic
from tftransfer.errors import TransferError
from tftransfer.training import backups

from conftest import tiny_dense_dataset, tiny_dense_model


def test_epoch_backup_restores_weights_and_optimizer(tmp_path):
    data = tiny_dense_dataset()
    model = tiny_dense_model()
    backup = backups.EpochBackup(tmp_path / "phase")
    assert backup.restore(model) == 0
    model.fit(data, epochs=2, callbacks=[backup], verbose=0)
    assert json.loads((tmp_path / "phase" / "latest.json").read_text())["epoch"] == 2
    assert [p.name for p in (tmp_path / "phase").glob("*.h5")] == ["epoch-2.weights.h5"]

    fresh = tiny_dense_model()
    assert backups.EpochBackup(tmp_path / "phase").restore(fresh) == 2
    for a, b in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(fresh.optimizer.iterations) == int(model.optimizer.iterations) == 6

    other = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    other.compile("adam", "mse")
    with pytest.raises(TransferError, match="does not fit this model"):
        backups.EpochBackup(tmp_path / "phase").restore(other)


class Crash(keras.callbacks.Callback):
    """Raises as a given epoch begins, as a preempted machine would stop."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"crash at epoch {epoch}")


@pytest.mark.parametrize("crash_at, resumed_phase", [(1, "head"), (4, "top")])
def test_fine_tune_resumes_in_the_right_phase(tiny_base, image_folder_path, tmp_path,
                                              caplog, crash_at, resumed_phase):
    data = tftransfer.image_folder(image_folder_path, (32, 32), batch_size=8)
    backup_dir = tmp_path / "backup"
    options = dict(head=tftransfer.Phase.head(epochs=3, patience=100),
                   top=tftransfer.Phase.top(epochs=3, unfreeze=3, patience=100),
                   options=tftransfer.RunOptions(backup_dir=backup_dir), verbose=0)

    keras.utils.set_random_seed(0)
    model = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    with pytest.raises(KeyboardInterrupt):
        tftransfer.fine_tune(model, data.train, data.validation,
                             callbacks=[Crash(crash_at)], **options)
    assert (backup_dir / resumed_phase / "latest.json").is_file()
    assert (backup_dir / "head.json").is_file() == (resumed_phase == "top")

    keras.utils.set_random_seed(0)
    restarted = tftransfer.build_classifier(tiny_base, 3, augmentation=None)
    with caplog.at_level("INFO", logger="tftransfer"):
        history = tftransfer.fine_tune(restarted, data.train, data.validation, **options)
    assert f"resuming the {resumed_phase} phase after epoch {crash_at}" in caplog.text
    if resumed_phase == "head":
        assert history.head.epoch == [1, 2]
    else:
        assert "the head phase finished earlier after 3 epochs" in caplog.text
        assert history.head.epoch == [0, 1, 2]
    assert history.top.epoch[-1] == 5
    assert not backup_dir.exists()  # Removed once training ended.


def test_a_backup_folder_keeps_what_the_backups_did_not_write(tiny_base, image_folder_path,
                                                              tmp_path):
    data = tftransfer.image_folder(image_folder_path, (32, 32), batch_size=8)
    backup_dir = tmp_path / "checkpoints"
    run = lambda: tftransfer.fine_tune(  # noqa: E731
        tftransfer.build_classifier(tiny_base, 3, augmentation=None), data.train,
        data.validation, head=tftransfer.Phase.head(epochs=1),
        top=tftransfer.Phase.top(epochs=1, unfreeze=3),
        options=tftransfer.RunOptions(backup_dir=backup_dir), verbose=0)
    backups.PhaseBackups(backup_dir).for_phase("head")  # A marked, empty backup folder.
    (backup_dir / "notes.txt").write_text("mine")  # Written after the mark: the user's.
    run()
    assert [p.name for p in backup_dir.iterdir()] == ["notes.txt"]
    assert (backup_dir / "notes.txt").read_text() == "mine"


def test_a_folder_whose_mark_is_being_written_is_a_backup_folder(tmp_path):
    # What a worker sees while the chief of a multi-worker run writes the mark.
    staging = _atomic.partial_path(tmp_path / backups.MARKER)
    staging.write_text("{")
    backups.PhaseBackups(tmp_path, run={"train": "key"})
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TransferError, match="not a tftransfer backup folder"):
        backups.PhaseBackups(tmp_path, run={"train": "key"})


def test_a_folder_of_other_files_is_refused_as_a_backup_folder(tiny_base, image_folder_path,
                                                               tmp_path):
    data = tftransfer.image_folder(image_folder_path, (32, 32), batch_size=8)
    (tmp_path / "model.keras").write_text("precious")
    with pytest.raises(TransferError, match="not a tftransfer backup folder"):
        tftransfer.fine_tune(
            tftransfer.build_classifier(tiny_base, 3, augmentation=None), data.train,
            head=tftransfer.Phase.head(epochs=1), top=tftransfer.Phase.top(epochs=0),
            options=tftransfer.RunOptions(backup_dir=tmp_path), verbose=0)
    assert (tmp_path / "model.keras").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    backups.PhaseBackups(empty)  # An empty folder is fine.




def test_backups_of_another_run_are_refused_not_resumed(tiny_base, image_folder_path,
                                                        tmp_path):
    data = tftransfer.image_folder(image_folder_path, (32, 32), batch_size=8)
    backup_dir = tmp_path / "backup"
    run = lambda top_epochs, **kwargs: tftransfer.fine_tune(  # noqa: E731
        tftransfer.build_classifier(tiny_base, 3, augmentation=None), data.train,
        data.validation, head=tftransfer.Phase.head(epochs=3, patience=100),
        top=tftransfer.Phase.top(epochs=top_epochs, unfreeze=3),
        options=tftransfer.RunOptions(backup_dir=backup_dir), verbose=0, **kwargs)
    with pytest.raises(KeyboardInterrupt):
        run(3, callbacks=[Crash(1)])
    with pytest.raises(TransferError, match=r"of another run \(it differs in: top\)"):
        run(5)
    other = tftransfer.image_folder(image_folder_path, (32, 32), batch_size=8, seed=7)
    with pytest.raises(TransferError, match="it differs in: train, validation"):
        tftransfer.fine_tune(
            tftransfer.build_classifier(tiny_base, 3, augmentation=None), other.train,
            other.validation, head=tftransfer.Phase.head(epochs=3, patience=100),
            top=tftransfer.Phase.top(epochs=3, unfreeze=3),
            options=tftransfer.RunOptions(backup_dir=backup_dir), verbose=0)
    assert (backup_dir / "head" / "latest.json").is_file()  # Left for the run it belongs to.


def test_a_backup_folder_in_use_by_another_training_is_refused(tiny_base, image_folder_path,
                                                               tmp_path):
    data = tftransfer.image_folder(image_folder_path, (32, 32), batch_size=8)
    backup_dir = tmp_path / "backup"
    run = lambda: tftransfer.fine_tune(  # noqa: E731
        tftransfer.build_classifier(tiny_base, 3, augmentation=None), data.train,
        data.validation, head=tftransfer.Phase.head(epochs=1),
        top=tftransfer.Phase.top(epochs=0),
        options=tftransfer.RunOptions(backup_dir=backup_dir), verbose=0)
    other = backups.PhaseBackups(backup_dir)
    other.hold()  # As another training's process holds it.
    with pytest.raises(TransferError, match="in use by another training"):
        run()
    other.release()
    run()
    assert not backup_dir.exists()  # Done: the backups, the lock file and the folder go.
