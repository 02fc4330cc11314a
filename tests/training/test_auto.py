import numpy as np
import pytest

import tftransfer
from tftransfer.training import auto


@pytest.mark.parametrize("per_class, views", [(1, 8), (6, 8), (8, 6), (11, 5), (12, 0),
                                              (16, 0), (30, 0), (500, 0)])
def test_auto_views_give_about_view_rows_rows_to_the_smallest_class(per_class, views):
    assert auto.auto_views(per_class) == views


@pytest.mark.parametrize("smallest, fine_tune, refit", [
    (8, tftransfer.Phase.top(), True),  # "auto" skips phase 2 below 30 ...
    (20, tftransfer.Phase.top(), True),  # ... and refits the head instead.
    (8, tftransfer.Phase.top(epochs=0), True),
    (8, tftransfer.Phase.top(unfreeze=2), False),  # Phase 2 is the last phase.
    (40, tftransfer.Phase.top(), False),
    (20, tftransfer.Phase.top(epochs=0), True),
    (40, tftransfer.Phase.top(epochs=0), False),
])
def test_refit_auto_when_the_head_is_the_last_phase_on_small_data(tiny_base, smallest,
                                                                  fine_tune, refit):
    model = tftransfer.build_classifier(tiny_base, 3)
    counts = np.array([smallest, smallest + 5, 50])
    _, _, resolved = auto.resolve(model, counts, fine_tune, "auto", "auto")
    assert resolved is refit


def test_resolve_leaves_explicit_settings_alone(tiny_base):
    model = tftransfer.build_classifier(tiny_base, 3)
    phase = tftransfer.Phase.top(unfreeze=3)
    assert auto.resolve(model, None, phase, 2, False) == (phase, 2, False)
