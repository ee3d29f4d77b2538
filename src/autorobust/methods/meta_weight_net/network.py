"""Meta-Weight-Net: an MLP that maps what is known about a training sample to its weight in (0, 1).

Shu et al. (2019, "Meta-Weight-Net", Eq. 2) feed V only the sample's training loss through a
1-100-1 MLP with a sigmoid output. Paper 002 (NAS of MW-Net) searches V's depth, widths and which
intermediate layer of the classifier feeds it (pooled features, concatenated with the loss); CMW-Net
(Shu et al., 2023) makes V class-aware. All of these are one :class:`MetaWeightNetSpec`:

    input = "loss"            V(ℓ_i)                        the original MW-Net
            "features"        V(pool(h_l(x_i)))             an intermediate layer l, detached
            "loss+features"   V([ℓ_i, pool(h_l(x_i))])
    class_embedding = d > 0   concatenates a learned d-dim embedding of the observed label ỹ_i

A spec is plain data with a JSON round-trip, so a search can store the best V and a run can rebuild
it.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from autorobust.errors import ConfigError, UnknownNameError
from autorobust.methods.meta_weight_net.config import ReweightConfig

__all__ = ["ACTIVATIONS", "INPUTS", "PRESETS", "MetaWeightNet", "MetaWeightNetSpec"]

InputKind = Literal["loss", "features", "loss+features"]
INPUTS: tuple[str, ...] = ("loss", "features", "loss+features")
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}
MAX_HIDDEN_LAYERS = 4


@dataclass(frozen=True)
class MetaWeightNetSpec:
    """The architecture of a Meta-Weight-Net V (plain data; see the module docstring).

    Attributes:
        hidden: widths of the hidden layers, 0 to 4 of them (``()`` is logistic regression).
        activation: nonlinearity after each hidden layer, one of :data:`ACTIVATIONS`.
        input: ``"loss"``, ``"features"`` or ``"loss+features"``.
        feature_layer: the classifier's intermediate layer read when the input has features
            (a name from ``Classifier.intermediate_layers``); None otherwise.
        class_embedding: width of a learned embedding of the observed label; 0 = not class-aware.
    """

    hidden: tuple[int, ...] = (100,)
    activation: str = "relu"
    input: InputKind = "loss"
    feature_layer: str | None = None
    class_embedding: int = 0
    _where: str = field(default="MetaWeightNetSpec", repr=False, compare=False)

    def __post_init__(self) -> None:
        where = self._where
        hidden = tuple(self.hidden)
        if len(hidden) > MAX_HIDDEN_LAYERS:
            raise ConfigError(
                f"{where}: hidden must have at most {MAX_HIDDEN_LAYERS} layers, got {len(hidden)}"
            )
        for width in hidden:
            if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1:
                raise ConfigError(f"{where}: hidden widths must be integers >= 1, got {hidden}")
        object.__setattr__(self, "hidden", tuple(int(w) for w in hidden))
        if self.activation not in ACTIVATIONS:
            raise UnknownNameError(
                f"{where}: unknown activation {self.activation!r}; valid: {', '.join(ACTIVATIONS)}"
            )
        if self.input not in INPUTS:
            raise ConfigError(f"{where}: input must be one of {INPUTS}, got {self.input!r}")
        if self.uses_features and not self.feature_layer:
            raise ConfigError(f"{where}: input {self.input!r} needs feature_layer, got None")
        if not self.uses_features and self.feature_layer is not None:
            raise ConfigError(
                f"{where}: feature_layer is only used with feature inputs, got "
                f"{self.feature_layer!r} with input 'loss'"
            )
        embedding = self.class_embedding
        if (
            isinstance(embedding, bool)
            or not isinstance(embedding, numbers.Integral)
            or embedding < 0
        ):
            raise ConfigError(
                f"{where}: class_embedding must be an integer >= 0, got {embedding!r}"
            )

    @property
    def uses_loss(self) -> bool:
        return self.input in ("loss", "loss+features")

    @property
    def uses_features(self) -> bool:
        return self.input in ("features", "loss+features")

    def describe(self) -> str:
        """Short human-readable name, e.g. ``loss-100-1`` or ``loss+block3+cls8-64-32-1``."""
        parts = []
        if self.uses_loss:
            parts.append("loss")
        if self.uses_features:
            parts.append(str(self.feature_layer))
        if self.class_embedding:
            parts.append(f"cls{self.class_embedding}")
        return "-".join(["+".join(parts), *map(str, self.hidden), "1"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict; :meth:`from_dict` inverts it."""
        data = asdict(self)
        data.pop("_where")
        data["hidden"] = list(self.hidden)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "MetaWeightNetSpec") -> MetaWeightNetSpec:
        """Spec from :meth:`to_dict`'s output; unknown keys are a ConfigError naming ``where``."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
        known = {"hidden", "activation", "input", "feature_layer", "class_embedding"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; valid: {sorted(known)}")
        values = dict(data)
        if "hidden" in values:
            values["hidden"] = tuple(values["hidden"])
        return cls(**values, _where=where)

    @classmethod
    def from_config(cls, reweight: ReweightConfig) -> MetaWeightNetSpec:
        """The V that a ``reweight`` config section describes (errors name ``reweight``)."""
        return cls(
            hidden=tuple(reweight.hidden),
            activation=reweight.activation,
            input=reweight.input,
            feature_layer=reweight.feature_layer,
            class_embedding=reweight.class_embedding,
            _where="reweight",
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "MetaWeightNetSpec") -> MetaWeightNetSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        return cls.from_dict(data, where=where)

    @classmethod
    def preset(cls, name: str) -> MetaWeightNetSpec:
        """A named spec from :data:`PRESETS` (``"original"``: Shu et al.'s 1-100-1 on the loss)."""
        if name not in PRESETS:
            raise UnknownNameError(
                f"unknown MetaWeightNet preset {name!r}; valid: {', '.join(PRESETS)}"
            )
        return cls(**PRESETS[name])


PRESETS: dict[str, dict[str, Any]] = {
    "original": {"hidden": (100,), "activation": "relu", "input": "loss"},
    # CMW-Net's idea in this family's terms: the same loss curve, modulated by the class.
    "class_aware": {"hidden": (100,), "activation": "relu", "input": "loss", "class_embedding": 8},
}


class MetaWeightNet(nn.Module):
    """V(·; φ): per-sample inputs -> weights in (0, 1) (Shu et al. 2019, Eq. 2; paper 002).

    Args:
        spec: the architecture.
        feature_dim: width of the pooled intermediate features; required when the spec reads
            features.
        num_classes: K; required when ``spec.class_embedding > 0``.
    """

    def __init__(
        self,
        spec: MetaWeightNetSpec,
        *,
        feature_dim: int | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        features_in = 0
        if spec.uses_features:
            if feature_dim is None or feature_dim < 1:
                raise ConfigError(
                    f"MetaWeightNet: input {spec.input!r} needs feature_dim >= 1, "
                    f"got {feature_dim!r}"
                )
            features_in = feature_dim
        embedded_classes = 0
        if spec.class_embedding:
            if num_classes is None or num_classes < 2:
                raise ConfigError(
                    f"MetaWeightNet: class_embedding needs num_classes >= 2, got {num_classes!r}"
                )
            embedded_classes = num_classes
        self.spec = spec
        self.feature_dim = feature_dim if spec.uses_features else None
        self.num_classes = num_classes
        in_dim = int(spec.uses_loss) + features_in
        self.embedding = (
            nn.Embedding(embedded_classes, spec.class_embedding) if spec.class_embedding else None
        )
        in_dim += spec.class_embedding
        layers: list[nn.Module] = []
        for width in spec.hidden:
            layers += [nn.Linear(in_dim, width), ACTIVATIONS[spec.activation]()]
            in_dim = width
        layers.append(nn.Linear(in_dim, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(
        self,
        loss: Tensor | None = None,
        features: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> Tensor:
        """Weights v float (B,) in (0, 1).

        Args:
            loss: per-sample training losses float (B,) (detached by the caller), if used.
            features: pooled intermediate features float (B, feature_dim) (detached), if used.
            labels: observed labels int64 (B,), if class-aware.
        """
        parts = []
        if self.spec.uses_loss:
            if loss is None:
                raise ValueError("MetaWeightNet: this spec reads the loss; pass loss=")
            parts.append(loss.reshape(-1, 1))
        if self.spec.uses_features:
            if features is None:
                raise ValueError("MetaWeightNet: this spec reads features; pass features=")
            parts.append(features)
        if self.embedding is not None:
            if labels is None:
                raise ValueError("MetaWeightNet: a class-aware spec needs labels=")
            parts.append(self.embedding(labels))
        first = cast(nn.Linear, self.mlp[0])  # the MLP starts with a Linear (__init__)
        x = torch.cat([p.to(first.weight.dtype) for p in parts], dim=1)
        return torch.sigmoid(self.mlp(x)).squeeze(1)
