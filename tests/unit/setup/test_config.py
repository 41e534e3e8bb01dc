"""pip's configuration is translated for uv (which does not read it), and lmdev's settings win."""

from __future__ import annotations

import os

import pytest

from lmdev.errors import LmdevError
from lmdev.setup.config import load_sources, read_pip_config


def test_pip_files_and_env_are_translated_to_uv_arguments(tmp_path):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = http://mirror/simple\nextra-index-url = file:///a/simple file:///b/simple\n"
                    "find-links = /opt/wheels\n[install]\nconstraint = /etc/c.txt\n")
    env = {"HOME": str(tmp_path), "XDG_CONFIG_DIRS": str(tmp_path / "none"), "PIP_CONFIG_FILE": str(conf)}
    src = load_sources(tmp_path, env)
    assert src.uv_args() == ["--default-index", "http://mirror/simple", "--index", "file:///a/simple",
                             "--index", "file:///b/simple", "--find-links", "/opt/wheels",
                             "--constraint", "/etc/c.txt"]
    assert src.pip_args()[:2] == ["--index-url", "http://mirror/simple"]
    # environment variables override the files, as in pip
    src = load_sources(tmp_path, {**env, "PIP_FIND_LINKS": "/x /y"})
    assert src.find_links == ["/x", "/y"] and src.origin["find-links"] == "$PIP_FIND_LINKS"


def test_devnull_config_file_disables_pip_files(tmp_path):
    assert read_pip_config({"HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull}) == {}


def test_project_settings_and_flags_win_and_the_torch_index_goes_first(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.lmdev.setup]\ntorch-index = "http://mirror/torch/{backend}"\nfind-links = ["wheels"]\nstacks = ["jax"]\n')
    env = {"HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://pip/simple"}
    src = load_sources(tmp_path, env)
    assert src.torch_index == "http://mirror/torch/{backend}"
    assert src.find_links == [str(tmp_path / "wheels")] and src.stacks == ["jax"]
    flagged = load_sources(tmp_path, env, flags={"torch-index": "file:///t/simple"})
    assert flagged.torch_index == "file:///t/simple"
    pinned = src.with_torch_index("http://mirror/torch/cu126")
    assert pinned.uv_args()[:4] == ["--default-index", "http://pip/simple", "--index", "http://mirror/torch/cu126"]


def test_unknown_setting_is_refused(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.lmdev.setup]\ntorch_index = "x"\n')
    with pytest.raises(LmdevError, match="unknown setting 'torch_index'"):
        load_sources(tmp_path, {"HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull})


def test_the_installer_is_uv_when_installed_else_pip(monkeypatch, tmp_path):
    import sys

    from lmdev.setup import installer

    assert installer.default_installer() == "uv"  # a dependency of lmdev
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # no uv beside this Python
    monkeypatch.setenv("PATH", str(tmp_path))  # and none on PATH
    assert installer.default_installer() == "pip"
