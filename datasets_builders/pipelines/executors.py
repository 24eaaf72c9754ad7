"""Where a pipeline runs: datatrove's executors behind `--executor local|slurm|ray`, the same stages for all.

A pipeline is a list of `Stage`s (a name, its blocks, how many tasks); stages run in order, each under its
own logging folder `<work>/logs/<stage>` where datatrove records a completion per finished task, so a rerun
(after a kill, a node failure, a preempted job) skips every finished task and stage.

- `local` (default): `LocalPipelineExecutor`, `--tasks` tasks, `--workers` of them at a time (processes).
- `ray`: `RayPipelineExecutor` on the cluster at `--ray-address`, or on a local Ray cluster started here with
  `--workers` CPUs when none is given.
- `slurm`: `SlurmPipelineExecutor`: one job array per stage, chained with `depends`; this command submits
  them and returns (run it again once they finished, or watch `<work>/logs`): a run that finds every task
  complete submits nothing and writes what the driver writes (a card, a report). Tested against a
  one-machine Slurm (tests/fake_slurm.py: sbatch / srun / scontrol on PATH), not a cluster.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXECUTORS = ("local", "ray", "slurm")


@dataclass
class Stage:
    """One datatrove pipeline: `blocks` run by `tasks` tasks (per-file stages use the run's `--tasks`)."""

    name: str
    blocks: list[Any]
    tasks: int


@dataclass
class ExecutorOptions:
    """How to run the stages (see the module docstring)."""

    executor: str = "local"
    tasks: int = 1
    workers: int = 1
    ray_address: str | None = None
    slurm_partition: str | None = None
    slurm_time: str = "4:00:00"
    slurm_cpus_per_task: int = 1
    slurm_mem_per_cpu_gb: float = 2
    slurm_sbatch_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"--executor {self.executor!r}: choose one of {', '.join(EXECUTORS)}")
        if self.tasks < 1 or self.workers < 1:
            raise ValueError(f"--tasks ({self.tasks}) and --workers ({self.workers}) must be at least 1")
        if self.executor == "slurm" and not self.slurm_partition:
            raise ValueError("--executor slurm needs --slurm-partition (the partition to submit to)")


def check_work_dir(work: Path, fingerprint: str) -> None:
    """Completion records are only valid for the options that made them: other options, fresh work folder."""
    marker = work / "fingerprint.json"
    if marker.is_file() and json.loads(marker.read_text())["fingerprint"] != fingerprint:
        print(f"{work}: made with other options; starting it again")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": fingerprint}))


def open_build(output_dir: Path, fingerprint: str, work: Path | None = None) -> tuple[Path, Path] | None:
    """The (work, staging) folders of a build of `output_dir` with options `fingerprint`, or None when the
    dataset there is already complete with those options. A fresh run (no logs yet) clears stale staged shards."""
    from ..hub_dataset import is_complete, read_build_info

    if is_complete(output_dir) and read_build_info(output_dir).get("fingerprint") == fingerprint:
        print(f"{output_dir}: already complete with these options")
        return None
    work = work or output_dir.with_name(output_dir.name + ".work")
    staging = output_dir.with_name(output_dir.name + ".staging")
    check_work_dir(work, fingerprint)
    if not (work / "logs").is_dir():
        shutil.rmtree(staging, ignore_errors=True)
    return work, staging


def run_stages(stages: list[Stage], work: Path, options: ExecutorOptions) -> bool:
    """Run `stages` in order; True when all have finished (False: submitted to Slurm, still to run)."""
    logs = work / "logs"
    if options.executor == "local":
        from datatrove.executor import LocalPipelineExecutor

        for stage in stages:
            workers = min(options.workers, stage.tasks)
            LocalPipelineExecutor(stage.blocks, tasks=stage.tasks, workers=workers,
                                  logging_dir=str(logs / stage.name)).run()
        return True
    if options.executor == "ray":
        from datatrove.executor import RayPipelineExecutor

        start_ray(options)
        for stage in stages:
            RayPipelineExecutor(stage.blocks, tasks=stage.tasks, workers=min(options.workers, stage.tasks),
                                logging_dir=str(logs / stage.name), cpus_per_task=1, mem_per_cpu_gb=0.5).run()
        return True
    from datatrove.executor import SlurmPipelineExecutor

    if not shutil.which("sbatch"):
        raise FileNotFoundError("--executor slurm: no `sbatch` on this machine; run from a Slurm login node")
    previous, executors = None, []
    for stage in stages:
        previous = SlurmPipelineExecutor(
            stage.blocks, tasks=stage.tasks, time=options.slurm_time, partition=options.slurm_partition,
            logging_dir=str(logs / stage.name), job_name=f"phi-{stage.name}", depends=previous,
            cpus_per_task=options.slurm_cpus_per_task, mem_per_cpu_gb=options.slurm_mem_per_cpu_gb,
            sbatch_args=options.slurm_sbatch_args or None)
        executors.append(previous)
    previous.run()
    # Every task already finished (a rerun once the jobs are done): the caller may write its outputs now.
    return all(not executor.get_incomplete_ranks() for executor in executors)


def start_ray(options: ExecutorOptions) -> None:
    import ray

    if ray.is_initialized():
        return
    if options.ray_address:
        ray.init(address=options.ray_address, log_to_driver=False)
    else:  # a local cluster on this machine
        ray.init(num_cpus=options.workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})


def stage_stats(work: Path, stage: str) -> list[dict[str, Any]]:
    """datatrove's per-task stats of `stage`, summed over tasks: [{name, stats: {label: total}}] per block."""
    merged: list[dict[str, Any]] = []
    for path in sorted((work / "logs" / stage / "stats").glob("*.json")):
        for i, block in enumerate(json.loads(path.read_text())):
            if i == len(merged):  # "🔻 - FILTER: size" -> "size"
                merged.append({"name": re.sub(r"^\W+", "", block["name"].split(": ", 1)[-1]),
                               "stats": {}})
            for label, value in block["stats"].items():
                total = value["total"] if isinstance(value, dict) else value
                merged[i]["stats"][label] = merged[i]["stats"].get(label, 0) + total
    return merged


def add_executor_arguments(parser: Any) -> None:
    """--executor, --tasks, --workers and the Ray / Slurm options, shared by every `phi data ...` pipeline."""
    g = parser.add_argument_group("executor (datatrove)")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local processes (default), a Ray cluster, or Slurm job arrays")
    g.add_argument("--tasks", type=int, default=1, help="tasks per stage: each reads its own block of files")
    g.add_argument("--workers", type=int, default=1, help="tasks at a time (local processes / Ray CPUs)")
    g.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local cluster)")
    g.add_argument("--slurm-partition", default=None)
    g.add_argument("--slurm-time", default="4:00:00")
    g.add_argument("--slurm-cpus-per-task", type=int, default=1)
    g.add_argument("--slurm-mem-per-cpu-gb", type=float, default=2)


def executor_options(args: Any) -> ExecutorOptions:
    return ExecutorOptions(args.executor, args.tasks, args.workers, args.ray_address, args.slurm_partition,
                           args.slurm_time, args.slurm_cpus_per_task, args.slurm_mem_per_cpu_gb)
