"""How a candidate architecture is scored during the CSNAS search (lower is better).

One algorithm per private module behind :class:`Fitness`, registered in :data:`FITNESSES` under the
name ``--fitness`` and ``architecture.fitness`` take:

Trained (the candidate is trained for ``architecture.fitness_epochs`` epochs, one value per epoch
for pruning; :class:`TrainedFitness`):

- ``contrastive``, :class:`ContrastiveFitness` (the paper's, Eq. (1)-(3)): label-free; it reads
  only ``splits.unlabeled`` (no label, no index into the labelled pool). Value: mean PIRL loss per
  image over the last epoch.
- ``simclr``, :class:`SimCLRFitness`: label-free; SimCLR's NT-Xent between two views.
- ``supervised``, :class:`SupervisedFitness` (the paper's ablation): cross-entropy on the same
  images *with* their observed labels; value: validation error 1 - balanced accuracy on the clean
  meta split.

Training-free (a score of the untrained candidate, mean over ``architecture.score_inits``
initialisations; :class:`ZeroCostFitness`); all label-free, and all published as
higher-is-better, so the value is the negated score:

- ``naswot``, :class:`NaswotFitness` (Mellor et al. 2021): value = -log |det K| of the kernel of
  binary ReLU activation codes over ``architecture.score_batch`` unlabeled images.
- ``synflow``, :class:`SynflowFitness` (Tanaka et al. 2020): value = -ln of the synaptic flow
  (absolute weights, all-ones input, float64, eval mode); reads no image.
- ``jacob_cov``, :class:`JacobianCovarianceFitness` (Mellor et al., arXiv v1): value = -score of
  the eigenvalues of the correlation of the per-image input Jacobians.
"""

from __future__ import annotations

from autorobust.methods.csnas.fitness._base import (
    FITNESSES,
    Fitness,
    FitnessResult,
    Report,
    create_fitness,
)
from autorobust.methods.csnas.fitness._contrastive import ContrastiveFitness, SimCLRFitness
from autorobust.methods.csnas.fitness._jacob_cov import (
    JacobianCovarianceFitness,
    input_jacobians,
    jacobian_covariance_score,
)
from autorobust.methods.csnas.fitness._naswot import (
    NaswotFitness,
    activation_code_kernel,
    naswot_score,
)
from autorobust.methods.csnas.fitness._supervised import SupervisedFitness
from autorobust.methods.csnas.fitness._synflow import SynflowFitness, synflow_score
from autorobust.methods.csnas.fitness._trained import ProjectionHead, TrainedFitness
from autorobust.methods.csnas.fitness._zero_cost import ZeroCostFitness, reinitialise

__all__ = [
    "FITNESSES",
    "ContrastiveFitness",
    "Fitness",
    "FitnessResult",
    "JacobianCovarianceFitness",
    "NaswotFitness",
    "ProjectionHead",
    "Report",
    "SimCLRFitness",
    "SupervisedFitness",
    "SynflowFitness",
    "TrainedFitness",
    "ZeroCostFitness",
    "activation_code_kernel",
    "create_fitness",
    "input_jacobians",
    "jacobian_covariance_score",
    "naswot_score",
    "reinitialise",
    "synflow_score",
]
