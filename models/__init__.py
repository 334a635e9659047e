"""PyTorch decoders, training and ONNX export.

Needs the ``train`` extra; never imported on the live path. One folder per decoder:
:mod:`models.typing` (Brain2Qwerty) and :mod:`models.speech` (contrastive speech decoder), each
with its model, data and bundle export; :mod:`models.training` trains both. Shared pieces sit at
the top: :mod:`~models.layers`, :mod:`~models.checks`, :mod:`~models.config` (the config base),
:mod:`~models.data_sources`, :mod:`~models.registry`, :mod:`~models.checkpoint`,
:mod:`~models.export` (ONNX) and :mod:`~models.bundles` (checkpoint -> bundle, any decoder).
Importing this package imports nothing.
"""
