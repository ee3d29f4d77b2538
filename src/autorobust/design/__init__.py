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
- ``pipeline.py``: :func:`run_design`'s stages: probe -> noise model -> study -> choice ->
  retraining;
- ``report.py``: ``design.md`` and its plots.
"""
