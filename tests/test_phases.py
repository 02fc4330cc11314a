"""`Phase` and the two phases' defaults."""

import dataclasses

import pytest

from tftransfer import phases
from tftransfer.phases import FINE_TUNE, HEAD, Phase


def test_head_and_fine_tune_start_from_the_defaults_and_change_only_what_is_given():
    assert Phase.head() == HEAD
    assert Phase.fine_tune() == FINE_TUNE
    changed = Phase.fine_tune(unfreeze=40, epochs=3)
    assert (changed.unfreeze, changed.epochs) == (40, 3)
    assert dataclasses.replace(changed, unfreeze=FINE_TUNE.unfreeze,
                               epochs=FINE_TUNE.epochs) == FINE_TUNE


def test_a_phase_cannot_be_changed_in_place():
    with pytest.raises(dataclasses.FrozenInstanceError):
        HEAD.epochs = 1


@pytest.mark.parametrize("unfreeze, epochs, trains", [
    ("none", 5, False), (None, 5, False), (0, 5, False),
    (3, 5, True), ("all", 5, True), ("auto", 5, True), ("block_16", 5, True),
    ("all", 0, False),
])
def test_trains_backbone(unfreeze, epochs, trains):
    assert Phase(epochs=epochs, learning_rate=1e-4, unfreeze=unfreeze).trains_backbone is trains


def test_the_defaults_train_the_head_alone_then_the_top_at_a_lower_rate_to_the_end():
    assert not HEAD.trains_backbone and HEAD.patience is not None
    assert FINE_TUNE.trains_backbone and FINE_TUNE.unfreeze == "auto"
    assert FINE_TUNE.learning_rate < HEAD.learning_rate
    assert FINE_TUNE.patience is None  # Runs every epoch; see FINE_TUNE's comment.


def test_training_uses_these_defaults():
    from tftransfer import training

    assert training.HEAD is phases.HEAD and training.FINE_TUNE is phases.FINE_TUNE
