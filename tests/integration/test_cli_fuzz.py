"""Random names, numbers, files and paths fed to every `lmdev` command: no traceback, exit 0, 1 or 2.

The commands run in this process (``lmdev.cli.main`` with stdout and stderr captured as a UTF-8
terminal would take them), which is what keeps a few hundred cases inside a minute. Nothing
long-running starts: ``train`` only resolves its config (``--print-config``) or prints its
launch (``--dry-run``), ``ui`` binds its port and returns instead of serving, ``bench`` and
``demo`` get only options that are refused, ``run`` only scripts that do not exist.
"""

from __future__ import annotations

import io
import json
import os
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

pytest.importorskip("hypothesis", reason="the fuzz test needs hypothesis (pip install '.[test]')")
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import lmdev
from lmdev.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "digits_mlp.yaml"
# CI runs the same cases each time (derandomized); LMDEV_FUZZ_RANDOM=1 draws new ones, and
# LMDEV_FUZZ_EXAMPLES=N runs N per command instead of 25.
FUZZ = settings(max_examples=int(os.environ.get("LMDEV_FUZZ_EXAMPLES", "25")), deadline=None,
                derandomize=os.environ.get("LMDEV_FUZZ_RANDOM") != "1",
                database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                      HealthCheck.filter_too_much])


# -- running a command ----------------------------------------------------------------------------

def call(argv: list[str]) -> tuple[int, str, str]:
    """``lmdev ARGV`` in this process: (exit code, stdout, stderr); an exception that escapes
    ``main`` is what a user would see as a traceback (exit code -1 here)."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")  # as Python's stderr
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: --help, usage errors
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        except BaseException:  # noqa: BLE001 - anything else reaches the user as a traceback
            err.write(traceback.format_exc())
            code = -1
    texts = []
    for stream in (out, err):
        try:
            stream.flush()
        except (UnicodeError, ValueError):
            pass
        texts.append(stream.buffer.getvalue().decode("utf-8", "replace"))
    return code, texts[0], texts[1]


COLLECT = os.environ.get("LMDEV_FUZZ_COLLECT")  # a file: record failures there instead of failing


def check(argv: list[str]) -> None:
    code, _, err = call(argv)
    if COLLECT and ("Traceback" in err or code not in (0, 1, 2)):
        with open(COLLECT, "a", encoding="utf-8") as f:
            f.write(json.dumps({"argv": argv, "code": code, "err": err[-1500:]}) + "\n")
        return
    assert "Traceback" not in err and code in (0, 1, 2), f"lmdev {argv!r} -> exit {code}\n{err[-4000:]}"


# -- what is fed ----------------------------------------------------------------------------------

# text a shell can pass: no NUL; lone surrogates stand for bytes that are not UTF-8
_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
names = st.one_of(
    st.text(_chars, max_size=24),
    st.sampled_from(["", " ", "..", "../../x", "/", "-", "--", "[/]", "[bold]", "\\[", "%", "_", "*", "a" * 300,
                     "\udcff", "run\nname", "\x1b[31m", "-rf", "~", "$HOME", "名前"]),
)
numbers = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", "1" * 400,
                     "-0", "0", "-1", "0x10", "1_000", "1e-400", "9223372036854775808", "1" + "0" * 30,
                     "2**64", "1,5", "abc"]),
)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(_chars, max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(_chars, max_size=8), inner, max_size=4),
    max_leaves=12)
contents = st.one_of(
    st.binary(max_size=200),
    st.just(b""),
    st.text(_chars, max_size=60).map(lambda t: t.encode("utf-16")),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"1e400", b"9" * 5000, b"NaN", b"-Infinity", b"{}", b"[]", b"null", b"{\"a\": {\"b\": [[[]]]}}",
                     b"a: &a [*a, *a]", b"lr: 1e400", b"model: {type: mlp}", b"\xef\xbb\xbfname: x", b"\xff\xfe",
                     b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"]),
)
suffixes = st.sampled_from(["", ".yaml", ".yml", ".toml", ".json", ".safetensors", ".txt"])


class Files:
    """Paths for a case: a new file with random content, a folder, a missing path, odd names."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.n = 0

    def new(self, data: bytes, suffix: str) -> str:
        self.n += 1
        path = self.base / f"f{self.n}{suffix}"
        path.write_bytes(data)
        return str(path)

    def folder(self) -> str:
        self.n += 1
        path = self.base / f"d{self.n}"
        path.mkdir()
        return str(path)

    def odd(self, kind: str) -> str:
        """An odd path to read from; as an output, "devnull" is a FIFO of our own (never /dev/null:
        a run as root must not be able to replace a device node of the machine)."""
        return {"missing": str(self.base / "missing" / "x"), "folder": str(self.base), "devnull": os.devnull,
                "markup": str(self.base / "[bold]x[/]"), "dotdot": str(self.base / ".." / "nowhere" / "x"),
                "long": str(self.base / ("a" * 300)), "root": "/"}[kind]


    def out(self, kind: str) -> str:
        """An odd path to write to: as ``odd``, but a FIFO and a symlink of our own for the special
        files, and a new path for "new"."""
        if kind == "devnull":
            fifo = self.base / "fifo"
            if not fifo.exists():
                os.mkfifo(fifo)
            return str(fifo)
        if kind == "symlink":
            link = self.base / "link"
            if not link.is_symlink():
                (self.base / "link-target").write_text("keep")
                link.symlink_to(self.base / "link-target")
            return str(link)
        if kind == "new":
            self.n += 1
            return str(self.base / f"out{self.n}")
        return self.odd(kind)


