"""Meta-Weight-Net (Shu et al., NeurIPS 2019) and the search of its architecture (paper 002).

- ``config.py``: the ``reweight`` config section (V and the TPE space over it);
- ``network.py``: V, an MLP from a sample's loss / features / label to its weight in (0, 1);
- ``meta_step.py``: the meta step (virtual SGD step, meta loss, exact meta-gradients);
- ``trainer.py``: ``method: reweight``, the classifier trained by the meta step;
- ``search.py``: ``autorobust search reweighter``, TPE over V's architecture; ``search_kind.py``
  declares it (torch-free, for the registry of search kinds);
- ``report.py``: weight-vs-loss and clean-vs-noisy weight plots.
"""
