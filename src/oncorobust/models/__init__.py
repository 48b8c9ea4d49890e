"""Models stage: every model takes images in [0,1] (float32, N×C×H×W) and returns N×classes logits.

- :mod:`~oncorobust.models.loading`: the workflow's entry points (``import_checkpoint``,
  ``load_model``);
- :mod:`~oncorobust.models.architectures`: ``model.arch`` → a network (``build_model``,
  ``build_net``, ``load_serialized``, the ``python:`` factory contract);
- :mod:`~oncorobust.models.networks`: the paper's networks, the input normalisation and the
  wrapper of other networks;
- :mod:`~oncorobust.models.checkpoints`: model files (reading, verifying, fitting weights);
- :mod:`~oncorobust.models.heads`: output heads (logits, one logit, probabilities);
- :mod:`~oncorobust.models.zipformat`: TorchScript/``torch.export`` file sniffing without torch.
"""
