"""AutoBalance: a loss learned by bilevel optimisation (Li et al., NeurIPS 2021).

- ``config.py``: the ``bilevel`` config section;
- ``loss.py``: the parametric cross-entropy (per-class logit scale, offset and weight), registered
  as loss ``parametric``;
- ``hypergradient.py``: implicit (Neumann series, conjugate gradients, exact) and unrolled
  hypergradients, λ_max by power iteration;
- ``objectives.py``: the upper-level objectives (balanced CE, worst class, fairness) and fairness
  metrics;
- ``split.py``: the two levels' data (a split of the pool, or the clean meta set);
- ``trainer.py``: ``method: autobalance``, one bilevel run;
- ``search.py``: ``autorobust search loss``, TPE over the bilevel knobs, then the retraining;
  ``search_kind.py`` declares it (torch-free, for the registry of search kinds);
- ``report.py``: the learned parameters against class frequency.
"""
