"""`Phase` and the two phases' defaults."""

import dataclasses

import pytest

from tftransfer.errors import TransferError
from tftransfer.training import phases
from tftransfer.training.phases import HEAD, TOP, Phase


def test_head_and_fine_tune_start_from_the_defaults_and_change_only_what_is_given():
    assert Phase.head() == HEAD
    assert Phase.top() == TOP
    changed = Phase.top(unfreeze=40, epochs=3)
    assert (changed.unfreeze, changed.epochs) == (40, 3)
    assert dataclasses.replace(changed, unfreeze=TOP.unfreeze,
                               epochs=TOP.epochs) == TOP


def test_a_phase_cannot_be_changed_in_place():
    with pytest.raises(dataclasses.FrozenInstanceError):
        HEAD.epochs = 1


@pytest.mark.parametrize("unfreeze, epochs, trains", [
    ("none", 5, False),
    (3, 5, True), ("all", 5, True), ("auto", 5, True), ("block_16", 5, True),
    ("all", 0, False),
])
def test_trains_backbone(unfreeze, epochs, trains):
    assert Phase(epochs=epochs, learning_rate=1e-4, unfreeze=unfreeze).trains_backbone is trains


@pytest.mark.parametrize("unfreeze", [None, 0, -1])
def test_no_unfreeze_is_spelled_none_alone(unfreeze):
    with pytest.raises(TransferError, match="pass 'none'"):
        Phase(epochs=5, learning_rate=1e-4, unfreeze=unfreeze)


def test_the_defaults_train_the_head_alone_then_the_top_at_a_lower_rate_to_the_end():
    assert not HEAD.trains_backbone and HEAD.patience is not None
    assert TOP.trains_backbone and TOP.unfreeze == "auto"
    assert TOP.learning_rate < HEAD.learning_rate
    assert TOP.patience is None  # Runs every epoch; see TOP's comment.


def test_training_uses_these_defaults():
    from tftransfer.training import fine_tuning as training

    assert training.HEAD is phases.HEAD and training.TOP is phases.TOP


def test_schedule_is_the_rate_itself_without_decay_or_a_known_length():
    assert HEAD.schedule(1e-3, 10) == 1e-3
    assert TOP.schedule(1e-4, None) == 1e-4


def test_cosine_schedule_warms_up_from_a_tenth_then_decays_to_zero():
    phase = Phase(epochs=4, learning_rate=1e-3, warmup_epochs=1, decay="cosine")
    schedule = phase.schedule(1e-3, 10)
    rates = [float(schedule(step)) for step in (0, 10, 25, 40)]
    assert rates[0] == pytest.approx(1e-4)
    assert rates[1] == pytest.approx(1e-3)
    assert 0 < rates[2] < 1e-3
    assert rates[3] == pytest.approx(0.0, abs=1e-9)
    no_warmup = dataclasses.replace(phase, warmup_epochs=0).schedule(1e-3, 10)
    assert float(no_warmup(0)) == pytest.approx(1e-3)


def test_an_unknown_decay_is_refused():
    with pytest.raises(phases.TransferError, match="unknown decay 'linear'"):
        Phase(epochs=2, learning_rate=1e-3, decay="linear").schedule(1e-3, 10)


class FakeHistory:
    def __init__(self, epoch, **history):
        self.epoch, self.history = epoch, history


def test_kept_epoch_is_the_best_with_patience_and_the_last_without():
    history = FakeHistory([0, 1, 2, 3], val_loss=[0.9, 0.5, float("nan"), 0.7],
                          val_accuracy=[0.5, 0.8, 0.1, 0.7])
    assert phases.kept_index(history, HEAD, "val_loss") == 1  # NaN counts as worst.
    assert phases.kept_epochs(history, HEAD, "val_loss") == 2
    assert phases.kept_epoch_logs(history, HEAD, "val_loss") == {"val_loss": 0.5,
                                                                 "val_accuracy": 0.8}
    assert phases.kept_index(history, TOP, "val_loss") == 3
    assert phases.kept_index(history, HEAD, "loss") is None
    assert phases.kept_epochs(history, HEAD, "loss") == 4

