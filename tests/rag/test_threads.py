"""torch's CPU threads follow the cores this process may use, including a container's CPU quota."""

from __future__ import annotations

import os

import pytest
import torch

from rag.models import configure_threads, usable_cores

AFFINITY = len(os.sched_getaffinity(0))


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    "cpu_max, expected",
    [
        ("max 100000\n", AFFINITY),  # no quota
        ("100000 100000\n", 1),  # --cpus 1
        ("50000 100000\n", 1),  # --cpus 0.5 still gets one thread
        # a quota above the affinity does not add cores
        (f"{AFFINITY * 100000 + 1} 100000\n", AFFINITY),
    ],
)
def test_usable_cores_reads_the_cgroup_quota(tmp_path, cpu_max, expected):
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    assert usable_cores(path) == expected


def test_unreadable_or_odd_cgroup_files_fall_back_to_the_affinity(tmp_path):
    assert usable_cores(tmp_path / "missing") == AFFINITY
    odd = tmp_path / "cpu.max"
    odd.write_text("garbage")
    assert usable_cores(odd) == AFFINITY


def test_configure_threads_sets_torch_unless_the_user_chose(tmp_path, restore_threads):
    quota = tmp_path / "cpu.max"
    quota.write_text("100000 100000\n")
    torch.set_num_threads(AFFINITY + 3)
    assert configure_threads({}, quota) == 1 and torch.get_num_threads() == 1
    torch.set_num_threads(AFFINITY + 3)
    # the user's choice stands
    assert configure_threads({"OMP_NUM_THREADS": "3"}, quota) == AFFINITY + 3
