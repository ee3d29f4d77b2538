"""Typed, validated run configuration (pydantic v2) and its YAML loading.

A config is a tree of frozen models with ``extra="forbid"``: a wrong type, an unknown key or an
impossible value is reported with the field's dotted path before any work starts. YAML parsing and
``--set a.b=value`` overrides live here and in the CLI only; library code receives these objects.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from autorobust._strict import StrictModel
from autorobust._validation import check_row_stochastic

# Each method's config section lives with the method (``autorobust/methods/<name>/config.py``),
# the design's with the design (``autorobust/design/config.py``); these modules are leaves that
# import only pydantic and StrictModel (an import contract checks it), so the config can compose
# them without depending on the methods themselves.
from autorobust.design.config import DesignConfig
from autorobust.errors import ConfigError
from autorobust.methods.autobalance.config import BilevelConfig
from autorobust.methods.csnas.config import ArchitectureConfig
from autorobust.methods.meta_weight_net.config import ReweightConfig
from autorobust.methods.sample_selection.config import PseudoLabelConfig

__all__ = [
    "ArchitectureConfig",
    "AugmentConfig",
    "BilevelConfig",
    "DataConfig",
    "DesignConfig",
    "ExperimentConfig",
    "LossConfig",
    "ModelConfig",
    "PseudoLabelConfig",
    "ReweightConfig",
    "SearchConfig",
    "ShiftConfig",
    "StrictModel",
    "TrainConfig",
    "apply_overrides",
    "bundled_configs",
    "check_search_setting",
    "load_config",
    "resolve_config_path",
    "validate_config",
]


def _finite_options(options: dict[str, Any]) -> dict[str, Any]:
    """Refuse an infinite or NaN number anywhere in a free-form ``options`` mapping (the typed
    fields refuse them through ``allow_inf_nan=False``; these are checked by their consumers only
    when the run starts)."""

    def check(value: Any, key: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {value}")
        if isinstance(value, dict):
            for name, item in value.items():
                check(item, f"{key}.{name}")
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                check(item, f"{key}[{index}]")

    for name, value in options.items():
        check(value, str(name))
    return options


class DataConfig(StrictModel):
    """Which source to read and how to split it (docs/data.md, "Splits and shift")."""

    source: str = "digits"
    """The data source: ``digits`` (scikit-learn's bundled 8x8 digits), ``fashion-mnist``,
    ``mnist``, ``cifar10``, ``cifar100``, ``image-folder`` or ``npz`` (README, "Data";
    ``autorobust datasets`` lists them and whether their files are present)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Keyword options of the source, e.g. ``root`` or ``image_size``."""
    meta_per_class: int = Field(10, ge=1)
    """Clean, class-balanced images per class drawn before the shift: MW-Net's meta set."""
    unlabeled_fraction: float = Field(0.1, gt=0.0, le=1.0)
    """Fraction of the training pool, class-balanced, exposed without labels."""
    relabel_file: str | None = None
    """An ``.npz`` relabel file (``autorobust.data.relabel``; a sample-selection method writes
    it) that replaces the shifted pool's observed labels: ``labels`` int64 (N,) in pool order, -1
    = dropped (the sample leaves the pool); ``source_index`` (N,), which must equal the pool's (a
    file made for another config or seed is refused); optional ``weights`` float (N,) in [0, 1]
    (the loss becomes sum(w * loss) / sum(w) over a batch). Relative paths are taken from the
    working directory. The file's content is part of the checkpoint fingerprint. None: the
    observed labels."""

    _options_finite = field_validator("options")(_finite_options)


class ShiftConfig(StrictModel):
    """Simulated distribution shift of the training pool: imbalance first, then label noise."""

    imbalance: Literal["none", "long_tail", "step"] = "none"
    """The class profile of the training pool: ``long_tail`` n_c = floor(n_max rho^(-c/(K-1)));
    ``step``: the last ceil(K mu) classes get floor(n_max / rho), the others n_max; ``none``:
    every class keeps n_max (all it has when ``n_max`` is null)."""
    rho: float = Field(1.0, ge=1.0)
    """Imbalance ratio n_max / n_min."""
    mu: float = Field(0.5, gt=0.0, lt=1.0)
    """Step imbalance: fraction of minority classes."""
    n_max: int | None = Field(None, ge=1)
    """Size of the largest class; default: the smallest class size available."""
    noise: Literal["none", "symmetric", "pair", "matrix"] = "none"
    """Label noise applied after the imbalance: ``symmetric`` (a wrong label drawn uniformly from
    the other K - 1 classes, or from all K with ``include_true_class``), ``pair`` (a flipped label
    of class c is c + 1 mod K), ``matrix`` (each clean class's labels drawn from its row of
    ``noise_matrix``) or ``none``."""
    noise_rate: float = Field(0.0, ge=0.0, lt=1.0)
    """Fraction of each class's training labels that ``symmetric`` or ``pair`` noise flips
    (exactly, within one sample per class; ``pair`` needs < 0.5); they need a rate > 0."""
    noise_matrix: list[list[float]] | None = None
    """Noise ``matrix``: K x K, row c the distribution of the observed label of clean class c
    (non-negative, each row summing to 1); K must be the data source's number of classes."""
    include_true_class: bool = False
    """Symmetric noise drawn from all K classes, as MW-Net's code does (real rate p(K-1)/K)."""

    @field_validator("noise_matrix")
    @classmethod
    def _row_stochastic(cls, value: list[list[float]] | None) -> list[list[float]] | None:
        # autorobust._validation.check_row_stochastic, the check of every transition matrix
        # (the same one autorobust.data.shift applies), here so that a bad matrix is refused
        # with its field before any data are read.
        if value is not None:
            check_row_stochastic(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ShiftConfig:
        if self.noise == "matrix" and self.noise_matrix is None:
            raise ValueError("noise 'matrix' needs noise_matrix (a K x K row-stochastic list)")
        if self.noise != "matrix" and self.noise_matrix is not None:
            raise ValueError(f"noise_matrix is only used with noise 'matrix', not {self.noise!r}")
        if self.noise in ("symmetric", "pair") and self.noise_rate == 0.0:
            raise ValueError(f"noise {self.noise!r} needs noise_rate > 0 (or noise 'none')")
        if self.imbalance == "none" and self.rho != 1.0:
            raise ValueError(
                f"rho={self.rho:g} has no effect with imbalance 'none'; set shift.rho to 1 or "
                "shift.imbalance to long_tail or step"
            )
        if self.noise == "none" and self.noise_rate != 0.0:
            raise ValueError(
                f"noise_rate={self.noise_rate:g} has no effect with noise 'none'; set "
                "shift.noise_rate to 0 or shift.noise to symmetric or pair"
            )
        return self


class ModelConfig(StrictModel):
    """The classifier, by its name in the model registry, and its options."""

    name: str = "small_cnn"
    """The classifier: ``small_cnn``, ``resnet20``, ``resnet32`` or ``darts`` (a CSNAS cell;
    ``method: darts``), or one a plugin registers (``autorobust.list_models()``)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Keyword options of the model, e.g. ``width`` of ``small_cnn``, ``genotype``, ``layers``
    and ``channels`` of ``darts``; an unknown option is refused with the accepted ones."""

    _options_finite = field_validator("options")(_finite_options)


class LossConfig(StrictModel):
    """The training loss, by its name in the loss registry, and its hyper-parameters."""

    name: str = "cross_entropy"
    """The training loss: ``cross_entropy``, ``focal``, ``class_balanced``, ``logit_adjustment``,
    ``ldam``, ``balanced_softmax``, ``generalized_ce``, ``parametric`` (AutoBalance's learned
    loss) or ``forward_corrected`` (GLC), or one a plugin registers
    (``autorobust.list_losses()``)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Hyper-parameters of the loss, e.g. ``tau`` of ``logit_adjustment`` or ``gamma`` of
    ``focal``; an unknown one is refused with the accepted ones. Prior-based losses take the
    class counts from the training pool."""

    _options_finite = field_validator("options")(_finite_options)


class AugmentConfig(StrictModel):
    """Batched augmentation of training images (see :mod:`autorobust.data.augment`)."""

    crop_padding: int = Field(0, ge=0)
    """Random crop: pad every side with this many zero pixels, then crop back to the image size
    (a shift of up to this many pixels each way); 0: off."""
    hflip: bool = False
    """Flip horizontally with probability 0.5 (leave it off for digits, which a mirror changes)."""
    grayscale_p: float = Field(0.0, ge=0.0, le=1.0)
    """Probability of turning an RGB image grayscale."""
    jitter: float = Field(0.0, ge=0.0, lt=1.0)
    """Strength of the random brightness, contrast and saturation changes; 0: off."""
    cutout: int = Field(0, ge=0)
    """Side in pixels of a random square set to black (cutout); 0: off."""
    class_strength: list[float] | None = None
    """Per-class probability in [0, 1] that a training sample of that class is augmented at all
    (AutoBalance's individualised augmentation; ``search loss`` can tune it with TPE through
    ``bilevel.tune: [augment_strength]``); None: every sample is augmented."""

    @field_validator("class_strength")
    @classmethod
    def _strength_in_range(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (not value or any(not 0.0 <= s <= 1.0 for s in value)):
            raise ValueError(f"must be K values in [0, 1], got {value}")
        return value


class TrainConfig(StrictModel):
    """SGD with momentum; the learning rate follows ``schedule``, updated after every step."""

    epochs: int = Field(15, ge=1)
    """Epochs of a run (``autorobust train``, and the retraining of a search's best design);
    search trials may train fewer (``search.trial_epochs``)."""
    batch_size: int = Field(128, ge=1)
    """Training images per SGD step."""
    lr: float = Field(0.05, gt=0.0)
    """Base learning rate of SGD, before the warm-up and the schedule."""
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    """SGD momentum."""
    nesterov: bool = False
    """Nesterov momentum (only with ``momentum`` > 0)."""
    weight_decay: float = Field(5e-4, ge=0.0)
    """L2 weight decay of SGD."""
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    """The learning rate after the warm-up, updated every step: ``cosine`` anneals it to 0 at
    the last step, ``step`` multiplies it by ``gamma`` at each of ``milestones``, ``constant``
    keeps it."""
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75])
    """Step schedule: fractions of ``epochs`` at which the rate is multiplied by ``gamma``."""
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    """Step schedule: the factor applied at each milestone."""
    warmup_epochs: int = Field(0, ge=0)
    """Linear learning-rate warm-up over the first epochs (LDAM and AutoBalance use 5)."""
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    """Augmentation of the training images (none by default)."""
    progress: bool = True
    """Show a progress bar of the epochs on stderr (``--no-progress`` turns it off; search
    trials never show one). Not part of the checkpoint fingerprint."""
    threads: int | Literal["auto"] = "auto"
    """CPU threads of torch: an integer >= 1, or ``auto``: ``OMP_NUM_THREADS`` if set, else this
    machine's cores divided among the autorobust processes training on it now (at least 1; see
    :mod:`autorobust.train.threads`), so that several workers on one machine do not
    oversubscribe it. ``--threads N`` on the command line sets it."""
    record_dynamics: bool = False
    """Record the training dynamics (Pleiss et al. 2020, "Identifying mislabeled data using the
    area under the margin ranking"): at every step, from the logits of the training forward pass,
    each sample's margin (the logit of its observed label minus the largest other logit) and its
    per-sample training loss, one value per sample and epoch, written at the end of the run to
    ``run_dir/dynamics.npz`` (float32 ``margins`` and ``losses`` (N, epochs), int64 ``labels``
    (N,)) for the ``aum``, ``mean_loss`` and ``agreement`` detectors of ``sample_selection``.
    The weights are unchanged. Only methods that train through ``Trainer.batch_loss`` (``erm``)
    record; others refuse it."""

    @field_validator("threads", mode="before")
    @classmethod
    def _threads_positive(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and value >= 1):
            return value
        if isinstance(value, str) and value.isdigit() and int(value) >= 1:
            return int(value)
        raise ValueError(f"must be an integer >= 1 or 'auto', got {value!r}")

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if any(not 0.0 < m < 1.0 for m in self.milestones):
            raise ValueError(f"milestones must be fractions in (0, 1), got {self.milestones}")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be smaller than epochs ({self.epochs})"
            )
        return self


