"""A one-machine Slurm for tests: `sbatch`, `srun`, `scontrol` and `squeue` as a real cluster's login node
would answer them, so `--executor slurm` runs through datatrove's SlurmPipelineExecutor end to end.

`sbatch [--export=ALL,K=V] [--dependency=afterok:ID,...] SCRIPT` reads the script's `#SBATCH --array=A-B[%W]`
and `--output` (with %A / %a), runs every array task of the script with bash, one after the other, with
SLURM_ARRAY_TASK_ID, SLURM_ARRAY_JOB_ID, SLURM_JOB_ID, SLURM_NODELIST, SLURM_NODEID and the exported
variables set, and prints `Submitted batch job ID`. Jobs run at submission (this cluster is never busy), so a
job submitted with `afterok:` on an earlier job sees it finished; if that job failed, the new one is
cancelled (state CANCELLED, nothing runs), as Slurm does with DependencyNeverSatisfied. `srun [options] CMD`
runs CMD; `scontrol show hostnames` prints this host; `squeue` lists no pending job. Job states are kept as
JSON under $FAKE_SLURM_STATE (`jobs.json`, with every job's script and array), for the test to inspect.

    python tests/fake_slurm.py install BIN_DIR     # writes BIN_DIR/{sbatch,srun,scontrol,squeue}
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

COMMANDS = ("sbatch", "srun", "scontrol", "squeue")


def state_file() -> Path:
    folder = Path(os.environ.get("FAKE_SLURM_STATE", Path.home() / ".fake_slurm"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "jobs.json"


def load_jobs() -> dict[str, dict]:
    path = state_file()
    return json.loads(path.read_text()) if path.is_file() else {}


def save_jobs(jobs: dict[str, dict]) -> None:
    state_file().write_text(json.dumps(jobs, indent=1))


def directives(script: str) -> dict[str, str]:
    found = {}
    for line in script.splitlines():
        m = re.match(r"#SBATCH\s+--([\w-]+)(?:=(.*))?$", line.strip())
        if m:
            found[m.group(1)] = m.group(2) or ""
    return found


def sbatch(args: list[str]) -> int:
    exports, dependency, script_path = {}, "", None
    for arg in args:
        if arg.startswith("--export="):
            exports = dict(kv.split("=", 1) for kv in arg.split("=", 1)[1].split(",") if "=" in kv)
        elif arg.startswith("--dependency="):
            dependency = arg.split("=", 1)[1]
        elif not arg.startswith("-"):
            script_path = arg
    if script_path is None:
        print("sbatch: error: no batch script", file=sys.stderr)
        return 1
    script = Path(script_path).read_text()
    options = directives(script)
    jobs = load_jobs()
    job_id = str(1000 + len(jobs))
    first, last, _ = re.match(r"(\d+)(?:-(\d+))?(?:%(\d+))?$", options.get("array", "0")).groups()
    tasks = list(range(int(first), int(last if last is not None else first) + 1))
    job = {"name": options.get("job-name"), "array": tasks, "dependency": dependency, "exports": exports,
           "script": script, "state": "RUNNING", "failed_tasks": []}
    jobs[job_id] = job
    save_jobs(jobs)
    for dep in filter(None, dependency.split(",")):
        kind, *ids = dep.split(":")
        if kind == "afterok" and any(jobs.get(i, {}).get("state") != "COMPLETED" for i in ids):
            job["state"] = "CANCELLED"
    if job["state"] != "CANCELLED":
        for task in tasks:
            env = {**os.environ, **exports, "SLURM_JOB_ID": job_id, "SLURM_ARRAY_JOB_ID": job_id,
                   "SLURM_ARRAY_TASK_ID": str(task), "SLURM_NODELIST": "localhost", "SLURM_NODEID": "0",
                   "SLURM_PROCID": "0", "SLURM_JOB_NAME": options.get("job-name", "")}
            log = options.get("output", f"slurm-{job_id}_{task}.out").replace("%A", job_id).replace("%a", str(task))
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as out:
                rc = subprocess.run(["bash", "-c", script], env=env, stdout=out, stderr=subprocess.STDOUT).returncode
            if rc:
                job["failed_tasks"].append(task)
        job["state"] = "FAILED" if job["failed_tasks"] else "COMPLETED"
    jobs = {**load_jobs(), job_id: job}
    save_jobs(jobs)
    print(f"Submitted batch job {job_id}")
    return 0


def srun(args: list[str]) -> int:
    with_value = {"-n", "-N", "-c", "--ntasks", "--nodes", "--cpus-per-task"}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in with_value else 1
    return subprocess.run(args[i:]).returncode


def scontrol(args: list[str]) -> int:
    if args[:2] == ["show", "hostnames"]:
        print("localhost")
    return 0


def squeue(args: list[str]) -> int:
    print("JOBID PARTITION NAME USER ST TIME NODES NODELIST(REASON)")
    return 0


def install(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" {name} "$@"\n')
        path.chmod(0o755)


def main(argv: list[str]) -> int:
    if argv[0] == "install":
        install(Path(argv[1]))
        return 0
    return {"sbatch": sbatch, "srun": srun, "scontrol": scontrol, "squeue": squeue}[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
