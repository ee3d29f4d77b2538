"""autorobust: automatic design of image classifiers for imbalanced, noisy or unlabeled data."""

from __future__ import annotations

__version__ = "0.1.0"
