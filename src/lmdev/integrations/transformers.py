"""A Hugging Face ``TrainerCallback`` that records a ``transformers.Trainer`` into a run.

    trainer = Trainer(..., callbacks=[LmdevTrainerCallback()])
    trainer = Trainer(..., callbacks=[LmdevTrainerCallback(log_histograms=True)])  # + weights
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from lmdev.integrations._common import ensure_run, numeric, weight_histograms
from lmdev.track.run import Run


class LmdevTrainerCallback(TrainerCallback):  # type: ignore[misc]
    """Record the Trainer's logs (loss, learning rate, eval metrics) at its global step."""

    def __init__(self, run: Run | None = None, *, log_histograms: bool = False, **init_kwargs: Any) -> None:
        """``log_histograms``: a 64-bin histogram of every parameter (``weights/<name>``) at each
        evaluation, or at the end of training without one."""
        self.log_histograms = log_histograms
        self._given = run
        self._init_kwargs = init_kwargs
        self.run: Run | None = None
        self._created = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.run, self._created = ensure_run(self._given, **self._init_kwargs)
        config: dict[str, Any] = {"framework": "transformers"}
        try:
            config.update({k: v for k, v in args.to_dict().items()
                           if isinstance(v, (int, float, str, bool)) or v is None})
        except Exception:
            pass
        self.run.log_config(config)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if self.run is not None and state.is_world_process_zero:
            self.run.log(numeric(logs), step=state.global_step)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._histograms(state, kwargs.get("model"))

    def _histograms(self, state: Any, model: Any) -> None:
        if self.log_histograms and self.run is not None and model is not None and state.is_world_process_zero:
            self.run.log(weight_histograms(model.named_parameters()), step=state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.run is None:
            return
        if not args.eval_strategy or str(args.eval_strategy).endswith("no"):
            self._histograms(state, kwargs.get("model"))
        if self._created:
            self.run.finish()
        else:
            self.run.flush()
