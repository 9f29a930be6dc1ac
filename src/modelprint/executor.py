"""Where independent tasks run: in this process, in a pool of spawned processes, or on a Ray cluster.

One interface for every parallel build (synthetic pools, zoos, batch embedding): :meth:`Executor.run` calls
``fn(*args)`` for each task, at most ``workers`` at a time, submitting lazily (so a caller can stop submitting), and
yields ``(task index, result)`` as tasks finish. ``initializer(*initargs)`` prepares each worker once (shared
training data, a loaded model) before its first task. Workers train with one torch thread each; with the same
tasks, a task's result does not depend on the backend (the tests check the weights' sha256).

Ray (``ray`` from the package index): ``RayExecutor(address=None)`` starts a local cluster of ``workers`` CPUs, or
joins the cluster at ``address`` (``ray start --head`` on one machine, ``ray start --address HEAD:6379`` on the
others; modelprint installed on every node, and output folders on storage every node sees).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from modelprint.errors import ModelprintError

Task = tuple[Any, ...]
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class Executor(ABC):
    """Runs tasks; see the module docstring. ``workers`` is how many run at once."""

    workers: int = 1

    @abstractmethod
    def run(self, fn: Callable[..., Any], tasks: Iterable[Task], *, initializer: Callable[..., None] | None = None,
            initargs: Task = (), may_start: Callable[[], bool] | None = None) -> Iterator[tuple[int, Any]]:
        """``(index, fn(*task))`` for each task as it finishes; no task starts once ``may_start()`` is false."""


class LocalExecutor(Executor):
    """Every task in this process, in order (its current torch thread setting)."""

    def run(self, fn: Callable[..., Any], tasks: Iterable[Task], *, initializer: Callable[..., None] | None = None,
            initargs: Task = (), may_start: Callable[[], bool] | None = None) -> Iterator[tuple[int, Any]]:
        if initializer is not None:
            initializer(*initargs)
        queue = iter(tasks)
        for i in itertools.count():
            if may_start is not None and not may_start():  # asked before the next task is taken, as in _drain
                return
            task = next(queue, None)
            if task is None:
                return
            yield i, fn(*task)


def _drain(submit: Callable[[Task], Any], wait_any: Callable[[set], tuple[list, set]], tasks: Iterable[Task],
           workers: int, may_start: Callable[[], bool] | None) -> Iterator[tuple[Any, int]]:
    """Keep ``workers`` tasks in flight; yield ``(finished handle, index)`` as they finish."""
    queue = iter(enumerate(tasks))
    pending: dict[Any, int] = {}
    exhausted = False
    while True:
        while not exhausted and len(pending) < workers and (may_start is None or may_start()):
            nxt = next(queue, None)
            if nxt is None:
                exhausted = True
                break
            pending[submit(nxt[1])] = nxt[0]
        if not pending:
            return
        finished, _ = wait_any(set(pending))
        for handle in finished:
            yield handle, pending.pop(handle)


class ProcessExecutor(Executor):
    """``workers`` spawned processes (one OpenMP/MKL thread each)."""

    def __init__(self, workers: int = 2) -> None:
        self.workers = max(1, int(workers))

    def run(self, fn: Callable[..., Any], tasks: Iterable[Task], *, initializer: Callable[..., None] | None = None,
            initargs: Task = (), may_start: Callable[[], bool] | None = None) -> Iterator[tuple[int, Any]]:
        saved = {k: os.environ.get(k) for k in _ONE_THREAD}
        os.environ.update(_ONE_THREAD)  # inherited by the spawned workers
        try:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=initializer,
                                     initargs=initargs) as pool:

                def wait_any(pending: set[Future]) -> tuple[list, set]:
                    done, rest = wait(pending, return_when=FIRST_COMPLETED)
                    return list(done), rest

                for fut, i in _drain(lambda t: pool.submit(fn, *t), wait_any, tasks, self.workers, may_start):
                    yield i, fut.result()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


_READY: set[str] = set()  # initialisers already run in this (Ray worker) process


def _ray_call(key: str, initializer: Callable[..., None] | None, fn: Callable[..., Any], task: Task,
              *initargs: Any) -> Any:
    if initializer is not None and key not in _READY:
        initializer(*initargs)
        _READY.add(key)
    return fn(*task)


class RayExecutor(Executor):
    """Tasks on a Ray cluster: a local one of ``workers`` CPUs (``address=None``), or the running cluster at
    ``address`` (``"auto"``: the one this machine belongs to), where ``workers`` defaults to its CPUs."""

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ModelprintError("--ray needs the 'ray' package: pip install 'modelprint[ray]'") from None
        if not ray.is_initialized():
            env = {"env_vars": dict(_ONE_THREAD)}
            try:
                if address is None:
                    ray.init(num_cpus=max(1, int(workers or os.cpu_count() or 1)), include_dashboard=False,
                             runtime_env=env, log_to_driver=False)
                else:
                    ray.init(address=address, runtime_env=env, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ModelprintError(f"cannot start or join the Ray cluster at {address or 'this machine'}: "
                                      f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        self.workers = max(1, int(workers or ray.cluster_resources().get("CPU", 1)))

    def run(self, fn: Callable[..., Any], tasks: Iterable[Task], *, initializer: Callable[..., None] | None = None,
            initargs: Task = (), may_start: Callable[[], bool] | None = None) -> Iterator[tuple[int, Any]]:
        import ray

        call = ray.remote(num_cpus=1, max_retries=0)(_ray_call)
        shared = tuple(ray.put(a) for a in initargs)  # once into the object store, not once per task
        key = os.urandom(8).hex()

        def wait_any(pending: set) -> tuple[list, set]:
            done, rest = ray.wait(list(pending), num_returns=1)
            return done, set(rest)

        def submit(task: Task) -> Any:
            return call.remote(key, initializer, fn, task, *shared)  # top-level refs: resolved in the worker

        for ref, i in _drain(submit, wait_any, tasks, self.workers, may_start):
            yield i, ray.get(ref)


def executor_for(workers: int = 1, ray: bool = False, address: str | None = None) -> Executor:
    """The executor of the ``--workers``/``--ray``/``--address`` options: Ray if asked (or an address is given),
    else a process pool for ``workers > 1``, else this process."""
    if ray or address:
        return RayExecutor(workers if workers > 1 or not address else None, address)
    return ProcessExecutor(workers) if workers > 1 else LocalExecutor()
