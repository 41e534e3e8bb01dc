"""Keep an explanation with its run: the report (docs/schemas/explain.md) in the run's folder as
``explain/<step>-<method>.json``, an artifact row of kind ``explanation`` and an event. Rows are
added to the run as it is: a finished run stays finished (nothing reopens it)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lmdev.errors import LmdevError
from lmdev.explain.types import Explanation
from lmdev.fsutil import atomic_write_text, sha256_file

FOLDER = "explain"  # inside the run's folder
KIND = "explanation"  # the artifact kind the dashboard looks for


def explanation_path(run_folder: Path, step: int, method: str) -> Path:
    """Where the explanation of ``step`` by ``method`` is kept (one per pair: a rerun replaces it)."""
    return run_folder / FOLDER / f"{int(step)}-{method}.json"


def record_explanation(exp: Explanation, home: str | Path | None = None) -> Path:
    """Write ``exp`` into its run's folder (atomically) and record it on the run; returns the file."""
    from lmdev.track.store import Store, run_dir

    store = Store(home)
    try:
        info = store.get_run(exp.run_id)
        path = explanation_path(run_dir(store.home, info.id), exp.step, exp.method)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LmdevError(f"cannot write into the run's folder: {exc}",
                             "check that LMDEV_HOME is writable, or pass --no-record") from None
        atomic_write_text(path, json.dumps(exp.to_dict(), indent=1, allow_nan=False) + "\n")
        rid, now = store.rid(info.id), time.time()
        data = {"step": exp.step, "method": exp.method, "kind": exp.kind, "inputs": len(exp.items),
                "path": f"{FOLDER}/{path.name}"}
        if exp.importance:
            data["top_feature"] = exp.importance[0][0]
        store.insert_batch(rid, events=[(rid, now, "info", f"explained step {exp.step} with {exp.method} "
                                         f"({len(exp.items)} input(s))", json.dumps(data, allow_nan=False))],
                           artifacts=[(rid, str(path), KIND, path.stat().st_size, sha256_file(path), now)])
    finally:
        store.close()
    return path
