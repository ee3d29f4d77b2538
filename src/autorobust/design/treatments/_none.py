"""Treatment ``none``: the noisy pool as it is; the loss family alone handles the shift."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autorobust.design.treatments import NoiseTreatment

if TYPE_CHECKING:
    from autorobust.design.space import Design


class NoTreatment(NoiseTreatment):
    """No treatment: nothing added to the config, no parameter, no component."""

    name = "none"

    def components(self, design: Design) -> list[str]:
        return []

    def describe(self, design: Design) -> str | None:
        return None
