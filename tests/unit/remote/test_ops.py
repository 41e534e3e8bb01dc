"""The project files a sync sends, and the follow protocol."""

import json
import subprocess

from lmdev.remote import ops
from lmdev.remote.bootstrap import MARK, parse_result


def test_project_files_honour_gitignore(tmp_path):
    (tmp_path / "train.py").write_text("print(1)\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(b"0" * 10)
    (tmp_path / ".gitignore").write_text("data/\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    assert ops.project_files(tmp_path) == [".gitignore", "train.py"]


def test_project_files_without_git_skip_build_folders(tmp_path):
    (tmp_path / "a.py").write_text("")
    for d in (".lmdev", "__pycache__", ".venv"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "x").write_text("")
    assert ops.project_files(tmp_path) == ["a.py"]


def test_follow_separates_log_lines_progress_and_end():
    lines, progress = [], []
    f = ops.Follow(on_line=lines.append, on_progress=progress.append)
    for line in ["hello", MARK + json.dumps({"offset": 6}), MARK + json.dumps({"progress": {"step": 3}}),
                 "@lmdev not json", MARK + json.dumps({"end": {"exit_code": 0}})]:
        f.feed(line)
    assert lines == ["hello", "@lmdev not json"] and progress == [{"step": 3}]
    assert f.offset == 6 and f.end == {"exit_code": 0}


def test_parse_result_takes_the_last_result_line():
    out = "noise\n" + MARK + json.dumps({"result": 1}) + "\n" + MARK + json.dumps({"result": {"a": 2}}) + "\n"
    assert parse_result(out) == {"a": 2}


def test_node_argv_gives_each_node_its_rank_and_the_job_as_rendezvous_id():
    from lmdev.remote.cluster import Rendezvous, node_argv

    argv = node_argv(["cfg.yaml"], 1, 1, Rendezvous("10.0.0.1", 29600, 2, "job-1"))
    assert argv[0] == "{python}" and "--node-rank=1" in argv and "--nnodes=2" in argv
    assert "--master-addr=10.0.0.1" in argv and "--master-port=29600" in argv and "--rdzv-id=job-1" in argv
    assert argv.index("--rdzv-id=job-1") < argv.index("-m", 3) and argv[-3:] == ["lmdev", "train", "cfg.yaml"]