class SearchConfig(StrictModel):
    """How a search runs (Optuna); see :class:`autorobust.search.runner.SearchSettings`."""

    study_name: str | None = None
    """Name of the study in its storage; running again with the same name resumes it, and
    workers that share the storage and the name share the study (``--study-name``). Default:
    ``<kind>-<config file stem>`` on the command line (``baseline-demo``), the kind alone
    (``baseline``) from Python."""
    storage: str | None = None
    """SQLAlchemy URL of the database holding the study (``--storage``):
    ``sqlite:///path/study.db`` for workers on one machine, or
    ``postgresql+psycopg://USER:PASSWORD@HOST:5432/DB`` (the ``postgres`` extra) for workers on
    many; default: ``sqlite:///<run_dir>/study.db``. Passwords are redacted in messages."""
    sampler: Literal["tpe", "random", "nsga2"] = "tpe"
    """How trials are proposed: ``tpe`` (Optuna's TPE), ``random``, or ``nsga2`` (for searches
    with several objectives)."""
    n_trials: int = Field(20, ge=1)
    """Finished (complete or pruned) trials the study must hold, counting every worker and every
    earlier run; failed trials do not count (``--n-trials``)."""
    timeout: float | None = Field(None, gt=0.0)
    """Wall-clock budget of one worker in seconds, checked between trials (a running trial is
    never cut short); null: none (``--timeout``)."""
    n_startup_trials: int = Field(10, ge=0)
    """TPE: random trials before it starts modelling."""
    n_ei_candidates: int = Field(24, ge=1)
    """TPE: candidates drawn per proposal, of which the one with the best expected improvement
    is proposed."""
    gamma: float | None = Field(None, gt=0.0, le=1.0)
    """TPE: the fraction of trials modelled as good, in (0, 1]; null: Optuna's
    min(ceil(0.1 n), 25) of n trials."""
    multivariate: bool = False
    """TPE: model the parameters jointly rather than one by one."""
    pruner: Literal["median", "none"] = "median"
    """``median``: stop a trial whose best score so far is below the median of the completed
    trials at the same epoch (after ``pruner_startup_trials`` and ``pruner_warmup_epochs``);
    ``none``: every trial trains its whole budget."""
    pruner_startup_trials: int = Field(10, ge=0)
    """Completed trials before the median pruner may stop any trial; the default is TPE's own
    start-up, so the pruner starts judging when the sampler starts modelling."""
    pruner_warmup_fraction: float = Field(0.2, ge=0.0, le=1.0)
    """Fraction of every trial's epochs that are never pruned (rounded up: 6 of 30, 2 of 8, at
    least 1 of any). Early epochs at a high learning rate say little about the end: with Optuna's
    defaults (5 trials, no warm-up) the pruner stopped 12 of 20 trials after their first epoch,
    often at chance accuracy. Replayed on unpruned demo searches (30-epoch baseline and 8-epoch
    reweighter trials, 10 start-up trials), 0.2 is the smallest fraction of those tried (0, 0.1,
    1/6, 0.2, 0.25, 1/3) that kept every search's best trial at both lengths and still saved a
    quarter of the baseline's epochs; a fixed 5 epochs was most of a short trial
    (``benchmarks/pruner_defaults.py``). A search whose trials have no epoch count (the
    architecture search) keeps 5 steps."""
    pruner_warmup_epochs: int | None = Field(None, ge=0)
    """Epochs of every trial that are never pruned, whatever its length; set, it replaces
    ``pruner_warmup_fraction`` (configs written before the fraction existed keep their
    meaning: their 5 is now explicit). null: the fraction decides."""

    @field_validator("study_name")
    @classmethod
    def _named(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(
                "must not be empty (an empty name would silently join the default study); "
                "leave it out for the default"
            )
        return value

    seed: int | None = Field(None, ge=0)
    """Seed of the sampler; default: the run's ``seed`` (``null`` written out: drawn from the OS).
    Trial k is proposed with the seed (seed, k): two identical single-worker searches propose
    identical trials, and workers sharing a study never propose the same ones."""
    trial_epochs: int | None = Field(None, ge=1)
    """Shortened training budget of one trial; default: ``train.epochs``."""
    heartbeat_interval: int = Field(60, ge=1)
    """Seconds between the heartbeats of a running trial; a trial without one for twice as long
    counts as dead (its worker was killed): it is marked failed and a copy runs again."""
    max_retry: int = Field(3, ge=0)
    """How often the trial of a dead worker is run again (with the same parameters, resuming
    from its checkpoint)."""


def check_search_setting(name: str, value: Any) -> None:
    """Check ``value`` against the bounds of the field ``name`` of :class:`SearchConfig`.

    The bounds of a search setting are written once, on :class:`SearchConfig` (pydantic checks a
    config with them); settings given to the runner outside a config
    (:class:`autorobust.search.runner.SearchSettings`, ``create_sampler``) are checked here
    against the same bounds. ``None`` passes where the field may be null.

    Raises:
        ConfigError: one line, e.g. ``n_trials: expected an integer >= 1, got 0``.
    """
    field = SearchConfig.model_fields[name]
    nullable = field.default is None
    if value is None and nullable:
        return
    lower: tuple[str, str, Any] | None = None
    upper: tuple[str, str, Any] | None = None
    for bound in field.metadata:
        if isinstance(bound, annotated_types.Gt):
            lower = ("(", ">", bound.gt)
        elif isinstance(bound, annotated_types.Ge):
            lower = ("[", ">=", bound.ge)
        elif isinstance(bound, annotated_types.Lt):
            upper = (")", "<", bound.lt)
        elif isinstance(bound, annotated_types.Le):
            upper = ("]", "<=", bound.le)
    kind = "an integer" if field.annotation in (int, "int", int | None) else "a number"
    if lower is not None and upper is not None:
        expected = f"{kind} in {lower[0]}{lower[2]:g}, {upper[2]:g}{upper[0]}"
    else:
        expected = " ".join(f"{op} {limit:g}" for _, op, limit in filter(None, (lower, upper)))
        expected = f"{kind} {expected}".rstrip()
    inside = value is not None and (
        (lower is None or (value > lower[2] if lower[1] == ">" else value >= lower[2]))
        and (upper is None or (value < upper[2] if upper[1] == "<" else value <= upper[2]))
    )
    if not inside:
        raise ConfigError(
            f"{name}: expected {expected}{' or null' if nullable else ''}, got {value}"
        )


class ExperimentConfig(StrictModel):
    """A whole run: data, shift, model, loss, training and (optionally) search settings."""

    seed: int = Field(0, ge=0)
    """Seed of everything random: the splits and the shift, the initial weights, each epoch's
    shuffling, augmentation and dropout (seeded by (seed, epoch)), and by default the search's
    sampler (``search.seed``)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: ``auto`` is CUDA when available, else the CPU (``--device``)."""
    run_dir: str = "runs/default"
    """The run directory (``config.yaml``, ``data.json``, ``checkpoint.pt``, ``metrics.json``;
    a search's study, trials and best run), relative to the working directory (``--run-dir``)."""
    data: DataConfig = Field(default_factory=DataConfig)
    shift: ShiftConfig = Field(default_factory=ShiftConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    method: Literal["erm", "reweight", "autobalance", "darts", "pseudo_label"] = "erm"
    """How the classifier is trained: plain ERM, sample reweighting by a Meta-Weight-Net, the loss
    learned by AutoBalance's bilevel optimisation (one bilevel run; ``autorobust search loss``
    runs and retrains it), the DARTS recipe for a searched cell (auxiliary loss, drop-path,
    clipping; model ``darts``), or ERM plus FixMatch-style pseudo-labels on the samples a relabel
    file rejected (``pseudo_label``; needs ``data.relabel_file``)."""
    reweight: ReweightConfig = Field(default_factory=ReweightConfig)
    bilevel: BilevelConfig = Field(default_factory=BilevelConfig)
    architecture: ArchitectureConfig = Field(default_factory=ArchitectureConfig)
    pseudo_label: PseudoLabelConfig = Field(default_factory=PseudoLabelConfig)
    """``method: pseudo_label``: threshold, unlabeled batch ratio, weight of the pseudo-label loss
    and its ramp-up, strength of the strong view."""
    design: DesignConfig = Field(default_factory=DesignConfig)
    """``autorobust design``: what it composes, its budget and scoring."""

    @model_validator(mode="before")
    @classmethod
    def _search_seed_defaults_to_seed(cls, raw: Any) -> Any:
        # ``search.seed`` left out means the run's seed; an explicit ``null`` stays unseeded. The
        # resolved value is written out with the run's config, as every default is.
        if not isinstance(raw, dict):
            return raw
        search = raw.get("search", {})
        if not isinstance(search, dict) or "seed" in search:
            return raw
        seed = raw.get("seed", cls.model_fields["seed"].default)
        if isinstance(seed, bool) or not isinstance(seed, int):
            return raw  # the run's seed is invalid: reported once, on `seed`
        return {**raw, "search": {**search, "seed": seed}}

    def epochs(self, stage: Literal["final", "trial", "bilevel"] = "final") -> int:
        """The epoch budget of one training run of this config; every command resolves it here.

        - ``final``: a run of ``autorobust train`` and the retraining of a search's best design:
          ``train.epochs``;
        - ``trial``: one trial of the baseline or reweighter search: ``search.trial_epochs``,
          default ``train.epochs``;
        - ``bilevel``: one trial (a bilevel run) of AutoBalance's loss search:
          ``bilevel.search_epochs``, default ``train.epochs``.
        """
        if stage == "trial" and self.search.trial_epochs is not None:
            return self.search.trial_epochs
        if stage == "bilevel" and self.bilevel.search_epochs is not None:
            return self.bilevel.search_epochs
        return self.train.epochs

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-serialisable dict of every field, defaults included."""
        return self.model_dump(mode="json")


def _holds(raw: Any, loc: Sequence[str | int]) -> bool:
    """Whether the nested mapping ``raw`` has a value at ``loc``."""
    for part in loc:
        in_mapping = isinstance(raw, dict) and part in raw
        in_list = isinstance(raw, list) and isinstance(part, int) and 0 <= part < len(raw)
        if not (in_mapping or in_list):
            return False
        raw = raw[part]
    return True


def _blame(
    loc: Sequence[str | int],
    where: str,
    file_raw: Any,
    overrides: Sequence[str],
    labels: Mapping[str, str] | None = None,
) -> str:
    """Who set the value at ``loc``: the override that wrote it or a mapping above it (``--set
    a.b=1``, or what ``labels`` names for that override, e.g. ``--threads abc``), the file, or both
    (``x.yaml with --set a.b=1``) when an override changed a part of a value that is checked as a
    whole (e.g. ``train`` against its ``epochs``)."""
    path = [str(part) for part in loc]
    inside = []
    labels = labels or {}
    for item in reversed(overrides):  # the last override of a key is the one that counts
        key = item.partition("=")[0].split(".")
        label = labels.get(item, f"--set {item}")
        if path[: len(key)] == key:
            return label
        if key[: len(path)] == path:
            inside.append(label)
    if not inside:
        return where
    if not _holds(file_raw, loc):
        return inside[0]
    return f"{where} with {', '.join(reversed(inside))}"


def _format_validation_error(
    exc: ValidationError,
    where: str,
    file_raw: Any = None,
    overrides: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
) -> str:
    parts: list[tuple[str, str]] = []
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"]) or "<root>"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] not in ("value_error", "missing") and "input" in error:
            message = f"{message} (got {error['input']!r})"
        source = _blame(error["loc"], where, file_raw, overrides, labels)
        if parts and parts[-1][0] == source:
            parts[-1] = (source, f"{parts[-1][1]}; {path}: {message}")
        else:
            parts.append((source, f"{path}: {message}"))
    return "; ".join(f"{source}: {text}" for source, text in parts)


def validate_config(
    raw: dict[str, Any],
    where: str = "config",
    *,
    overrides: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
) -> ExperimentConfig:
    """Validate a raw dict into an :class:`ExperimentConfig`; raise a one-line ConfigError.

    ``where`` names the origin of ``raw`` in messages. With ``overrides`` (``a.b=value`` items),
    ``raw`` is applied them first, and an invalid value one of them set is blamed on it
    (``--set train.lr=abc: train.lr: ...``) rather than on ``where``. ``labels`` maps an override
    to what the user typed instead, when a command-line flag made it (``train.threads=abc`` to
    ``--threads abc``).
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    merged = apply_overrides(raw, list(overrides)) if overrides else raw
    try:
        return ExperimentConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, where, raw, overrides, labels)) from None


def bundled_configs() -> dict[str, Path]:
    """Configs shipped with the package, by name (file stem)."""
    folder = resources.files("autorobust") / "configs"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path to an existing YAML file, or the name of a bundled config (e.g. ``demo``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_configs()
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    if path.exists():
        raise ConfigError(f"{path}: not a file")
    names = ", ".join(sorted(bundled))
    raise ConfigError(f"{path}: no such config file (bundled configs: {names})")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides to a raw config dict; values are parsed as YAML scalars.

    ``--set train.epochs=3`` sets an int, ``--set shift.noise=none`` a string. An override whose
    path crosses a non-mapping is an error; unknown keys are left to validation to report.
    """
    result = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. train.epochs=3")
        node = result
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {item!r}: {prefix} is not a mapping")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            node[parts[-1]] = text
    return result


def load_config(
    path: str | Path,
    overrides: list[str] | None = None,
    *,
    labels: Mapping[str, str] | None = None,
) -> ExperimentConfig:
    """Read a YAML config (a path or a bundled name), apply ``overrides`` and validate it
    (``labels``: see :func:`validate_config`)."""
    path = resolve_config_path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{line}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return validate_config(raw, where=str(path), overrides=overrides or [], labels=labels)
