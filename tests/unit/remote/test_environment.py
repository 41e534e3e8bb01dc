"""remote setup's pieces: the lock digest cluster check compares, its findings, the index check."""

from lmdev.remote import environment
from lmdev.remote.cluster import lock_findings
from lmdev.setup.lock import Lock, write_lock


def _lock(folder, version="2.9.1", sha="a" * 64, tool=None, name="pylock.toml"):
    folder.mkdir(parents=True, exist_ok=True)
    pkg = {"name": "torch", "version": version, "wheels": [{"url": "file:///x/torch.whl", "hashes": {"sha256": sha}}]}
    write_lock(folder / name, Lock([pkg], "==3.11.*", tool or {}))


def test_lock_digest_is_the_packages_and_their_files_not_where_they_came_from(tmp_path):
    assert environment.lock_digest(tmp_path) is None
    _lock(tmp_path / "a", tool={"plan-digest": "one", "python": "3.11"})
    _lock(tmp_path / "b", tool={"plan-digest": "two", "python": "3.11"})  # another machine's plan, same files
    _lock(tmp_path / "c", sha="b" * 64)
    _lock(tmp_path / "d", version="2.9.0")
    digests = [environment.lock_digest(tmp_path / x) for x in "abcd"]
    assert digests[0] == digests[1] and len(set(digests)) == 3
    _lock(tmp_path / "a", name="pylock.tf.toml")  # a second environment counts too
    assert environment.lock_digest(tmp_path / "a") != digests[0]


def test_lock_findings_name_the_node_that_differs_and_its_fix():
    same = lock_findings({"n1": "abc", "n2": "abc"})
    assert [f.ok for f in same] == [True] and "abc" in same[0].detail
    none = lock_findings({"n1": None, "n2": None})
    assert none[0].ok and "lmdev remote setup" in none[0].detail
    bad = lock_findings({"n1": "abc", "n2": "abc", "n3": "zzz"})
    assert [(f.node, f.ok) for f in bad] == [("n3", False)]
    assert "zzz" in bad[0].detail and "n1, n2" in bad[0].detail and bad[0].fix.startswith("lmdev remote setup n3")
    tie = lock_findings({"n1": "abc", "n2": None})  # the first node is the reference on a tie
    assert [(f.node, f.detail) for f in tie] == [("n2", "no lock, while n1 has lock abc")]


def test_index_check_reads_the_setup_sources_and_tries_each(tmp_path, monkeypatch):
    simple = tmp_path / "simple"
    simple.mkdir()
    for k in ("PIP_CONFIG_FILE", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    (tmp_path / "pyproject.toml").write_text(f'[tool.lmdev.setup]\ntorch-index = "{simple.as_uri()}"\n')
    ok = environment.index_check(tmp_path, index_url=simple.as_uri())
    assert ok["reachable"] and ok["urls"] == {simple.as_uri(): True}
    dead = environment.index_check(tmp_path, index_url="http://127.0.0.1:9/simple", timeout=2)
    assert not dead["reachable"] and dead["urls"]["http://127.0.0.1:9/simple"] is False
    no_torch = environment.index_check(tmp_path, torch_index=(tmp_path / "gone").as_uri(), index_url=simple.as_uri())
    assert not no_torch["reachable"]
