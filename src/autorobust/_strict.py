"""The base of every config section: frozen, and unknown keys are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """A frozen pydantic model that rejects unknown keys (``extra="forbid"``) and infinite or NaN
    floats (``allow_inf_nan=False``): no setting of a run means anything at infinity, and a NaN
    passes every range check unnoticed (``--set train.lr=inf`` would otherwise be valid)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
