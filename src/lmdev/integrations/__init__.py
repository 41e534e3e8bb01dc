"""Integrations with training frameworks, each imported only when its framework is in use.

- ``lmdev.integrations.keras.LmdevCallback``: a Keras 3 callback (any backend).
- ``lmdev.integrations.lightning.LmdevLogger``: a Lightning logger (``lightning.pytorch`` or
  ``pytorch_lightning``; ``logger_class(package)`` for a given one).
- ``lmdev.integrations.transformers.LmdevTrainerCallback``: a Hugging Face ``TrainerCallback``.
- ``lmdev.autolog()`` (``lmdev.integrations.autolog``): attaches them to every ``Model.fit``
  and ``Trainer``.
"""
