"""CSNAS: label-free search of DARTS cells by a contrastive fitness (paper 000).

- ``config.py``: the ``architecture`` config section;
- ``darts/``: operations, the one-operation-per-edge genotype, cells and the network (registered
  as model ``darts``);
- ``contrastive.py``: PIRL's NCE loss with a memory bank, and SimCLR's NT-Xent;
- ``fitness/``: how a candidate cell is scored, one private module per algorithm behind
  ``Fitness``: trained (contrastive, SimCLR, the supervised ablation) and training-free
  (NASWOT, synflow, Jacobian covariance);
- ``trainer.py``: ``method: darts``, the final training recipe (auxiliary head, drop-path,
  clipping);
- ``search.py``: ``autorobust search architecture``; ``search_kind.py`` declares it (torch-free,
  for the registry of search kinds);
- ``report.py``: genotype drawings and the fitness history.
"""
