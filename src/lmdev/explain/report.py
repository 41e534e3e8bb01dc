"""The explanation as a self-contained HTML page: feature bars, pixel heat maps, tokens shaded
by their attribution (red: pushes towards the prediction, blue: against)."""

from __future__ import annotations

import html

from lmdev.explain.types import Attribution, Explanation


def colour(score: float, scale: float) -> str:
    """A background colour: red for positive, blue for negative, white for zero."""
    v = 0.0 if scale <= 0 else max(-1.0, min(1.0, score / scale))
    fade = int(255 * (1 - abs(v)))
    return f"rgb(255,{fade},{fade})" if v >= 0 else f"rgb({fade},{fade},255)"


def _scale(scores: list[float]) -> float:
    return max((abs(s) for s in scores), default=0.0)


def _item(exp: Explanation, a: Attribution) -> str:
    e = html.escape
    head = f"<h3>{e(a.input)}</h3><p>predicted <b>{e(repr(a.target) if exp.kind == 'tokens' else a.target)}</b>"
    if a.label is not None:
        head += f", label <b>{e(a.label)}</b>"
    if a.delta is not None:
        head += f" <span class=dim>(completeness gap {a.delta:.2g})</span>"
    head += "</p>"
    scale = _scale(a.scores)
    if exp.kind == "tokens":
        spans = "".join(f"<span class=tok title='{s:.4g}' style='background:{colour(s, scale)}'>{e(t)}</span>"
                        for t, s in zip(a.tokens, a.scores))
        return head + f"<p class=text>{spans}</p>"
    if exp.kind == "image":
        h, w = exp.image_shape
        rows = "".join("<tr>" + "".join(
            f"<td title='{exp.features[r * w + c]}: {a.scores[r * w + c]:.4g}' "
            f"style='background:{colour(a.scores[r * w + c], scale)}'></td>" for c in range(w)) + "</tr>"
            for r in range(h))
        return head + f"<table class=heat>{rows}</table>"
    top = sorted(range(len(a.scores)), key=lambda j: -abs(a.scores[j]))[:10]
    rows = "".join(f"<tr><td>{e(exp.features[j])}</td><td>{a.values[j]:.4g}</td><td>{a.scores[j]:+.4g}</td></tr>"
                   for j in top)
    return head + f"<table><tr><th>feature</th><th>value</th><th>attribution</th></tr>{rows}</table>"


def to_html(exp: Explanation) -> str:
    e = html.escape
    parts = [f"<h1>lmdev explain — run {e(exp.run_id)} ({e(exp.run_name)}) at step {exp.step}</h1>",
             f"<p>{e(exp.model)} model · {e(exp.kind)} inputs · method <b>{e(exp.method)}</b></p>"]
    if exp.importance:
        top = exp.importance[:20]
        scale = _scale([s for _, s in top])
        bars = "".join(f"<tr><td>{e(f)}</td><td><div class=bar style='width:{300 * s / scale if scale else 0:.0f}px'>"
                       f"</div></td><td>{s:.4g}</td></tr>" for f, s in top)
        parts.append(f"<h2>Feature importance</h2><p class=dim>mean |attribution| over {exp.sample} validation "
                     f"rows</p><table>{bars}</table>")
    parts.append("<h2>Inputs</h2>" + "".join(_item(exp, a) for a in exp.items))
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}.dim{color:#777}"
             ".bar{background:#c33;height:.8em}.tok{font-family:monospace;white-space:pre;padding:0 1px}"
             ".heat td{width:22px;height:22px;border:1px solid #eee}td,th{padding:2px 8px;text-align:left}")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>lmdev explain {e(exp.run_id)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
