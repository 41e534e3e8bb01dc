"""Models built from configs: shapes, the gpt's variants and causality, user factories."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from lmdev.errors import LmdevError
from lmdev.train.config import (
    CNNConfig,
    GPTConfig,
    LossConfig,
    MLPConfig,
    PythonModelConfig,
)
from lmdev.train.losses import make_loss
from lmdev.train.models import DataShape, build_model, count_parameters

TOKENS = DataShape("tokens", (16,), 37, "language_modeling")
DIGITS = DataShape("table", (64,), 10, "classification")


def _gpt(**kw: object) -> torch.nn.Module:
    base = {"type": "gpt", "n_layer": 2, "n_head": 4, "n_embd": 32, "block_size": 16}
    base.update(kw)
    torch.manual_seed(0)
    return build_model(GPTConfig(**base), TOKENS)


VARIANTS = [
    {"norm": "rmsnorm", "position": "rope", "mlp": "swiglu"},
    {"norm": "layernorm", "position": "learned", "mlp": "gelu"},
    {"norm": "layernorm", "position": "rope", "mlp": "swiglu", "bias": True},
    {"norm": "rmsnorm", "position": "learned", "mlp": "gelu", "n_kv_head": 2},
    {"norm": "rmsnorm", "position": "rope", "mlp": "swiglu", "n_kv_head": 1, "tie_embeddings": False},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
def test_gpt_variants_shape_and_causality(variant: dict) -> None:
    model = _gpt(**variant).eval()
    x = torch.randint(0, 37, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
        assert out.shape == (3, 12, 37)
        j = 7
        x2 = x.clone()
        x2[:, j] = (x2[:, j] + 1) % 37
        out2 = model(x2)
    assert torch.allclose(out[:, :j], out2[:, :j], atol=1e-6), "a future token changed an earlier logit"
    assert not torch.allclose(out[:, j:], out2[:, j:]), "the changed token changed nothing"


def test_gqa_has_fewer_key_value_parameters() -> None:
    full, gqa = _gpt(n_kv_head=None), _gpt(n_kv_head=2)
    head_dim = 32 // 4
    assert full.blocks[0].attn.qkv.out_features == (4 + 2 * 4) * head_dim
    assert gqa.blocks[0].attn.qkv.out_features == (4 + 2 * 2) * head_dim
    # per layer: keys and values (2) x the heads dropped (4 - 2) x head_dim x n_embd; two layers
    assert count_parameters(full) - count_parameters(gqa) == 2 * (2 * (4 - 2) * head_dim * 32)


def test_tied_and_untied_embeddings() -> None:
    tied, untied = _gpt(tie_embeddings=True), _gpt(tie_embeddings=False)
    assert tied.head.weight is tied.embed.weight
    assert untied.head.weight is not untied.embed.weight
    assert count_parameters(untied) - count_parameters(tied) == 37 * 32
    # the tied weight appears once in the state dict's storage
    sd = tied.state_dict()
    assert sd["head.weight"].data_ptr() == sd["embed.weight"].data_ptr()


def test_vocab_size_is_taken_from_the_data() -> None:
    assert _gpt().embed.num_embeddings == 37
    assert _gpt(vocab_size=50).head.out_features == 50
    with pytest.raises(LmdevError, match="smaller than the data's vocabulary 37"):
        _gpt(vocab_size=20)


@pytest.mark.parametrize("variant", [{}, {"position": "learned", "norm": "layernorm", "mlp": "gelu", "dropout": 0.0}])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(variant: dict) -> None:
    plain = _gpt(**variant)
    ckpt = _gpt(activation_checkpointing=True, **variant)
    ckpt.load_state_dict(plain.state_dict())
    loss_fn = make_loss(LossConfig(), "language_modeling")
    g = torch.Generator().manual_seed(3)
    x, y = torch.randint(0, 37, (4, 16), generator=g), torch.randint(0, 37, (4, 16), generator=g)
    results = []
    for model in (plain, ckpt):
        model.train()
        loss = loss_fn(model(x), y)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (l1, g1), (l2, g2) = results
    assert torch.equal(l1, l2)
    assert g1.keys() == g2.keys()
    for name in g1:
        assert torch.allclose(g1[name], g2[name], rtol=1e-5, atol=1e-7), name


def test_gpt_refuses_a_sequence_longer_than_its_block() -> None:
    with pytest.raises(LmdevError, match="block_size"):
        _gpt()(torch.zeros(1, 17, dtype=torch.long))


def test_gpt_needs_token_data() -> None:
    with pytest.raises(LmdevError, match="token data"):
        build_model(GPTConfig(), DIGITS)


def test_mlp_shapes() -> None:
    model = build_model(MLPConfig(hidden=[128, 64]), DIGITS)
    assert model(torch.zeros(5, 64)).shape == (5, 10)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 128), (128, 64), (64, 10)]
    assert count_parameters(model) == 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10  # 17,226
    images = build_model(MLPConfig(hidden=[8], dropout=0.5), DataShape("image", (3, 4, 4), 2, "classification"))
    assert images(torch.zeros(2, 3, 4, 4)).shape == (2, 2)
    assert any(isinstance(m, torch.nn.Dropout) for m in images)


def test_cnn_shapes() -> None:
    flat = build_model(CNNConfig(channels=[4, 8], hidden=16), DIGITS)  # 64 features read as 8x8
    assert flat(torch.zeros(3, 64)).shape == (3, 10)
    image = build_model(CNNConfig(channels=[4], hidden=16), DataShape("image", (3, 16, 16), 5, "classification"))
    assert image(torch.zeros(2, 3, 16, 16)).shape == (2, 5)
    with pytest.raises(LmdevError, match="square"):
        build_model(CNNConfig(), DataShape("table", (10,), 2, "classification"))


def test_python_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lmdev_test_user_models.py").write_text(textwrap.dedent("""
        import torch

        def make(width=4, out=10):
            return torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, out))

        def not_a_module():
            return 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model(PythonModelConfig(type="python:lmdev_test_user_models:make", kwargs={"width": 7}), DIGITS)
    assert model[0].out_features == 7 and model(torch.zeros(2, 64)).shape == (2, 10)
    with pytest.raises(LmdevError, match="not a torch.nn.Module"):
        build_model(PythonModelConfig(type="python:lmdev_test_user_models:not_a_module"), DIGITS)
    with pytest.raises(LmdevError, match="has no 'missing'"):
        build_model(PythonModelConfig(type="python:lmdev_test_user_models:missing"), DIGITS)
    with pytest.raises(LmdevError, match="cannot import"):
        build_model(PythonModelConfig(type="python:no_such_module_xyz:make"), DIGITS)
    with pytest.raises(LmdevError, match="package.module:name"):
        build_model(PythonModelConfig(type="python:just_a_module"), DIGITS)


