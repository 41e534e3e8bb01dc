"""Structured pruning removes whole channels: dead channels go without changing the outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmdev.compress import prune
from lmdev.errors import LmdevError


def test_pruning_dead_mlp_channels_keeps_the_outputs():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    with torch.no_grad():  # channels 8..15 are dead: no input, no output
        m[1].weight[8:] = 0
        m[1].bias[8:] = 0
        m[3].weight[:, 8:] = 0
    small, widths = prune.prune_mlp(m, 0.5)
    assert widths == [8]
    assert small[1].weight.shape == (8, 8) and small[3].weight.shape == (3, 8)
    x = torch.randn(5, 8)
    torch.testing.assert_close(small(x), m(x))


def test_pruning_gpt_mlp_channels_keeps_the_outputs_when_they_are_dead(gpt_source):
    model = gpt_source.model
    hidden = model.blocks[0].mlp.down.in_features
    with torch.no_grad():
        for b in model.blocks:  # kill the second half of the channels (gate and up rows, down columns)
            b.mlp.down.weight[:, hidden // 2:] = 0
    small, k = prune.prune_gpt(model, 0.5)
    assert k == hidden - hidden // 2 or k == hidden // 2
    x = gpt_source.data.val.batch(torch.arange(2))[0]
    spec = prune.pruned_spec(gpt_source.spec, k)
    rebuilt = spec.build()
    rebuilt.load_state_dict(small.state_dict())  # the pruned model is the model of the smaller config
    torch.testing.assert_close(rebuilt.eval()(x), model(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("ratio", [0.999, 1.0, 0.0])
def test_pruning_below_one_channel_is_refused(ratio):
    with pytest.raises(LmdevError, match="at least one must stay"):
        prune.keep_count(64, ratio)


def test_pruned_and_finetuned_digits_mlp_stays_accurate(digits_source):
    from lmdev.compress import measure as ms

    v = prune.prune_variant(digits_source, 0.5, 150)
    ev = ms.make_eval_set(digits_source)
    from lmdev.compress.variant import TorchRunner

    base = ms.evaluate(TorchRunner(digits_source.model), ev)[0].accuracy
    acc = ms.evaluate(v.runner, ev)[0].accuracy
    assert v.spec.config["hidden"] == [32, 16]
    assert acc > base - 0.05