ODD = ["missing", "folder", "devnull", "markup", "dotdot", "long", "root"]
odd_paths = st.sampled_from(ODD)
out_paths = st.sampled_from([*ODD, "symlink", "new"])


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A working folder with a small store (including a run with markup in its name and a damaged
    one) as LMDEV_HOME; no launcher variables."""
    monkeypatch.chdir(tmp_path)
    home = tmp_path / ".lmdev"
    monkeypatch.setenv("LMDEV_HOME", str(home))
    monkeypatch.setenv("LMDEV_TELEMETRY", "0")
    monkeypatch.setenv("COLUMNS", "120")
    for var in ("LMDEV_RUN_ID", "LMDEV_RUN_NAME", "LMDEV_READ_ONLY", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    for name in ("alpha", "[bold]beta[/]", "gamma"):
        with lmdev.init(name, config={"lr": 0.1, "name": name}) as run:
            run.log({"loss": 1.0, "[/]": float("nan")})
    import sqlite3

    with sqlite3.connect(home / "lmdev.db") as conn:
        conn.execute("UPDATE runs SET config = '{broken' WHERE name = 'gamma'")
    work = tmp_path / "cases"
    work.mkdir()
    return Files(work)


# -- the commands ---------------------------------------------------------------------------------

# Inputs known to crash a command, skipped so the rest of the command stays fuzzed (none today:
# every crash the fuzz found is fixed; add one here only with the owner and the exact input).
def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


@FUZZ
@given(data=contents, suffix=suffixes)
def test_doctor_from_a_random_snapshot(place, data, suffix):
    check(["doctor", "--from", place.new(data, suffix), "--json"])


@FUZZ
@given(data=contents, suffix=suffixes, extra=st.sampled_from([[], ["--json"], ["--html", "OUT"], ["--rules"]]))
def test_doctor_options(place, data, suffix, extra):
    snapshot = place.new(data, suffix)
    extra = [place.odd("folder") if a == "OUT" else a for a in extra]
    check(["doctor", "--from", snapshot, *extra])


@FUZZ
@given(data=contents, suffix=suffixes)
def test_train_a_random_config(place, data, suffix):
    check(["train", place.new(data, suffix), "--print-config"])


@FUZZ
@given(key=st.sampled_from(["optimizer.lr", "train.max_steps", "data.batch_size", "seed", "model.hidden",
                            "checkpoint.keep", "precision", "name", "nope.x", "", "model.kwargs"]),
       value=st.one_of(numbers, names), mode=st.sampled_from(["--print-config", "--dry-run"]))
def test_train_overrides_and_numbers(place, key, value, mode):
    argv = ["train", str(EXAMPLE), "--set", f"{key}={value}", mode]
    if mode == "--dry-run":
        argv += ["--nproc", "2"]
    check(argv)


@FUZZ
@given(option=st.sampled_from(["--nproc", "--nnodes", "--node-rank", "--master-port", "--max-restarts",
                               "--join-timeout", "--name", "--resume", "--master-addr", "--rdzv-endpoint"]),
       value=st.one_of(numbers, names))
def test_train_launch_options(place, option, value):
    argv = ["train", str(EXAMPLE), option, value, "--dry-run"]
    check(argv)


@FUZZ
@given(manifest=contents, extra=st.lists(st.tuples(names, contents), max_size=3),
       out=out_paths.filter(lambda k: k != "root"))
def test_checkpoint_verify_and_export(place, manifest, extra, out):
    folder = Path(place.folder())
    (folder / "manifest.json").write_bytes(manifest)
    for name, data in extra:
        if name and "/" not in name and name not in (".", "..") and "\udcff" not in name:
            try:
                (folder / name[:50]).write_bytes(data)
            except OSError:
                pass
    target = place.out(out)
    for argv in (["checkpoint", "verify", str(folder)], ["checkpoint", "export", str(folder), target]):
        check(argv)


@FUZZ
@given(path=st.one_of(odd_paths.map(lambda k: ("odd", k)), st.tuples(contents, suffixes)))
def test_checkpoint_on_random_files(place, path):
    target = place.odd(path[1]) if path[0] == "odd" else place.new(*path)
    out = str(place.base / "export.safetensors")
    for argv in (["checkpoint", "verify", target], ["checkpoint", "export", target, out]):
        check(argv)


@FUZZ
@given(verb=st.sampled_from(["list", "show", "rm", "export", "compare"]), ref=names, ref2=names,
       limit=numbers, fmt=st.sampled_from(["csv", "json", "tensorboard", "xml"]),
       out=out_paths, read_only=st.booleans(),
       odd_home=st.one_of(st.none(), st.none(), odd_paths))
def test_runs(place, verb, ref, ref2, limit, fmt, out, read_only, odd_home):
    ro = ["--read-only"] if read_only and verb != "rm" else []
    target = place.out(out)
    home = ["--home", place.odd(odd_home)] if odd_home else []
    argv = {
        "list": ["runs", *home, "list", "--limit", limit, *ro],
        "show": ["runs", *home, "show", ref, *ro],
        "rm": ["runs", *home, "rm", ref, "--yes"],
        "export": ["runs", *home, "export", ref, "--format", fmt, "-o", target, *ro],
        "compare": ["runs", *home, "compare", ref, ref2, *ro],
    }[verb]
    check(argv)
    if verb in ("list", "show", "compare"):
        check(argv + ["--json"])


@settings(FUZZ, max_examples=max(3, FUZZ.max_examples // 4))  # five commands per case
@given(ref=st.sampled_from(["alpha", "[bold]beta[/]", "gamma"]), fmt=st.sampled_from(["csv", "json"]),
       out=out_paths)
def test_runs_on_real_runs(place, ref, fmt, out):
    target = place.out(out)
    for argv in (["runs", "show", ref], ["runs", "show", ref, "--json"], ["runs", "list"],
                 ["runs", "compare", "alpha", ref], ["runs", "export", ref, "--format", fmt, "-o", target]):
        check(argv)


@FUZZ
@given(model=st.one_of(names, st.sampled_from(["gpt2", "llama-3-8b", "bert-base"]), st.tuples(contents, suffixes)),
       option=st.sampled_from(["--batch", "--seq", "--tokens", "--mfu", "--devices", "--grad-accum",
                               "--lora-rank", "--new-tokens", "--hardware"]),
       value=st.one_of(numbers, names))
def test_plan(place, model, option, value):
    if isinstance(model, tuple):
        model = place.new(*model)
    argv = ["plan", model, option, value]
    check(argv)


@FUZZ
@given(port=numbers, token=st.one_of(st.none(), names, st.text(_chars, min_size=20, max_size=60)),
       host=st.sampled_from(["127.0.0.1", "localhost", "0.0.0.0", "::1", "127.0.0.2", "256.1.1.1", "", "[::1]",
                             "example.invalid"]),
       no_auth=st.booleans(), read_only=st.booleans(), home=st.one_of(st.none(), odd_paths))
def test_ui_options(place, monkeypatch, port, token, host, no_auth, read_only, home):
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)  # never serve
    argv = ["ui", "--port", port, "--host", host]
    argv += ["--token", token] if token is not None else []
    argv += ["--no-auth"] if no_auth else []
    argv += ["--read-only"] if read_only else []
    argv += ["--home", place.odd(home)] if home else []
    check(argv)


@FUZZ
@given(script=st.one_of(names, odd_paths), name=names, project=names,
       interval=numbers)
def test_run_a_missing_or_odd_script(place, script, name, project, interval):
    if script in ODD:
        script = place.odd(script)
    assume(not _is_file(script))  # only scripts that do not exist: nothing is spawned
    check(["run", "--name", name, "--project", project, "--telemetry-interval", interval, script])


@FUZZ
@given(command=st.sampled_from(["bench", "demo", "doctor", "runs", "ui", "plan", "train", "checkpoint", "run"]),
       option=st.one_of(names, st.sampled_from(["--quick=x", "--json=1", "--no-such-option", "-x", "--help"])))
def test_unknown_options_and_help(place, command, option):
    if command in ("bench", "demo", "doctor"):  # these would really run: give them only refused options
        option = option if option in ("--quick=x", "--json=1", "--no-such-option", "-x", "--help") \
            else "--no-such-" + option.encode("ascii", "ignore").decode()
    assume(option not in ("--", "-"))
    check([command, option])


def test_top_level_help_lists_every_command():
    code, out, _ = call(["--help"])
    assert code == 0
    from lmdev.cli import COMMANDS

    for name in COMMANDS:
        assert name in out