def test_a_factory_is_given_the_data_facts_it_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The factory names in_features and n_classes: the data's values are passed (the config
    repeats neither); a config value that contradicts the data is refused, naming both."""
    (tmp_path / "lmdev_test_shaped_models.py").write_text(textwrap.dedent("""
        import torch

        def make(in_features, n_classes, width=4):
            return torch.nn.Sequential(torch.nn.Linear(in_features, width), torch.nn.Linear(width, n_classes))

        def tokens(vocab_size, seq_len, **rest):
            assert not rest
            return torch.nn.Embedding(vocab_size, seq_len)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model(PythonModelConfig(type="python:lmdev_test_shaped_models:make"), DIGITS)
    assert model[0].in_features == 64 and model[1].out_features == 10
    more = build_model(PythonModelConfig(type="python:lmdev_test_shaped_models:make", kwargs={"n_classes": 12}), DIGITS)
    assert more[1].out_features == 12  # more outputs than classes is allowed
    with pytest.raises(LmdevError, match=r"model.kwargs.in_features is 10 but the data's in_features is 64"):
        build_model(PythonModelConfig(type="python:lmdev_test_shaped_models:make", kwargs={"in_features": 10}), DIGITS)
    emb = build_model(PythonModelConfig(type="python:lmdev_test_shaped_models:tokens"),
                      DataShape("tokens", (16,), 256, "language_modeling"))
    assert (emb.num_embeddings, emb.embedding_dim) == (256, 16)
