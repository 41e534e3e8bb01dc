"""Attributions after training: why did the run's model predict that?

:func:`explain_run` rebuilds a run's model from its config and a checkpoint and attributes its
predictions on chosen or sampled evaluation inputs: feature importance for tables, a heat map
for images (the 8x8 digits), token attributions for language models. Integrated gradients,
saliency and occlusion come from Captum; attention (transformers only) is lmdev's own.
:func:`record_explanation` keeps the result with the run (its folder, an artifact, an event)."""

from __future__ import annotations

from lmdev.explain.record import record_explanation
from lmdev.explain.run import ExplainOptions, explain_run
from lmdev.explain.types import Attribution, Explanation

__all__ = ["Attribution", "ExplainOptions", "Explanation", "explain_run", "record_explanation"]
