"""One submitit job per trial (`hydra/launcher=slurm_gpu`, `submitit_local`), asynchronous.

hydra-submitit-launcher's `launch` submits a batch as one job array and waits for all of
it, so one slow trial holds every other GPU. Here each trial is its own job, submitted
through the executor the launcher builds from its config (partition, GPUs, time limit,
`max_num_timeout`, ...) and running the launcher's own job function (its `__call__`,
through autotimm.sweep.plugin_api), so a job is what the launcher would run, in the
trial's directory. A new trial is submitted as soon as any job ends, up to `sweep.n_jobs`
(default: the launcher's `array_parallelism`). A job that hits its time limit or is
preempted is requeued by submitit (the launcher's `checkpoint`) and resumes from its
last.ckpt (autotimm.app.run_wrapper); the sweep waits for it through the requeue. Before
any trial, `sbatch --test-only` checks that the cluster can ever run the job as sized
(autotimm.sweep.engine_checks).
"""

from __future__ import annotations

import time
from typing import Any

from autotimm.sweep import plugin_api
from autotimm.sweep.engine_checks import check_slurm_request
from autotimm.sweep.runners import EngineRunner

POLL_S = 1.0  # how often a job's result file is looked for (submitit's own Job.wait: 1 s)


class SubmititRunner(EngineRunner):
    """Each trial a submitit job; `wait` returns as soon as any job ended."""

    def __init__(self, launcher: Any) -> None:
        super().__init__()
        self._jobs = plugin_api.SubmititJobs(launcher)
        self._executor = self._jobs.executor()  # a bad launcher key fails here, not per trial
        if self._jobs.cluster == "slurm":  # an impossible request fails here, not pending
            script = self._jobs.slurm_job_script(self._executor)
            check_slurm_request(script, dict(launcher.params))

    def _start(self, number: int, overrides: list[str]) -> Any:
        function, args = self._jobs.call(number, overrides)
        return self._executor.submit(function, *args)

    def _describe(self, job: Any) -> str:
        return f"{self._jobs.cluster} job {job.job_id}"

    def _job_ref(self, job: Any) -> str | None:
        # a SLURM job runs on without the sweep; a local job is the sweep's child
        return f"slurm:{job.job_id}" if self._jobs.cluster == "slurm" else None

    def _await(self, jobs: list[Any]) -> list[Any]:
        # submitit rate-limits its own queries of the SLURM state (sacct) behind done()
        while True:
            ended = [job for job in jobs if job.done()]
            if ended:
                return ended
            time.sleep(POLL_S)

    def _result(self, job: Any) -> Any:
        return job.results()[0]  # the trial's JobReturn, as the launcher reads it

    def _cancel(self, job: Any) -> None:
        job.cancel(check=False)
