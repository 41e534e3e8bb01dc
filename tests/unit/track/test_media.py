"""Histograms, images, text and tables logged beside scalars, read back with Store.media."""

import zlib

import numpy as np
import pytest

import lmdev
from lmdev.errors import LmdevError
from lmdev.track.store import Store


def media(home, ref, **kw):
    with Store(home) as s:
        run = s.get_run(ref)
        return s.media(run, **kw), s.metrics(run), s.media_keys(run)


def test_histogram_image_text_table_round_trip(home):
    torch = pytest.importorskip("torch")
    weights = torch.arange(1000, dtype=torch.float32)
    with lmdev.init("media") as run:
        run.log({"loss": 0.5, "w": lmdev.Histogram(weights, bins=10)}, step=3)
        weights.zero_()  # changed after logging: what was logged stays
        img = np.zeros((2, 3, 3), dtype=np.float32)
        img[0, 0] = (1.0, 0.0, 0.0)
        run.log({"pred": lmdev.Image(img, caption="a cat"), "note": lmdev.Text("hello"),
                 "tbl": lmdev.Table(["a", "b"], [[1, "x"], [2.5, None]])}, step=4)
    items, metrics, keys = media(home, "media")
    assert keys == {"note": "text", "pred": "image", "tbl": "table", "w": "histogram"}
    assert [p[:2] for p in metrics["loss"]] == [(3, 0.5)] and set(metrics) == {"loss"}
    by_key = {i.key: i for i in items}
    hist = by_key["w"].payload
    assert by_key["w"].step == 3 and len(hist["edges"]) == 11 and hist["counts"] == [100] * 10
    assert hist["min"] == 0.0 and hist["max"] == 999.0 and hist["count"] == 1000
    image = by_key["pred"]
    assert image.payload == {"width": 3, "height": 2, "channels": 3, "caption": "a cat"}
    png = image.path.read_bytes()
    assert png.startswith(b"\x89PNG") and image.path.is_relative_to(home / "runs")
    raw = zlib.decompress(png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8])
    assert raw[:4] == bytes([0, 255, 0, 0])  # filter byte, then the red pixel
    assert by_key["note"].payload == {"text": "hello"}
    assert by_key["tbl"].payload == {"columns": ["a", "b"], "rows": [[1, "x"], [2.5, None]]}
    assert [i.key for i in media(home, "media", kind="image")[0]] == ["pred"]


def test_histogram_of_numpy_counts_nonfinite_apart():
    h = lmdev.Histogram(np.array([0.0, 1.0, np.nan, np.inf, 1.0]), bins=2)
    assert h.counts == [1, 2] and h.nonfinite == 2 and h.edges == [0.0, 0.5, 1.0]


def test_pil_and_chw_images():
    pil = pytest.importorskip("PIL.Image")
    assert lmdev.Image(pil.new("RGB", (5, 4))).payload()["width"] == 5
    chw = lmdev.Image(np.ones((3, 8, 6), dtype=np.uint8) * 7)
    assert (chw.height, chw.width) == (8, 6) and chw.pixels.max() == 7


def test_limits_are_clear_errors():
    with pytest.raises(LmdevError, match="over the limit"):
        lmdev.Table(["a"], [[i] for i in range(200_000)])
    with pytest.raises(LmdevError, match="2 cells for 1 columns"):
        lmdev.Table(["a"], [[1, 2]])
    with pytest.raises(LmdevError, match="shape"):
        lmdev.Image(np.zeros((2, 2, 7)))
    with pytest.raises(LmdevError, match="bins"):
        lmdev.Histogram([1.0], bins=0)


def test_rewind_drops_media_past_the_step(home):
    run = lmdev.init("mrw")
    for i in range(5):
        run.log({"t": lmdev.Text(str(i))}, step=i)
    assert run.rewind(2) == 2
    run.finish()
    items, _, _ = media(home, "mrw")
    assert [i.step for i in items] == [0, 1, 2]
