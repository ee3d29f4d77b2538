"""Fixtures shared by the tests of every package."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

# `train.threads: auto` divides the cores among the autorobust processes training on this machine,
# so a run's thread count (and the last bits of its floats) would depend on what else runs beside
# the suite: a test comparing two runs could then fail. OMP_NUM_THREADS is what `auto` takes as the
# user's explicit choice; set before torch is imported and inherited by the subprocesses tests
# start. A value given by whoever runs the suite is kept (it is fixed for the whole run too).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def stop_after() -> Callable[[int], Callable]:
    """``stop_after(n)``: an epoch callback that raises KeyboardInterrupt once ``n`` epochs are
    done, as Ctrl-C would."""

    def make(epochs: int) -> Callable:
        def callback(record) -> None:
            if record.epoch + 1 == epochs:
                raise KeyboardInterrupt

        return callback

    return make
