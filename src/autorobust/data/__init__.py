"""Data: sources, distribution shift, splits and batched augmentation."""
