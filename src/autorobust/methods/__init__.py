"""One package per method, named for its paper, holding all of it.

=====================  ==========================================================================
package                method
=====================  ==========================================================================
``meta_weight_net``    Meta-Weight-Net sample reweighting (Shu et al., NeurIPS 2019) and the
                       architecture search of its weighting network (paper 002, "NAS of MW-Net")
``autobalance``        AutoBalance: a parametric loss learned by bilevel optimisation (Li et al.,
                       NeurIPS 2021)
``csnas``              CSNAS: label-free DARTS cell search by a contrastive fitness (paper 000)
``sample_selection``   noisy-label detection turned into a cleaned label set: per-class selection
                       and relabelling from a probe's posterior, loss (DivideMix), clean-prototype
                       similarity (RoLT) or MW-Net's weights; writes ``data.relabel_file``
``glc``                Gold Loss Correction (Hendrycks et al., NeurIPS 2018): the label-noise
                       model (transition matrix, clean class counts) estimated with the clean meta
                       set, and loss ``forward_corrected`` (Patrini et al., CVPR 2017) composed
                       with logit adjustment at the estimated clean prior
=====================  ==========================================================================

Each package holds its config section (``config.py``, a leaf that imports only pydantic), its
algorithm modules, its trainer (registered as a ``method:``), its search command (``search.py``)
and its report. Methods never import each other; the shared layers (``data``, ``models``,
``losses``, ``train``, ``search``, ``experiment``) never import a method: a method adds its
trainer, model or loss to the shared registries as a plugin (``autorobust/_registry.py``).
"""
