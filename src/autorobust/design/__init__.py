"""``autorobust design``: an architecture, a noise treatment and a loss, composed and searched.

The layer above the methods: it composes what they offer (Meta-Weight-Net, AutoBalance, CSNAS
cells, the noise model of GLC, the selection and relabelling of ``sample_selection``) into one
design, searched with TPE under a compute budget and scored on the clean meta set only.

- ``config.py``: the ``design`` config section (a leaf);
- ``space.py``: :class:`Design` and the TPE space over designs;
- ``scoring.py``: the balanced meta log-loss, paired standard errors, the one-SE choice;
- ``pipeline.py``: :func:`run_design`: probe -> noise model -> study -> choice -> retraining;
- ``report.py``: ``design.md`` and its plots.
"""
