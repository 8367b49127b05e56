"""One Ray task per trial (`hydra/launcher=ray_gpu`), asynchronous through `ray.wait`.

hydra-ray-launcher's `launch` starts a batch of tasks and `ray.get`s them in order, so one
slow trial holds every other GPU. Here Ray is started (or joined) with the launcher's
`ray.init` keys and each trial is one task with its `ray.remote` resources (`num_gpus=1`:
Ray pins the trial's GPU), started through the launcher's own job function
(autotimm.sweep.plugin_api); `ray.wait` returns the first task that ends, and the next
trial starts at once, up to `sweep.n_jobs`. Ray is an optional extra: pip install
'autotimm[ray]'.
"""

from __future__ import annotations

from typing import Any

from autotimm.sweep import plugin_api
from autotimm.sweep.runners import EngineRunner


class RayRunner(EngineRunner):
    """Each trial a Ray task; `wait` returns as soon as any task ended."""

    def __init__(self, launcher: Any) -> None:
        super().__init__()
        self._jobs = plugin_api.RayJobs(launcher)  # a clear error when Ray is missing
        self._jobs.start()

    def _start(self, number: int, overrides: list[str]) -> Any:
        return self._jobs.submit(number, overrides)

    def _describe(self, ref: Any) -> str:
        return f"Ray task {ref!r}"

    def _await(self, refs: list[Any]) -> list[Any]:
        import ray

        ready, rest = ray.wait(refs, num_returns=1)
        if rest:  # others that ended meanwhile come back too
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready = [*ready, *more]
        return ready

    def _result(self, ref: Any) -> Any:
        import ray

        return ray.get(ref)

    def _cancel(self, ref: Any) -> None:
        import ray

        ray.cancel(ref, force=True)
