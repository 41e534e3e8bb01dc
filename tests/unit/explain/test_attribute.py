"""The attribution methods on models whose answer is known: a model that reads one feature
puts that feature first, integrated gradients are complete on a linear model, and attention
weights are a distribution over the positions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmdev.errors import LmdevError
from lmdev.explain.attribute import attention_scores, attribute_table, attribute_tokens
from lmdev.train.config import GPTConfig
from lmdev.train.models import GPT


def planted_model(feature: int = 2, width: int = 6) -> nn.Module:
    """Two classes decided by one feature (plus a little of the others)."""
    torch.manual_seed(0)
    lin = nn.Linear(width, 2)
    with torch.no_grad():
        lin.weight.uniform_(-0.05, 0.05)
        lin.weight[1, feature], lin.weight[0, feature] = 3.0, -3.0
        lin.bias.zero_()
    return nn.Sequential(lin, nn.Tanh(), nn.Linear(2, 2))


@pytest.mark.parametrize("method", ["integrated-gradients", "saliency", "occlusion"])
def test_the_planted_feature_comes_first(method):
    model = planted_model()
    x = torch.randn(16, 6)
    target = model(x).argmax(1)
    scores, _ = attribute_table(model, x, torch.zeros(1, 6), target, method)
    assert scores.shape == (16, 6)
    assert int(scores.abs().mean(0).argmax()) == 2


def test_integrated_gradients_are_complete_on_a_linear_model():
    model = nn.Linear(4, 3)
    x, base = torch.randn(5, 4), torch.zeros(1, 4)
    target = torch.tensor([0, 1, 2, 0, 1])
    scores, delta = attribute_table(model, x, base, target, "integrated-gradients")
    change = model(x).gather(1, target[:, None])[:, 0] - model(base).expand(5, 3).gather(1, target[:, None])[:, 0]
    assert torch.allclose(scores.sum(1), change.detach(), atol=1e-4)
    assert delta.abs().max() < 1e-4


def test_attention_is_for_transformers_only():
    with pytest.raises(LmdevError, match="transformer"):
        attribute_table(planted_model(), torch.randn(2, 6), torch.zeros(1, 6), None, "attention")


def tiny_gpt(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16, **kw)).eval()


@pytest.mark.parametrize("position", ["rope", "learned"])
def test_attention_weights_are_a_distribution_and_match_the_model(position):
    model = tiny_gpt(position=position)
    ids = torch.tensor([[1, 5, 7, 3, 9]])
    weights = attention_scores(model, ids)
    assert weights.shape == (1, 5)
    assert torch.allclose(weights.sum(-1), torch.ones(1), atol=1e-5)
    # the weights come from the model's own projections: changing a query weight changes them
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight.mul_(3.0)
    assert not torch.allclose(attention_scores(model, ids), weights)


@pytest.mark.parametrize("method", ["integrated-gradients", "saliency", "occlusion", "attention"])
def test_token_attributions_have_one_score_per_token(method):
    model = tiny_gpt()
    ids = torch.tensor([[1, 5, 7, 3, 9, 2]])
    scores, delta = attribute_tokens(model, ids, 4, method, steps=16)
    assert scores.shape == (6,) and torch.isfinite(scores).all()
    assert (delta is not None) == (method == "integrated-gradients")


def test_occlusion_finds_the_only_token_that_matters():
    """A model whose next-token logits depend only on the token at position 1."""

    class Reader(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 10)
            nn.init.eye_(self.embed.weight)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            e = self.embed(ids)
            return e[:, 1:2, :].expand(-1, ids.shape[1], -1) * 5.0

    scores, _ = attribute_tokens(Reader(), torch.tensor([[3, 7, 2, 4]]), 7, "occlusion")
    assert int(scores.abs().argmax()) == 1 and scores[[0, 2, 3]].abs().max() == 0
