"""``lmdev data check``: run the checks on a training config's data or on files, and write the
rows of each finding to a file. :func:`check_for_training` is what ``lmdev train`` runs first."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lmdev.data import labels as lab
from lmdev.data import table as tab
from lmdev.data import text as txt
from lmdev.data.read import TableSource, TextSource, resolve, table_kind
from lmdev.data.types import SHOWN_ROWS, Finding, Report, SplitInfo
from lmdev.errors import LmdevError

SAMPLE_SIZE = 20_000  # rows the slow checks (label errors, leakage) look at
DEFAULT_MAX_TOKENS = 128  # text: a sample longer than this is overlong (data.seq_len's default)


@dataclass
class CheckOptions:
    val: str | None = None  # a validation file
    test: str | None = None  # a test file
    label: str | int | None = None  # tables: the label column (name or index); default the last
    out_dir: Path | None = None  # where each finding's rows file goes; None: no files
    sample_size: int = SAMPLE_SIZE
    seed: int = 0
    fast: bool = False  # skip the model-based label-error check (what training runs)
    max_tokens: int | None = None  # text: overlong above this many tokens
    task: str = "auto"  # auto | classification | regression


@dataclass
class Sources:
    kind: str  # table | text
    splits: list[Any] = field(default_factory=list)  # TableSource or TextSource, train first
    tokenizer: str = "byte"


# --------------------------------------------------------------------------- finding the data


def sources_from_path(target: str, opts: CheckOptions) -> Sources:
    """Files given on the command line (or the bundled set ``digits`` / ``synthetic``)."""
    if target == "digits":
        from lmdev.train.data import load_digits

        x, y = load_digits()
        return Sources("table", [TableSource("train", None, "digits", arrays=(x, y))] + _extra(opts, Path.cwd(), "table"))
    if target == "synthetic":
        from lmdev.train.data import arithmetic_corpus

        return Sources("text", [TextSource("train", None, text=arithmetic_corpus(20000, opts.seed).encode())]
                       + _extra(opts, Path.cwd(), "text"))
    path = resolve(target, Path.cwd())
    kind = table_kind(path)
    if kind == "text":
        return Sources("text", [TextSource("train", path)] + _extra(opts, Path.cwd(), "text"))
    return Sources("table", [TableSource("train", path, kind, opts.label)] + _extra(opts, Path.cwd(), "table"))


def _extra(opts: CheckOptions, base: Path, kind: str) -> list[Any]:
    out: list[Any] = []
    for name, arg in (("val", opts.val), ("test", opts.test)):
        if arg:
            path = resolve(arg, base)
            if kind == "text":
                out.append(TextSource(name, path))
            else:
                if table_kind(path) == "text":
                    raise LmdevError(f"{path} is not a table (csv, npy, npz, parquet)", "give the same format as train")
                out.append(TableSource(name, path, table_kind(path), opts.label))
    return out


def sources_from_config(cfg: Any, base_dir: Path, opts: CheckOptions) -> Sources:
    """The data a training config names, split as training splits it."""
    d = cfg.data
    kind, _, arg = d.type.partition(":")
    opts = replace(opts, val=d.val or opts.val, test=d.test or opts.test,
                   label=opts.label if opts.label is not None else d.target)
    if kind == "digits":
        from lmdev.train.data import load_digits

        x, y = load_digits()
        return Sources("table", _random_split(x, y, d, cfg.seed))
    if kind == "python":
        from lmdev.train.models import load_object

        x, y = (np.asarray(a) for a in load_object(arg, "data")())  # type: ignore[operator]
        return Sources("table", _random_split(x.reshape(len(x), -1), y, d, cfg.seed))
    if kind in ("csv", "npy", "parquet"):
        path = resolve(arg, base_dir)
        return Sources("table", [TableSource("train", path, table_kind(path), opts.label)] + _extra(opts, base_dir, "table"))
    if kind in ("text", "synthetic"):
        if kind == "synthetic":
            from lmdev.train.data import arithmetic_corpus

            train = TextSource("train", None, text=arithmetic_corpus(d.n_examples, cfg.seed).encode())
        else:
            train = TextSource("train", resolve(arg, base_dir))
        splits: list[Any] = [train]
        if not opts.val and d.val_fraction > 0:  # training's split: the last val_fraction of tokens
            size = train.size()
            cut = size - int(size * d.val_fraction)
            splits = [replace(train, stop=cut), replace(train, name="val", start=cut)]
        return Sources("text", splits + _extra(opts, base_dir, "text"), d.tokenizer)
    raise LmdevError(f"lmdev data check does not read {kind} data", "check a csv, npy, parquet or text file instead")


def _random_split(x: np.ndarray, y: np.ndarray, d: Any, seed: int) -> list[TableSource]:
    """In-memory data split exactly as training splits it (lmdev.train.data's permutation)."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(round(len(x) * d.val_fraction))
    out = [TableSource("train", None, "digits", arrays=(x[order[n_val:]], y[order[n_val:]]))]
    if n_val:
        out.append(TableSource("val", None, "digits", arrays=(x[order[:n_val]], y[order[:n_val]])))
    return out


# --------------------------------------------------------------------------- running the checks


def check(target: str | Path, opts: CheckOptions | None = None) -> Report:
    """Check a training config (.yaml/.yml/.toml/.json) or a data file, plus opts.val/test."""
    opts = opts or CheckOptions()
    path = Path(target)
    if path.suffix.lower() in (".yaml", ".yml", ".toml", ".json"):
        from lmdev.train.config import load_config

        cfg = load_config(path)
        opts = replace(opts, seed=cfg.seed, max_tokens=opts.max_tokens or cfg.data.seq_len,
                       task=cfg.data.task if opts.task == "auto" else opts.task)
        return run_checks(sources_from_config(cfg, path.resolve().parent, opts), opts, str(target))
    return run_checks(sources_from_path(str(target), opts), opts, str(target))


def run_checks(sources: Sources, opts: CheckOptions, label: str) -> Report:
    t0 = time.perf_counter()
    if sources.kind == "table":
        report = _check_tables(sources.splits, opts, label)
    else:
        report = _check_text(sources, opts, label)
    if opts.out_dir is not None:
        write_rows(report, opts.out_dir)
    report.seconds = time.perf_counter() - t0
    return report


def _check_tables(splits: list[TableSource], opts: CheckOptions, label: str) -> Report:
    scans = [tab.TableScan(s, opts.sample_size, opts.seed).run() for s in splits]
    train = scans[0]
    classification = opts.task == "classification" or (opts.task == "auto" and train.classification)
    report = Report(label, [SplitInfo(s.src.name, s.src.source, "table", s.n, s.width, s.src.label_name,
                                      len(s.labels) if classification else 0) for s in scans])
    report.checks = ["duplicates", "near_duplicates", "columns", "labels", "leakage"]
    for s in scans:
        report.findings += _empty(s.src.name, s.n) + tab.duplicate_findings(s) + tab.column_findings(s) \
            + tab.label_findings(s)
    for other in scans[1:]:
        if other.width == train.width:
            report.findings += tab.overlap_findings(train, other)
        else:
            report.findings.append(Finding("split.columns", "severe", f"{other.src.name} has {other.width} "
                                           f"features, train {train.width}", "give files with the same columns",
                                           other.src.name))
    report.checks.append("overlap")
    sample = train.sample
    report.sample_size = len(sample.y)
    if sample.x is not None and len(sample.y):
        scores = lab.feature_scores(sample.x, sample.y, classification, opts.seed)
        leak = lab.leak_finding("train", train.src.columns, scores, classification, len(sample.y))
        report.findings += [leak] if leak else []
        if classification and not opts.fast:
            report.checks.append("label_errors")
            keep = [j for j in range(sample.x.shape[1]) if not (leak and train.src.columns[j] in leak.columns)]
            found = lab.find_label_errors(sample.x[:, keep], sample.y, sample.rows, opts.seed)
            finding = lab.label_error_finding("train", found) if found else None
            report.findings += [finding] if finding else []
    return report


def _check_text(sources: Sources, opts: CheckOptions, label: str) -> Report:
    count = txt.byte_tokens
    if sources.tokenizer == "tiktoken":
        count = txt.tiktoken_counter() or txt.byte_tokens
    max_tokens = opts.max_tokens or DEFAULT_MAX_TOKENS
    scans = [txt.TextScan(s, max_tokens, count).run() for s in sources.splits]
    report = Report(label, [SplitInfo(s.src.name, s.src.source, "text", s.n) for s in scans])
    report.checks = ["duplicates", "near_duplicates", "overlap", "empty", "overlong", "utf8", "lengths"]
    for s in scans:
        report.findings += _empty(s.src.name, s.n) + txt.hygiene_findings(s) + txt.duplicate_findings(s)
    for other in scans[1:]:
        report.findings += txt.overlap_findings(scans[0], other)
    report.sample_size = sum(s.n for s in scans)  # every sample is read: nothing is sampled
    return report


def _empty(split: str, rows: int) -> list[Finding]:
    if rows:
        return []
    return [Finding("split.empty", "severe", f"{split} has no rows", f"give {split} some data", split)]


def write_rows(report: Report, out_dir: Path) -> None:
    """Each finding with more rows than it shows gets a file of all of them (one per line)."""
    from lmdev.fsutil import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    report.out_dir = str(out_dir)
    for f in report.findings:
        if len(f.rows) > SHOWN_ROWS:
            path = out_dir / f"{f.id}.{f.split}.rows.txt"
            atomic_write_text(path, "".join(f"{r}\n" for r in f.rows))
            f.rows_file = str(path)
        f.rows = f.rows[:SHOWN_ROWS]
    import json

    atomic_write_text(out_dir / "report.json", json.dumps(report.to_dict(), indent=1))


def trim_rows(report: Report) -> None:
    for f in report.findings:
        f.rows = f.rows[:SHOWN_ROWS]


# --------------------------------------------------------------------------- before training


class DataCheckFailed(LmdevError):
    exit_code = 1


def check_for_training(cfg: Any, run: Any = None, base_dir: Path | None = None,
                       announce: Callable[[str], None] | None = None) -> Report | None:
    """The fast checks (everything but the model-based label errors) on the data ``cfg`` names,
    per ``cfg.data.check``: off (nothing), warn (record and warn), fail (record, then refuse to
    train when a finding is severe). The report goes to the run's folder as
    ``data-check/report.json`` (an artifact of kind ``data-check``) with an event per finding."""
    mode = getattr(cfg.data, "check", "warn")
    if mode == "off":
        return None
    # every worker checks (the result is the same), so that with `fail` they all stop together
    # instead of the others waiting for rank 0 in a collective; rank 0 alone records and speaks
    main = run is None or getattr(run, "rank", 0) == 0
    run = run if main else None
    announce = announce if main else None
    out_dir = Path(run.dir) / "data-check" if run is not None and getattr(run, "dir", None) else None
    opts = CheckOptions(out_dir=out_dir, seed=cfg.seed, fast=True, max_tokens=cfg.data.seq_len,
                        task=cfg.data.task)
    report = run_checks(sources_from_config(cfg, base_dir or Path.cwd(), opts), opts, "training config")
    if out_dir is None:
        trim_rows(report)
    if run is not None:
        if out_dir is not None:
            run.log_artifact(out_dir / "report.json", kind="data-check")
        for f in report.sorted_findings():
            if f.severity != "info":
                run.event(f"data check: {f.message}", level="warning" if f.severity == "warn" else "error",
                          finding=f.id, fix=f.fix)
    if announce is not None:
        announce_summary(report, announce)
    severe = [f for f in report.findings if f.severity == "severe"]
    if severe and mode == "fail":
        raise DataCheckFailed(f"the data check found {len(severe)} severe problem(s): {severe[0].message}",
                              "fix the data (see `lmdev data check CONFIG`), or set data.check: warn")
    return report


def announce_summary(report: Report, announce: Callable[[str], None]) -> None:
    """One line for the training console, plus the severe and warning findings (rich markup)."""
    from rich.markup import escape

    c = report.counts
    if not c["severe"] and not c["warn"]:
        announce(f"data check: [green]ok[/] ({report.seconds:.1f} s)")
        return
    colour = "red" if c["severe"] else "yellow"
    announce(f"data check: [{colour}]{c['severe']} severe, {c['warn']} warning(s)[/] — details: "
             "[cyan]lmdev data check CONFIG[/]")
    for f in report.sorted_findings():
        if f.severity != "info":
            announce(f"  [{'red' if f.severity == 'severe' else 'yellow'}]{f.severity}[/] {escape(f.message)}")
