"""Targets, names and the remotes file."""

import json

import pytest

from lmdev.errors import LmdevError
from lmdev.remote import hosts
from lmdev.remote.hosts import Remote, parse_target


@pytest.mark.parametrize("text, want", [
    ("gpu1", (None, "gpu1", None)),
    ("me@gpu1", ("me", "gpu1", None)),
    ("me@10.0.0.2:2222", ("me", "10.0.0.2", 2222)),
    ("[::1]:22", (None, "::1", 22)),
    ("fe80::1", (None, "fe80::1", None)),
])
def test_parse_target(text, want):
    assert parse_target(text) == want


@pytest.mark.parametrize("bad", ["me@", "gpu1:0", "gpu1:70000", "gpu1:ssh", ":22"])
def test_parse_target_refuses_bad_input(bad):
    with pytest.raises(LmdevError):
        parse_target(bad)


def test_registry_round_trip_never_holds_a_password(tmp_path):
    reg = hosts.Registry()
    reg.remotes["a"] = Remote("a", "gpu1", user="me", port=2222, key="/k", jump="bastion")
    reg.clusters["c"] = hosts.Cluster("c", ["a"], port=29600)
    path = hosts.save(reg, tmp_path)
    text = path.read_text()
    assert "password" not in text.lower()
    back = hosts.load(tmp_path)
    assert back.remotes["a"].target == "me@gpu1:2222" and back.clusters["c"].hosts == ["a"]
    assert json.loads(text)["remotes"]["a"]["root"] == "~/.lmdev-remote"


def test_unknown_names_and_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(LmdevError, match="no remote named 'x'"):
        hosts.get("x", tmp_path)
    with pytest.raises(LmdevError, match="no cluster named"):
        hosts.get_cluster("c", tmp_path)
    (tmp_path / hosts.FILE_NAME).write_text("[1, 2]")
    with pytest.raises(LmdevError, match="not a remotes file"):
        hosts.load(tmp_path)
    with pytest.raises(LmdevError, match="bad name"):
        hosts.check_name("no spaces")


def test_cluster_naming_a_removed_remote_is_refused(tmp_path):
    reg = hosts.Registry(clusters={"c": hosts.Cluster("c", ["gone"])})
    hosts.save(reg, tmp_path)
    with pytest.raises(LmdevError, match="no longer exist: gone"):
        hosts.get_cluster("c", tmp_path)
