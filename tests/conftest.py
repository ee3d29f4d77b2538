"""Fixtures shared by the tests of every package."""

from __future__ import annotations

from collections.abc import Callable

import pytest


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
