"""Metric names line up across integrations (issue 18): val_loss is val/loss."""

from lmdev.track.metric_names import aliases, by_canonical, canonical


def test_split_prefixes_become_slashes():
    assert canonical("val_loss") == "val/loss"
    assert canonical("val_accuracy") == "val/accuracy"
    assert canonical("eval_loss") == "eval/loss"
    assert canonical("train_runtime") == "train/runtime"


def test_other_keys_are_left_alone():
    for key in ("val/loss", "loss", "learning_rate", "valley_depth", "val_", "trainer/x_y", "validation_loss"):
        assert canonical(key) == key


def test_aliases_keep_the_stored_names_and_the_canonical_value_wins():
    assert aliases(["val_loss", "val/loss", "loss"]) == {"val/loss": ["val/loss", "val_loss"], "loss": ["loss"]}
    assert by_canonical({"val_loss": 1.0, "val/loss": 2.0}) == {"val/loss": 2.0}
    assert by_canonical({"val_loss": 1.0, "loss": 3.0}) == {"val/loss": 1.0, "loss": 3.0}
