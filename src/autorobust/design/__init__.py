"""``autorobust design``: an architecture, a noise treatment and a loss, composed and searched.

The layer above the methods: it composes what they offer (Meta-Weight-Net, AutoBalance, CSNAS
cells, the noise model of GLC, the selection and relabelling of ``sample_selection``) into one
design, searched with TPE under a compute budget and scored on the clean meta set only.

- ``config.py``: the ``design`` config section (a leaf);
- ``space.py``: :class:`Design` and the TPE space over designs;
- ``treatments/``: one module per noise treatment (``none``, ``transition``, ``selection``,
  ``mwnet``) behind :class:`~autorobust.design.treatments.NoiseTreatment`;
- ``loss_families.py``: the loss families (``cross_entropy``, ``logit_adjustment``,
  ``autobalance``);
- ``run_config.py``: :func:`design_run_config`, the config that trains a design;
- ``scoring.py``: the balanced meta log-loss, paired standard errors, the one-SE choice;
- ``pipeline.py``: :func:`run_design`, which runs the stages in order: ``_probe.py`` (the probe
  and the noise model, its second look), ``_study.py`` (the first rung under the budget and the
  choice there), ``_finalists.py`` (the finalists at ``train.epochs``, their ensemble, ``best/``),
  ``_refit.py`` (the kept design on the pool plus the meta images), ``_contributions.py``; on
  ``_state.py`` (what the stages share) and ``_fits.py`` (a design's runs and meta scores);
- ``report.py``: ``design.md`` and its plots.
"""
