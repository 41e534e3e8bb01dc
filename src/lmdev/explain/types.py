"""An explanation as plain data: one attribution per input, and for tables the features ranked
by mean absolute attribution. Rendered as text, JSON (docs/schemas/explain.md) or HTML."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lmdev.data.types import finite_json

METHODS = ("integrated-gradients", "saliency", "occlusion", "attention")


@dataclass
class Attribution:
    input: str  # what was explained: "val row 17" or the text
    target: str  # the output attributed: the predicted class / next token
    scores: list[float]  # one per feature / pixel / token
    label: str | None = None  # the true label (tables) when known
    tokens: list[str] = field(default_factory=list)  # language models: the input tokens
    values: list[float] = field(default_factory=list)  # tables: the input's feature values
    delta: float | None = None  # integrated gradients: the completeness gap (sum of scores vs output change)


@dataclass
class Explanation:
    run_id: str
    run_name: str
    step: int
    model: str  # mlp | cnn | gpt | ...
    kind: str  # table | image | tokens
    method: str
    features: list[str] = field(default_factory=list)  # tables and images: a name per score
    image_shape: list[int] = field(default_factory=list)  # images: [height, width]
    items: list[Attribution] = field(default_factory=list)
    importance: list[tuple[str, float]] = field(default_factory=list)  # tables: mean |score|, highest first
    sample: int = 0  # inputs the importance is averaged over

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = "lmdev.explain/1"
        d["importance"] = [{"feature": f, "score": s} for f, s in self.importance]
        return finite_json(d)

