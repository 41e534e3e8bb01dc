"""Each worker's share of the cores: cpus / workers threads, unless the user chose."""

from __future__ import annotations

import pytest

from lmdev.train.launch import threads_per_worker, worker_thread_env, worker_threads


@pytest.mark.parametrize("cpus, workers, threads", [(2, 2, 1), (16, 2, 8), (16, 3, 5), (2, 4, 1), (1, 1, 1), (8, 1, 8)])
def test_threads_per_worker(cpus: int, workers: int, threads: int) -> None:
    assert threads_per_worker(cpus, workers) == threads


def test_the_launcher_sets_omp_and_mkl_for_the_workers() -> None:
    env = worker_thread_env({"PATH": "/bin"}, workers=2, cpus=16)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "8" and env["PATH"] == "/bin"


def test_a_value_the_user_set_is_kept() -> None:
    env = worker_thread_env({"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": ""}, workers=2, cpus=16)
    assert env["OMP_NUM_THREADS"] == "3" and env["MKL_NUM_THREADS"] == "8"


def test_the_caller_environment_is_not_changed() -> None:
    mine = {"PATH": "/bin"}
    worker_thread_env(mine, workers=2, cpus=4)
    assert mine == {"PATH": "/bin"}


@pytest.mark.parametrize("value, threads", [("4", 4), (" 2 ", 2), ("0", None), ("", None), ("x", None)])
def test_worker_threads_reads_omp(value: str, threads: int | None) -> None:
    assert worker_threads({"OMP_NUM_THREADS": value}) == threads


def test_each_launch_has_its_own_rendezvous_id() -> None:
    """torchrun's default id, "none", is shared by every launch at one address: a second
    training would join the first's run. One node: a fresh id per launch; several: the one
    the user (LMDEV_RDZV_ID) or Slurm gives, else the launch is refused."""
    from lmdev.errors import LmdevError
    from lmdev.train.launch import check_rendezvous_id, rendezvous_id, torchrun_command

    one = [torchrun_command(["c.yaml"], 2, 1, master_addr="127.0.0.1") for _ in range(2)]
    ids = [[a for a in cmd if a.startswith("--rdzv-id=")] for cmd in one]
    assert all(len(i) == 1 for i in ids) and ids[0] != ids[1]
    assert rendezvous_id(2, {"LMDEV_RDZV_ID": "exp-7"}) == "exp-7"
    assert rendezvous_id(2, {"SLURM_JOB_ID": "4242"}) == "slurm-4242"
    assert rendezvous_id(2, {}) is None
    with pytest.raises(LmdevError, match="needs an id that every node shares"):
        check_rendezvous_id(2, {})
    check_rendezvous_id(2, {"LMDEV_RDZV_ID": "exp-7"})
    assert not any(a.startswith("--rdzv-id") for a in torchrun_command(["c.yaml"], 2))  # --standalone makes its own


def test_a_worker_reads_its_place_from_the_launcher() -> None:
    from lmdev.train.launch import worker_place

    place = worker_place({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "TORCHELASTIC_RESTART_COUNT": "2",
                          "TORCHELASTIC_RUN_ID": "x"})
    assert (place.rank, place.world, place.local_rank, place.restart, place.launched) == (3, 4, 1, 2, True)
    alone = worker_place({})
    assert (alone.rank, alone.world, alone.launched) == (0, 1, False)
    assert worker_place({"TORCHELASTIC_RUN_ID": "x"}).launched  # torchrun with one worker
