"""The integrations log weight histograms and sample predictions on request."""

import types

import numpy as np
import pytest

from lmdev.integrations._common import sample_images, weight_histograms
from lmdev.track.store import Store


def media(home, run_id):
    with Store(home) as s:
        run = s.get_run(run_id)
        return s.media(run), s.metrics(run)


def test_helpers_make_histograms_and_captioned_images():
    hists = weight_histograms([("layer.weight", np.arange(10.0)), ("empty", np.zeros(0))])
    assert "weights/layer/weight" in hists
    assert sum(hists["weights/layer/weight"].counts) == 10
    imgs = sample_images(np.random.rand(3, 4, 4, 1), np.eye(3), truth=[0, 2, 2], limit=2)
    assert list(imgs) == ["samples/0", "samples/1"]
    assert imgs["samples/1"].caption == "predicted 1, true 2"
    assert sample_images(np.zeros((3, 5)), np.zeros(3)) == {}  # tabular inputs: not images


def test_lightning_logger_watch_logs_parameter_histograms(home):
    torch = pytest.importorskip("torch")
    pytest.importorskip("lightning")
    from lmdev.integrations.lightning import logger_class

    logger = logger_class("lightning.pytorch")()
    model = torch.nn.Linear(3, 2)
    logger.watch(model, log_freq=10)
    for step in range(25):
        logger.log_metrics({"train_loss": 1.0 / (step + 1)}, step=step)
    logger.log_image("samples", [np.zeros((4, 4)), torch.ones(3, 4, 4)], step=24, caption=["a", "b"])
    run_id = logger.experiment.id
    logger.finalize("success")
    items, metrics = media(home, run_id)
    hists = [i for i in items if i.kind == "histogram"]
    assert sorted({i.step for i in hists}) == [0, 10, 20]
    assert {i.key for i in hists} == {"weights/weight", "weights/bias"}
    assert [(i.key, i.step, i.payload["caption"]) for i in items if i.kind == "image"] == [
        ("samples/0", 24, "a"), ("samples/1", 24, "b")]
    assert len(metrics["train_loss"]) == 25


def test_transformers_callback_logs_histograms_at_evaluation(home):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from lmdev.integrations.transformers import LmdevTrainerCallback

    cb = LmdevTrainerCallback(log_histograms=True)
    state = types.SimpleNamespace(is_world_process_zero=True, global_step=0)
    args = types.SimpleNamespace(to_dict=lambda: {}, eval_strategy="steps")
    cb.on_train_begin(args, state, None)
    state.global_step = 5
    cb.on_evaluate(args, state, None, model=torch.nn.Linear(2, 2))
    run_id = cb.run.id
    cb.on_train_end(args, state, None)
    items, _ = media(home, run_id)
    assert {(i.key, i.step) for i in items} == {("weights/weight", 5), ("weights/bias", 5)}


@pytest.mark.integration
def test_keras_callback_logs_histograms_and_sample_images(home):
    keras = pytest.importorskip("keras")
    from lmdev.integrations.keras import LmdevCallback

    x = np.random.rand(16, 4, 4, 1).astype("float32")
    y = np.arange(16) % 2
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = LmdevCallback(log_histograms=True, sample_images=(x[:3], y[:3]))
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[cb])
    items, metrics = media(home, cb.run.id)
    kinds = {(i.key.split("/")[0], i.kind) for i in items}
    assert kinds == {("weights", "histogram"), ("samples", "image")}
    assert len([i for i in items if i.kind == "image"]) == 6  # three samples, two epochs
    assert "loss" in metrics
