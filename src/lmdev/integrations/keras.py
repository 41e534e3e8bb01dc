"""A Keras 3 callback that records ``Model.fit`` into a run (TensorFlow, torch or JAX backend).

It logs every epoch's logs (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``...) and,
every ``log_every_n_batches`` batches, the batch logs under ``batch/``. It declares itself
``async_safe`` (``run.log`` only appends to a thread-safe buffer), so Keras keeps dispatching
batch callbacks asynchronously instead of waiting for each batch's results.

    model.fit(x, y, callbacks=[LmdevCallback()])
    # weight histograms and sample predictions of an image model, each epoch:
    model.fit(x, y, callbacks=[LmdevCallback(log_histograms=True, sample_images=(x[:8], y[:8]))])
"""

from __future__ import annotations

from typing import Any

import keras

from lmdev.integrations._common import ensure_run, numeric, sample_images, weight_histograms
from lmdev.track.run import Run


class LmdevCallback(keras.callbacks.Callback):
    """Record a Keras training into ``run`` (default: the active run, or a new one)."""

    async_safe = True

    def __init__(self, run: Run | None = None, log_every_n_batches: int = 50, *, log_histograms: bool = False,
                 sample_images: tuple[Any, Any] | None = None, **init_kwargs: Any) -> None:
        """``log_histograms``: a 64-bin histogram of every weight at each epoch's end
        (``weights/<path>``); ``sample_images``: ``(x, y)``, a few inputs of an image model whose
        predictions are logged as captioned images (``samples/<i>``) at each epoch's end."""
        super().__init__()
        self.log_histograms = log_histograms
        self.sample_images = sample_images
        if log_every_n_batches < 0:
            raise ValueError("log_every_n_batches must be >= 0 (0: epochs only)")
        self._given = run
        self._init_kwargs = init_kwargs
        self.log_every_n_batches = log_every_n_batches
        self.run: Run | None = None
        self._created = False
        self._seen = 0  # batches trained so far: the step of every value logged

    def on_train_begin(self, logs: Any = None) -> None:
        self.run, self._created = ensure_run(self._given, **self._init_kwargs)
        config: dict[str, Any] = {"framework": "keras", "keras_backend": keras.backend.backend()}
        config.update({k: v for k, v in (self.params or {}).items() if isinstance(v, (int, float, str))})
        try:
            config["parameters"] = int(self.model.count_params())
            opt = self.model.optimizer
            if opt is not None:
                config["optimizer"] = type(opt).__name__
                lr = opt.learning_rate
                config["learning_rate"] = float(lr) if not callable(lr) else str(lr)
        except Exception:
            pass
        self.run.log_config(config)

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self._seen += 1
        n = self.log_every_n_batches
        if n and self.run is not None and self._seen % n == 0:
            self.run.log(numeric(logs, "batch/"), step=self._seen)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self.run is not None:
            values: dict[str, Any] = numeric(logs)
            values["epoch"] = epoch + 1
            if self.log_histograms:
                values.update(weight_histograms(
                    (w.path, keras.ops.convert_to_numpy(w)) for w in self.model.weights))
            if self.sample_images is not None:
                x, y = self.sample_images
                values.update(sample_images(x, self.model.predict(x, verbose=0), y))
            self.run.log(values, step=self._seen)

    def on_train_end(self, logs: Any = None) -> None:
        if self.run is None:
            return
        if self._created:
            self.run.finish()
        else:
            self.run.flush()
