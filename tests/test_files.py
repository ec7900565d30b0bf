"""Files written like any tool's (SPEC §4): whole or not at all, the umask's mode for a new file,
an existing file's own mode kept, a symlink written through to its target, a lock for updates."""

from __future__ import annotations

import os
import threading
import time

import pytest

from pytest_netbudget import files


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_file_gets_the_umask_mode(tmp_path, umask_022):
    # Before: mkstemp's 0600 survived the rename, so a committed baseline was private to its writer.
    path = tmp_path / "b.json"
    files.write_atomic(path, "new\n", "the baseline")
    assert path.read_text(encoding="utf-8") == "new\n"
    assert path.stat().st_mode & 0o777 == 0o644  # 0o666 & ~0o022
    os.umask(0o077)
    files.write_atomic(tmp_path / "c.json", "x", "the report")
    assert (tmp_path / "c.json").stat().st_mode & 0o777 == 0o600


def test_an_existing_file_keeps_its_mode(tmp_path, umask_022):
    path = tmp_path / "b.json"
    path.write_text("old", encoding="utf-8")
    path.chmod(0o640)
    files.write_atomic(path, "new\n", "the baseline")
    assert path.read_text(encoding="utf-8") == "new\n"
    assert path.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["b.json"]


def test_a_symlink_is_written_through_to_its_target(tmp_path):
    # Before: os.replace put a regular file where the link was, and the target kept the old text.
    shared = tmp_path / "shared"
    shared.mkdir()
    target = shared / "baseline.json"
    target.write_text("old", encoding="utf-8")
    target.chmod(0o604)
    link = tmp_path / "netbudget-baseline.json"
    link.symlink_to(target)
    files.write_atomic(link, "new\n", "the baseline")
    assert link.is_symlink()
    assert target.read_text(encoding="utf-8") == "new\n"
    assert target.stat().st_mode & 0o777 == 0o604
    assert sorted(os.listdir(shared)) == ["baseline.json"]  # the temporary file was in the target's folder


def test_a_failed_write_names_the_file_and_what_it_is_and_leaves_no_temp(tmp_path):
    target = tmp_path / "dir"
    target.mkdir()
    with pytest.raises(files.WriteError, match=r"dir: cannot write the report: .*; the old file is untouched"):
        files.write_atomic(target, "text", "the report")
    assert target.is_dir()
    assert os.listdir(tmp_path) == ["dir"]
    with pytest.raises(files.WriteError, match="cannot write the baseline"):
        files.write_atomic(tmp_path / "missing" / "b.json", "text", "the baseline")


def test_an_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "b.json"
    path.write_text("old\n", encoding="utf-8")

    def crash(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        files.write_atomic(path, "new\n", "the baseline")
    assert path.read_text(encoding="utf-8") == "old\n"
    assert os.listdir(tmp_path) == ["b.json"]


def test_the_lock_serialises_read_merge_write(tmp_path):
    """Four writers each read the file, wait, and write it with one more line: under the lock
    every line survives (without it they all read the same text and the last one wins)."""
    path = tmp_path / "b.txt"
    path.write_text("", encoding="utf-8")

    def add(line: str) -> None:
        with files.locked(path, "the baseline"):
            text = path.read_text(encoding="utf-8")
            time.sleep(0.05)
            files.write_atomic(path, text + line + "\n", "the baseline")

    threads = [threading.Thread(target=add, args=(f"line {index}",)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(path.read_text(encoding="utf-8").split("\n")[:-1]) == [f"line {index}" for index in range(4)]
    assert os.listdir(tmp_path) == ["b.txt"]  # the lock file is gone once nobody holds it


HOLD_THE_LOCK = """
import sys, time
from pathlib import Path
from pytest_netbudget import files

path, ready, release = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
with files.locked(path, "the baseline"):
    ready.touch()
    deadline = time.monotonic() + 60
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""


def hold_the_lock(tmp_path, path):
    """Another process that holds the lock on ``path`` until ``release`` exists."""
    import subprocess
    import sys

    ready, release = tmp_path / "ready", tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(path), str(ready), str(release)])
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return holder, release


def test_a_wait_on_another_process_s_lock_names_the_holder_after_about_two_seconds(tmp_path):
    # Before: the waiting process said nothing, however long it waited.
    path = tmp_path / "b.json"
    holder, release = hold_the_lock(tmp_path, path)
    said: list[tuple[float, str]] = []
    start = time.monotonic()
    threading.Timer(files.WAIT_NOTICE_S + 1.0, release.touch).start()
    try:
        with files.locked(path, "the baseline", on_wait=lambda text: said.append((time.monotonic() - start, text))):
            pass
    finally:
        release.touch()
        holder.wait(timeout=60)
    assert len(said) == 1
    after, text = said[0]
    assert after >= files.WAIT_NOTICE_S
    assert text.startswith(f"waiting to write the baseline {path}: .b.json.lock is held by pid {holder.pid} on ")
    assert "-c" in text  # the holder's command line


def test_an_update_says_while_it_waits_who_holds_the_baseline(pytester, project, tmp_path, preloaded):
    project('[tool.netbudget.models.tiny]\nfactory = "mymodels:Tiny"\ninput_shape = [1, 10]\n')
    holder, release = hold_the_lock(tmp_path, pytester.path / "netbudget-baseline.json")
    threading.Timer(files.WAIT_NOTICE_S + 1.0, release.touch).start()
    try:
        result = pytester.runpytest("--netbudget", "--netbudget-update")
    finally:
        release.touch()
        holder.wait(timeout=60)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            f"netbudget: waiting to write the baseline *netbudget-baseline.json: .netbudget-baseline.json.lock is "
            f"held by pid {holder.pid} on *",
            "netbudget: baseline updated: *",
        ]
    )
