"""The CLI builds only the chosen command's parser: `lmdev --help` lists every command from a static
table without importing any command module, and each listed line is the module's own help."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from lmdev.cli import COMMANDS, SUMMARY, build_parser, chosen_command


def test_the_static_table_is_each_command_modules_help():
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"lmdev.cli.{module}")
        if name in SUMMARY and hasattr(mod, "HELP"):
            assert SUMMARY[name] == mod.HELP, name


def _modules_after(*argv: str) -> set[str]:
    code = ("import sys, contextlib, io\nfrom lmdev.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try: main({list(argv)!r})\n    except SystemExit: pass\n"
            "print(' '.join(m for m in sys.modules if m.startswith('lmdev.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_help_lists_every_command_without_importing_one(capsys):
    assert _modules_after("--help") == set()
    with pytest.raises(SystemExit):
        build_parser(["--help"]).parse_args(["--help"])
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out
    assert SUMMARY["setup"] in " ".join(out.split())


def test_a_command_imports_only_its_own_module():
    assert _modules_after("setup", "--help") == {"lmdev.cli.setup"}
    assert _modules_after("--debug", "--trust", "x.pt", "plan", "--help") == {"lmdev.cli.plan"}


def test_the_chosen_command_is_read_past_top_level_options():
    assert chosen_command(["--debug", "--trust", "setup", "doctor"]) == "doctor"
    assert chosen_command(["--trust=a", "setup", "--dry-run"]) == "setup"
    assert chosen_command(["--help", "setup"]) is None
    assert chosen_command(["no-such-command"]) is None


def test_an_unknown_command_is_refused_with_the_list():
    proc = subprocess.run([sys.executable, "-m", "lmdev", "setpu"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice: 'setpu'" in proc.stderr and "'setup'" in proc.stderr
