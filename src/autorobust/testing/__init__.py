"""Test suites that every implementation of a shared interface must pass (Optuna style).

:class:`~autorobust.testing.training_method.TrainingMethodTests` checks a training method (a
``method:`` of the config, e.g. one registered by a plugin) for exact resume, seeded determinism
and refusal of a foreign checkpoint. Subclass it in a test module; pytest collects the subclass.
Importing this package needs pytest.
"""

from autorobust.testing.training_method import TrainingMethodTests

__all__ = ["TrainingMethodTests"]
