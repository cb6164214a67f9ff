"""Lock files: claimed once, refused while their holder lives, taken over when it is gone."""

import json
import socket
import subprocess
import sys
import time

from ssl_bench.locks import Holder, Lock, read_holder


def _write_holder(folder, **fields) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    holder = {"host": socket.gethostname(), "pid": 1, "since": now, "heartbeat": now, **fields}
    (folder / "lock").write_text(json.dumps(holder))


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_lock_is_claimed_once_and_released(tmp_path):
    first, second = Lock(tmp_path / "job"), Lock(tmp_path / "job")
    assert first.acquire()
    holder = read_holder(tmp_path / "job" / "lock")
    assert (holder.host, holder.pid) == (socket.gethostname(), __import__("os").getpid())
    assert not second.acquire()  # the holder (this very process) is alive
    first.release()
    assert not (tmp_path / "job" / "lock").exists()
    assert second.acquire() and second.taken_over is None
    second.release()


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    pid = _dead_pid()
    _write_holder(tmp_path / "job", pid=pid)
    lock = Lock(tmp_path / "job")
    assert lock.acquire()
    assert lock.taken_over.pid == pid and read_holder(tmp_path / "job" / "lock").pid != pid
    lock.release()


def test_another_hosts_lock_is_kept_while_it_beats_and_taken_over_when_silent(tmp_path):
    _write_holder(tmp_path / "live", host="elsewhere", pid=4242)
    assert not Lock(tmp_path / "live").acquire()
    _write_holder(tmp_path / "silent", host="elsewhere", pid=4242, heartbeat=time.time() - 3600)
    lock = Lock(tmp_path / "silent", stale_after=60)
    assert lock.acquire() and lock.taken_over.host == "elsewhere"
    lock.release()


def test_the_heartbeat_keeps_a_long_job_alive(tmp_path, monkeypatch):
    monkeypatch.setattr("ssl_bench.locks.HEARTBEAT_SECONDS", 0.05)
    lock = Lock(tmp_path / "job")
    assert lock.acquire()
    first = read_holder(tmp_path / "job" / "lock").heartbeat
    time.sleep(0.3)
    assert read_holder(tmp_path / "job" / "lock").heartbeat > first
    lock.release()


def test_a_holder_is_alive_only_while_its_process_runs_and_beats():
    me = Holder.me()
    assert me.is_alive(stale_after=60)
    assert not Holder(me.host, _dead_pid(), me.since, me.heartbeat).is_alive(stale_after=60)
    assert not Holder(me.host, me.pid, me.since, me.heartbeat - 120).is_alive(stale_after=60)
