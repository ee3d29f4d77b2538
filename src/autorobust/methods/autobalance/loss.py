"""AutoBalance's parametric cross-entropy (Li et al., NeurIPS 2021).

    ℓ(z, y) = −ω_y · log softmax(Δ ⊙ z + ι)_y,

or, with a fixed noise ``transition`` T (T_ij = P(observed j | true i)), forward
correction (Patrini et al., CVPR 2017) composed with the same scale, offset and weight:

    ℓ(z, ỹ) = −ω_ỹ · log (Tᵀ softmax(Δ ⊙ z + ι))_ỹ,

with per-class (or per-group-of-classes) multiplicative logit scales Δ > 0, additive offsets ι and
loss weights ω > 0. Special points (tested): CE (Δ = 1, ι = 0, ω = 1), weighted CE (ω), logit
adjustment (ι = τ log π), CDT (Δ_c = (n_c / n_max)^γ) and the VS loss (both). LDAM's margin on the
target logit only is not a member; offsets give LDAM-like margins between classes.

Positivity is by parameterisation: Δ = exp(d) (default: d = 0 is CE) or Δ = sigmoid(d) (the
authors' code); ω = exp(u). The raw parameters d, ι, u are ``nn.Parameter`` so the bilevel trainer
can differentiate through them; ``autorobust train`` uses the loss with fixed values given as
options (``scale``, ``offset``, ``weight`` per class) or a ``params_file`` written by the search.
T is a buffer, never learned; it arrives as an option (this package does not import the noise
model's), and ``prior_counts`` (e.g. estimated clean counts) set the logit-adjustment start
ι = τ log π̂, so that AutoBalance can start from forward correction + logit adjustment at the
estimated clean prior.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autorobust.errors import ConfigError
from autorobust.losses.base import ClassificationLoss, _check_counts, _check_float, _check_inputs
from autorobust.losses.forward_correction import check_transition_option, forward_corrected_nll
from autorobust.losses.registry import register_loss

__all__ = ["ParametricLoss", "class_to_group"]

_NAME = "parametric"
_PARAMETERISATIONS = ("exp", "sigmoid")
_INITS = ("ce", "logit_adjustment")


def _error(message: str) -> ConfigError:
    return ConfigError(f"loss {_NAME!r}: {message}")


def class_to_group(
    num_classes: int, *, group_size: int | None = None, class_groups: Sequence[int] | None = None
) -> np.ndarray:
    """Map class -> parameter slot, int64 (K,) with values 0..P−1 (every slot used).

    ``group_size`` puts consecutive classes (in label order) in one slot; ``class_groups`` is an
    explicit map (renumbered densely in order of first use); neither: one slot per class.
    """
    if group_size is not None and class_groups is not None:
        raise _error("group_size and class_groups exclude each other; give one")
    if class_groups is not None:
        groups = np.asarray(class_groups)
        if groups.shape != (num_classes,) or groups.dtype.kind not in "iu" or groups.min() < 0:
            raise _error(
                f"class_groups must be {num_classes} integers >= 0 (one per class), "
                f"got {list(class_groups)}"
            )
        _, dense = np.unique(groups, return_inverse=True)
        return dense.astype(np.int64)
    if group_size is not None:
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise _error(f"group_size must be an integer >= 1, got {group_size!r}")
        return (np.arange(num_classes) // group_size).astype(np.int64)
    return np.arange(num_classes, dtype=np.int64)


@register_loss(_NAME)
class ParametricLoss(ClassificationLoss):
    """ℓ(z, y, a) = −ω_{a,y} · log softmax(Δ_a ⊙ z + ι_a)_y, or with ``transition`` T
    −ω_{a,y} · log (Tᵀ softmax(Δ_a ⊙ z + ι_a))_y (see the module docstring).

    ``a`` is the sample's group attribute in group-sensitive mode (``num_attributes`` > 1; the
    parameters then have shape (A, P)), otherwise there is one row (A = 1).

    Hyper-parameters (per-class values are lists of length P, the number of parameter slots, or
    nested lists (A, P) in group-sensitive mode; a scalar is broadcast):
        scale: Δ > 0 (Δ < 1 with ``sigmoid``); default from ``init``/``cdt_gamma``.
        offset: ι; default 0 (``init: ce``) or τ·log π (``init: logit_adjustment``), π from
            ``prior_counts`` if given, else from the class counts.
        weight: ω > 0; default 1.
        params_file: JSON with any of ``scale``/``offset``/``weight`` (e.g. the search's
            ``learned_loss.json``) and optionally ``transition``; explicit options override it.
        init: "ce" or "logit_adjustment"; tau: τ >= 0 of the latter (default 1).
        cdt_gamma: γ >= 0; Δ_c = (n_c / n_max)^γ when ``scale`` is not given (0: Δ = 1).
        scale_parameterisation: "exp" (Δ = exp(d)) or "sigmoid" (Δ = sigmoid(d), the authors').
        group_size / class_groups: classes sharing a parameter slot (see :func:`class_to_group`).
        num_attributes: A, values of the group attribute (1: not group-sensitive).
        transition: fixed K x K noise transition matrix T (rows sum to 1; a column of an
            observed label must not be all 0); None: no noise correction.
        prior_counts: K counts > 0 whose proportions are π in the logit-adjustment start (e.g.
            the estimated clean counts); only with ``init: logit_adjustment``.
    """

    uses_class_counts: ClassVar[bool] = True
    search_space: ClassVar[dict[str, tuple[float, float, str]]] = {}
    # buffers (registered in __init__; log_transition only with a transition), typed for mypy
    slot_of_class: Tensor
    log_transition: Tensor

    def __init__(
        self,
        *,
        class_counts: Sequence[int] | np.ndarray | None,
        scale: float | Sequence[Any] | None = None,
        offset: float | Sequence[Any] | None = None,
        weight: float | Sequence[Any] | None = None,
        params_file: str | None = None,
        init: str = "ce",
        tau: float = 1.0,
        cdt_gamma: float = 0.0,
        scale_parameterisation: str = "exp",
        group_size: int | None = None,
        class_groups: Sequence[int] | None = None,
        num_attributes: int = 1,
        transition: Sequence[Sequence[float]] | None = None,
        prior_counts: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        counts = _check_counts(class_counts, _NAME, positive=True)
        if init not in _INITS:
            raise _error(f"init must be one of {', '.join(_INITS)}, got {init!r}")
        if scale_parameterisation not in _PARAMETERISATIONS:
            raise _error(
                f"scale_parameterisation must be one of {', '.join(_PARAMETERISATIONS)}, "
                f"got {scale_parameterisation!r}"
            )
        if (
            isinstance(num_attributes, bool)
            or not isinstance(num_attributes, int)
            or (num_attributes < 1)
        ):
            raise _error(f"num_attributes must be an integer >= 1, got {num_attributes!r}")
        self.scale, self.offset, self.weight = scale, offset, weight
        self.params_file = params_file
        self.init = init
        self.tau = _check_float(tau, "tau", _NAME, low=0.0)
        self.cdt_gamma = _check_float(cdt_gamma, "cdt_gamma", _NAME, low=0.0)
        self.scale_parameterisation = scale_parameterisation
        self.group_size = group_size
        self.class_groups = None if class_groups is None else list(class_groups)
        self.num_attributes = num_attributes
        self.num_classes = len(counts)
        slots = class_to_group(self.num_classes, group_size=group_size, class_groups=class_groups)
        self.num_slots = int(slots.max()) + 1
        self.register_buffer("slot_of_class", torch.as_tensor(slots))

        from_file = _read_params_file(params_file) if params_file is not None else {}
        scale = from_file.get("scale") if scale is None else scale
        offset = from_file.get("offset") if offset is None else offset
        weight = from_file.get("weight") if weight is None else weight
        transition = from_file.get("transition") if transition is None else transition
        self.transition = None if transition is None else np.asarray(transition).tolist()
        self.prior_counts = None if prior_counts is None else list(prior_counts)
        if transition is not None:
            matrix = check_transition_option(
                transition, self.num_classes, loss=_NAME, observed_counts=counts
            )
            with np.errstate(divide="ignore"):
                log_transition = np.log(matrix)
            # Only registered when given, so a loss without it keeps its state_dict (and
            # checkpoints) unchanged; functional_call takes it from the module.
            self.register_buffer(
                "log_transition", torch.as_tensor(log_transition, dtype=torch.float32)
            )

        prior = counts.astype(np.float64) / counts.sum()
        if prior_counts is not None:
            if init != "logit_adjustment":
                raise _error(f"prior_counts only sets the logit-adjustment start; init is {init!r}")
            given = np.asarray(prior_counts, dtype=np.float64)
            if given.shape != (self.num_classes,) or not (np.isfinite(given) & (given > 0)).all():
                raise _error(
                    f"prior_counts must be {self.num_classes} finite numbers > 0, got "
                    f"{self.prior_counts}"
                )
            prior = given / given.sum()
        default_offset = self.tau * np.log(prior) if init == "logit_adjustment" else 0 * prior
        default_scale = np.power(counts / counts.max(), self.cdt_gamma)
        if self.cdt_gamma == 0.0 and scale_parameterisation == "sigmoid":
            default_scale = np.full(self.num_classes, 1.0 / (1.0 + math.exp(-1.0)))  # d = 1
        scale_values = self._values("scale", scale, default_scale)
        offset_values = self._values("offset", offset, default_offset)
        weight_values = self._values("weight", weight, np.ones(self.num_classes))
        if (scale_values <= 0).any() or (weight_values <= 0).any():
            raise _error(f"scale and weight must be > 0, got scale {scale_values.tolist()}")
        if scale_parameterisation == "sigmoid" and (scale_values >= 1).any():
            raise _error(f"scale must be < 1 with sigmoid, got {scale_values.tolist()}")
        if scale_parameterisation == "exp":
            raw_scale = np.log(scale_values)
        else:
            raw_scale = np.log(scale_values) - np.log1p(-scale_values)
        self.raw_scale = nn.Parameter(torch.as_tensor(raw_scale, dtype=torch.float32))
        self.raw_offset = nn.Parameter(torch.as_tensor(offset_values, dtype=torch.float32))
        self.raw_weight = nn.Parameter(torch.as_tensor(np.log(weight_values), dtype=torch.float32))

    def _values(self, name: str, given: Any, default_per_class: np.ndarray) -> np.ndarray:
        """float64 (A, P) from a scalar, a (P,) list, an (A, P) list or the per-class default."""
        shape = (self.num_attributes, self.num_slots)
        if given is None:
            # A slot takes the mean default of its classes (the classes of a group share it).
            slots = self.slot_of_class.numpy()
            per_slot = np.bincount(slots, weights=default_per_class) / np.bincount(slots)
            return np.broadcast_to(per_slot, shape).copy()
        try:
            values = np.asarray(given, dtype=np.float64)
        except (TypeError, ValueError):
            raise _error(f"{name} must be a number or a list of numbers, got {given!r}") from None
        if values.ndim == 1 and values.shape[0] == self.num_slots:
            values = np.broadcast_to(values, shape)
        elif values.ndim == 0:
            values = np.full(shape, float(values))
        if values.shape != shape or not np.isfinite(values).all():
            raise _error(
                f"{name} must be a number, {self.num_slots} finite values (one per parameter "
                f"slot) or a {shape[0]}x{shape[1]} nested list, got shape {values.shape}"
            )
        return values.copy()

    @property
    def uses_groups(self) -> bool:
        """Whether ``per_sample`` needs each sample's group attribute (group-sensitive mode)."""
        return self.num_attributes > 1

    # -- the parameters as values --------------------------------------------------------------

    def scales(self) -> Tensor:
        """Δ float (A, K) > 0, differentiable in the raw parameters."""
        raw = self.raw_scale[:, self.slot_of_class]
        return torch.exp(raw) if self.scale_parameterisation == "exp" else torch.sigmoid(raw)

    def offsets(self) -> Tensor:
        """ι float (A, K)."""
        return self.raw_offset[:, self.slot_of_class]

    def weights(self) -> Tensor:
        """ω float (A, K) > 0."""
        return torch.exp(self.raw_weight[:, self.slot_of_class])

    def class_parameters(self) -> dict[str, Any]:
        """Per-class Δ, ι, ω as plain lists: (K,) each, or (A, K) in group-sensitive mode.

        The result is valid ``options`` for this loss on its own: in group-sensitive mode it also
        holds ``num_attributes``, and with a noise correction the fixed ``transition`` (K x K).
        """
        out: dict[str, Any] = {}
        if self.num_attributes > 1:
            out["num_attributes"] = self.num_attributes
        if self.transition is not None:
            out["transition"] = self.transition
        for key, tensor in (
            ("scale", self.scales()),
            ("offset", self.offsets()),
            ("weight", self.weights()),
        ):
            values = tensor.detach().cpu().double().numpy()
            out[key] = (values[0] if self.num_attributes == 1 else values).tolist()
        return out

    # -- the loss ------------------------------------------------------------------------------

    def adjusted_logits(self, logits: Tensor, groups: Tensor | None = None) -> Tensor:
        """Δ_a ⊙ z + ι_a, float (B, K), for logits (B, K) and optional attributes int64 (B,)."""
        row = self._rows(logits, groups)
        return self.scales().to(logits)[row] * logits + self.offsets().to(logits)[row]

    def per_sample(self, logits: Tensor, target: Tensor, groups: Tensor | None = None) -> Tensor:
        """ω_{a,y}·CE(Δ_a ⊙ z + ι_a, y), or with T ω_{a,y}·(−log (Tᵀ softmax(Δ_a ⊙ z + ι_a))_y),
        float (B,), for logits (B, K), labels and attributes (B,)."""
        _check_inputs(logits, target, self.num_classes)
        row = self._rows(logits, groups)
        adjusted = self.adjusted_logits(logits, groups)
        if self.transition is None:
            nll = F.cross_entropy(adjusted, target, reduction="none")
        else:
            nll = forward_corrected_nll(adjusted, target, self.log_transition.to(logits))
        return self.weights().to(logits)[row, target] * nll

    def forward(self, logits: Tensor, target: Tensor, groups: Tensor | None = None) -> Tensor:
        """Batch mean of :meth:`per_sample`."""
        return self.per_sample(logits, target, groups).mean()

    def _rows(self, logits: Tensor, groups: Tensor | None) -> Tensor:
        if groups is None:
            if self.num_attributes > 1:
                raise ValueError("group-sensitive parametric loss needs the group attributes")
            return torch.zeros(len(logits), dtype=torch.int64, device=logits.device)
        return groups.to(device=logits.device, dtype=torch.int64)

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's options; per-class values are the current (possibly learned) ones."""
        values = super().hyperparameters()
        values.update(self.class_parameters())
        return values


def _read_params_file(path: str) -> dict[str, Any]:
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _error(f"params_file {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _error(f"params_file {path}: not a JSON file") from None
    # The search writes {"options": {...}, ...}; a bare {"scale": ...} mapping works too.
    data = data.get("options", data) if isinstance(data, dict) else data
    if not isinstance(data, dict) or not set(data) & {"scale", "offset", "weight"}:
        raise _error(f"params_file {path}: expected a mapping with scale/offset/weight lists")
    return {key: data[key] for key in ("scale", "offset", "weight", "transition") if key in data}
