"""tmon inside a Ray Train worker (a Ray Tune trial runs one Train run): ranks, identity, storage,
resume and the checkpoints Ray persists.

The adapters (Lightning, HF) call :func:`join` when their fit starts. It imports Ray only when
``ray.train`` is imported in this process already (every Ray Train worker has imported it before
the user's function runs): a fit outside Ray pays one dict lookup and imports nothing. Ray Train V2
(the default since Ray 2.50) is what is tested; V1's context is read where it differs.

In a Ray Train worker:

- **ranks**: the world rank is Ray's; tmon's node rank and local rank come from the Ray *node id* of
  every worker, gathered once over the DDP group (gloo), so each Ray node's first worker samples
  that node's hardware, labelled with its node rank. On a cluster (one raylet per machine) they are
  Ray's own node and local ranks; Ray numbers nodes by IP, so two raylets on one machine
  (``ray.cluster_utils.Cluster``) are one node to Ray and two to tmon, which is how a test simulates
  a cluster.
- **identity**: one tmon run per Train run, its id derived from the Tune trial's id when
  :func:`trial_runtime_env` handed it to the workers, else from the Train run's storage path and
  name (``RunConfig(storage_path, name)``, which is also what Ray restores a run from). A worker
  group that Ray restarts after a failure (``FailureConfig(max_failures=...)``) records into the same
  run: status back to ``running``, a ``resumed`` event, steps continuing after the last one recorded.
  Name: the trial's name, else the Train run's; group (``TMonCallback(group=...)`` or
  ``$TMON_GROUP`` first): the Tune experiment, else the Train run's name. The trial's
  ``train_loop_config`` is recorded as hyperparameters, Ray's settings under the config key ``ray``.
- **storage**: workers on more than one node with a SQLite store (a file on one node) would write
  one database per node: :class:`SharedStoreRequired` is raised when the fit starts, before any
  training step, on every worker (a configuration error the user must fix; a PostgreSQL URL works).
- **checkpoints**: the checkpoint Ray persisted (``ray.train.report(checkpoint=...)``, e.g. by
  ``RayTrainReportCallback``) is recorded with its persistent path under the run's storage path (not
  the worker's temporary directory), so ``tmon diff`` and rollback find it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import warnings

from tmon_core import events as ev
from tmon_core.jsonable import json_safe

from ._adapter import SetupRefused, TMonCallbackWarning

#: what :func:`trial_runtime_env` hands a Tune trial's Train workers (Ray Train V2 tells a worker
#: nothing of the Tune trial it runs in)
TRIAL_ID_VAR = "TMON_RAY_TRIAL_ID"
TRIAL_NAME_VAR = "TMON_RAY_TRIAL_NAME"
TUNE_EXPERIMENT_VAR = "TMON_RAY_TUNE_EXPERIMENT"


class SharedStoreRequired(SetupRefused):
    """Ray Train workers on several nodes were given a SQLite store, a file on one node."""


def trial_runtime_env(runtime_env: dict | None = None) -> dict:
    """The ``worker_runtime_env`` that tells a Tune trial's Train workers which trial they run.

    Call it in the Tune trial's function, where it builds the ``TorchTrainer``::

        def train_driver(config):
            TorchTrainer(train_func, train_loop_config=config["train_loop_config"],
                         run_config=ray.train.RunConfig(name=..., callbacks=[TuneReportCallback()],
                                                        worker_runtime_env=trial_runtime_env())).fit()

    Then the trial is one tmon run named after it, in the group of the Tune experiment, and a
    trial Ray restarts keeps its run. ``runtime_env``: one of your own, whose ``env_vars`` are kept.
    """
    from ray import tune

    ctx = tune.get_context()
    env = dict(runtime_env or {})
    env["env_vars"] = {
        **dict(env.get("env_vars") or {}),
        TRIAL_ID_VAR: str(ctx.get_trial_id()),
        TRIAL_NAME_VAR: str(ctx.get_trial_name()),
        TUNE_EXPERIMENT_VAR: str(ctx.get_experiment_name()),
    }
    return env


def train_context():
    """Ray Train's context when this process is a Ray Train worker, else None."""
    if "ray.train" not in sys.modules:  # (a worker imported it before running the user's function)
        return None
    try:
        import ray.train

        ctx = ray.train.get_context()  # V2: raises outside a worker
        ctx.get_world_rank()
        return ctx
    except Exception:
        return None


@dataclasses.dataclass
class RayWorker:
    """This process as one worker of a Ray Train run (see the module docstring)."""

    run_id: str
    experiment: str  # the Train run's name (RunConfig.name)
    trial_id: str | None
    trial_name: str | None
    tune_experiment: str | None
    world_rank: int
    world_size: int
    local_rank: int  # tmon's: among the workers on this worker's Ray node
    node_rank: int  # tmon's: the index of this worker's Ray node (first seen by world rank)
    nodes: int  # distinct Ray nodes the workers are on (None: not known)
    storage_path: str | None  # where Ray persists the run (checkpoints), if known
    options: object  # the callback's options with Ray's defaults (run name, group)
    previous: dict | None = None  # rank 0: the run as the store had it before this attempt
    step_offset: int = 0
    _seen_checkpoint: str | None = None

    # ------------------------------------------------------------ opening the run
    def session_args(self) -> dict:
        """``RunSession``'s ranks and run for this worker (rank 0 owns the run, resumed or created)."""
        args = {"local_rank": self.local_rank, "node_rank": self.node_rank}
        if self.world_rank == 0:
            args.update(run_id=self.run_id, resume=True)
        return args

    def resume(self, recorder, framework_step: int, shifts: bool = True) -> int:
        """On the process that records, at train start: when the store had this run (an earlier
        attempt of the trial), make it ``running`` again, record ``resumed`` and return how much to
        add to the framework's steps so the run's steps continue after the last one recorded.
        (A fit resumed from a checkpoint re-does steps the first attempt recorded: they get new
        steps after those, like steps after a rollback, so no step is recorded twice.) ``shifts``
        False: the adapter keeps the framework's steps (HF), 0 is returned."""
        prev = self.previous
        if prev is None:
            return 0
        last = prev.get("last_step")
        last = None if last is None or last != last else int(last)  # (NaN: none recorded)
        offset = 0 if not shifts or last is None or framework_step > last else last + 1 - framework_step
        self.step_offset = offset
        recorder.update_run(status=ev.RUNNING, ended_at=None, error=None)
        recorder.event(
            ev.RESUMED,
            step=framework_step + offset,
            message=f"Ray restarted the trial; the run continues from step {framework_step + offset}",
            previous_status=prev.get("status"),
            previous_last_step=last,
            framework_step=framework_step,
            step_offset=offset,
        )
        return offset

    def config(self, hparams: dict | None = None) -> dict:
        """What to merge into the run's config: the trial's ``train_loop_config`` over ``hparams``
        (the framework's own, as recorded) and Ray's settings under ``ray``."""
        out: dict = {
            "ray": {
                "experiment": self.experiment,
                "trial_id": self.trial_id,
                "trial_name": self.trial_name,
                "tune_experiment": self.tune_experiment,
                "world_size": self.world_size,
                "nodes": self.nodes,
                "storage_path": self.storage_path,
            }
        }
        try:
            from ._workarounds import ray as wa

            trial = wa.train_loop_config()
        except Exception as exc:  # a Ray that keeps it elsewhere: the run has no trial config, says so
            warnings.warn(
                f"tmon: the trial's train_loop_config is not readable here ({exc})",
                TMonCallbackWarning,
                stacklevel=2,
            )
            trial = None
        if trial:
            out["hparams"] = {**(hparams or {}), **json_safe(trial)}
        return out

    # ------------------------------------------------------------ checkpoints Ray persisted
    def persisted_checkpoint(self) -> str | None:
        """The local path of the checkpoint Ray persisted since the last call (the one file or
        folder in Ray's checkpoint directory: ``RayTrainReportCallback``'s ``checkpoint.ckpt``, HF's
        ``checkpoint`` folder; else the directory), or None. A checkpoint on remote storage (s3://...)
        is not recorded: tmon reads checkpoints from local paths."""
        try:
            import ray.train

            ckpt = ray.train.get_checkpoint()
        except Exception:
            return None
        if ckpt is None or ckpt.path == self._seen_checkpoint:
            return None
        self._seen_checkpoint = ckpt.path
        fs = getattr(ckpt, "filesystem", None)
        if fs is not None and getattr(fs, "type_name", "local") != "local":
            return None
        return _recorded_path(ckpt.path)

    def record_checkpoint(self, recorder, step: int, epoch=None) -> None:
        """Record the checkpoint Ray persisted since the last look, if any (epoch boundaries and the
        end of the fit: Ray's report callbacks report at epoch end or at the framework's save)."""
        path = self.persisted_checkpoint()
        if path is not None:
            recorder.checkpoint(path, step=step, epoch=epoch, source="ray")


def join(options) -> RayWorker | None:
    """This process as a worker of the Ray Train run it is in, or None outside Ray Train.

    Every worker calls it at the same point of its fit (it gathers the node ids over the DDP group).
    Raises :class:`SharedStoreRequired` on every worker when they are on several nodes and the store
    is a SQLite file. Anything else that fails here is one warning and the fit is recorded as a
    plain DDP fit."""
    ctx = train_context()
    if ctx is None:
        return None
    world_rank, world_size = int(ctx.get_world_rank()), int(ctx.get_world_size())
    node_ids = _gather_node_ids(world_size)  # first, on every rank: nothing before it may fail on one rank
    try:
        worker = _worker(ctx, options, world_rank, world_size, node_ids)
    except Exception as exc:
        warnings.warn(
            f"tmon: this Ray Train worker's context is not readable ({type(exc).__name__}: {exc}); "
            "the fit is recorded as a plain distributed fit",
            TMonCallbackWarning,
            stacklevel=2,
        )
        return None
    _check_store(worker, options)
    if world_rank == 0:
        worker.previous = _previous_run(worker)
    return worker


def _worker(ctx, options, world_rank: int, world_size: int, node_ids: list | None) -> RayWorker:
    if node_ids is not None:
        mine = node_ids[world_rank]
        order = list(dict.fromkeys(node_ids))  # Ray nodes in the order of their first worker
        node_rank, local_rank, nodes = order.index(mine), node_ids[:world_rank].count(mine), len(order)
    else:  # no process group to gather over: Ray's own ranks (nodes by IP)
        node_rank, local_rank = int(ctx.get_node_rank()), int(ctx.get_local_rank())
        local = int(ctx.get_local_world_size()) or 1
        nodes = 1 if local >= world_size else -(-world_size // local)
    experiment = str(ctx.get_experiment_name())
    trial_id = os.environ.get(TRIAL_ID_VAR) or _v1(ctx, "get_trial_id")
    trial_name = os.environ.get(TRIAL_NAME_VAR) or _v1(ctx, "get_trial_name")
    tune_experiment = os.environ.get(TUNE_EXPERIMENT_VAR)
    storage = _storage_path(ctx)
    # a trial keeps its id across Tune's restarts of it; a Train run across Ray's restarts of its
    # workers and across a job-level restoration (the same storage path and name)
    key = (
        f"ray-tune\0{tune_experiment or ''}\0{trial_id}"
        if trial_id
        else f"ray-train\0{storage or experiment}"
    )
    run_id = hashlib.sha256(key.encode()).hexdigest()[:12]
    return RayWorker(
        run_id=run_id,
        experiment=experiment,
        trial_id=trial_id,
        trial_name=trial_name,
        tune_experiment=tune_experiment,
        world_rank=world_rank,
        world_size=world_size,
        local_rank=local_rank,
        node_rank=node_rank,
        nodes=nodes,
        storage_path=storage,
        options=_options(options, trial_name or experiment, tune_experiment or experiment),
        _seen_checkpoint=_checkpoint_path(),  # restored from: recorded by the attempt that wrote it
    )


def _options(options, name: str, group: str):
    from tmon_core.run_groups import ENV_VAR, check_group
    from tmon_core.store.text import MAX_RUN_NAME, storable

    changes = {}
    if options.run_name is None:
        changes["run_name"] = storable(name, MAX_RUN_NAME)
    if options.group is None and not os.environ.get(ENV_VAR):
        try:
            changes["group"] = check_group(group)
        except ValueError:  # a name no group can hold: the run has none
            pass
    return dataclasses.replace(options, **changes) if changes else options


def _gather_node_ids(world_size: int) -> list | None:
    """The Ray node id of every worker, by world rank (None without a process group to gather over)."""
    try:
        import ray

        mine = ray.get_runtime_context().get_node_id()
    except Exception:  # (Ray Train's local mode runs without a Ray node): one node
        mine = ""
    if world_size <= 1:
        return [mine]
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        return None
    # over gloo, whatever the training backend: a CPU gather that needs no device set up
    group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    out: list = [None] * dist.get_world_size()
    try:
        dist.all_gather_object(out, mine, group=group)
    finally:
        if group is not None:  # (a group left alive keeps its sockets and threads until the worker exits)
            dist.destroy_process_group(group)
    return out


def _check_store(worker: RayWorker, options) -> None:
    from tmon_core.store.engine import resolve_url
    from tmon_core.store.store import sqlite_path

    url = resolve_url(options.store)
    path = sqlite_path(url)
    if worker.nodes > 1 and path is not None:
        raise SharedStoreRequired(
            f"tmon: the workers of Ray Train run {worker.experiment!r} are on {worker.nodes} nodes, and "
            f"the store is a SQLite file ({path}) that each node would write on its own disk. "
            f"Workers on {worker.nodes} nodes need a shared store: a PostgreSQL URL every node can reach, "
            "TMonCallback(store='postgresql+psycopg://user:password@host/db') or "
            "TMON_STORE=postgresql+psycopg://... (pip install 'tmon[postgres]')"
        )
    if worker.world_rank == 0 and options.store is None and not os.environ.get("TMON_STORE") and path:
        warnings.warn(
            f"tmon: this Ray Train worker records into {path}: the default store, in the working "
            "directory Ray Train gave the worker. Pass TMonCallback(store=...) an absolute path or a "
            "PostgreSQL URL (or set TMON_STORE) to choose where the runs go",
            TMonCallbackWarning,
            stacklevel=2,
        )


def _recorded_path(path: str) -> str | None:
    """What tmon records for Ray's checkpoint directory ``path``: its one entry, else the directory."""
    try:
        entries = [e for e in os.listdir(path) if not e.startswith(".")]
    except OSError:
        return None
    return os.path.join(path, entries[0]) if len(entries) == 1 else path


def _previous_run(worker: RayWorker) -> dict | None:
    """The run as the store has it, when an earlier attempt of this trial recorded it; else None.
    A checkpoint the attempt restores from that the store lacks (its attempt was killed before
    writing it) is recorded at the first look."""
    from tmon_core.store.store import Store

    try:
        with Store(worker.options.store) as store:
            restored = worker._seen_checkpoint and _recorded_path(worker._seen_checkpoint)
            if restored and store.find_checkpoint(restored) is None:
                worker._seen_checkpoint = None
            try:
                run = store.run(worker.run_id)
            except KeyError:
                return None
            if run.id != worker.run_id:
                return None
            info = run.info()
            return {"status": info.get("status"), "last_step": info.get("last_step")}
    except Exception as exc:  # the recorder says what is wrong with the store; the run is new to us
        warnings.warn(
            f"tmon: could not read the store for an earlier attempt of this run ({exc})",
            TMonCallbackWarning,
            stacklevel=2,
        )
        return None


def _storage_path(ctx) -> str | None:
    try:
        storage = ctx.get_storage()  # (a DeveloperAPI of Ray Train: where the run is persisted)
        path = storage.experiment_fs_path
        fs = getattr(storage, "storage_filesystem", None)
        kind = getattr(fs, "type_name", "local") if fs is not None else "local"
        return path if kind == "local" else f"{kind}://{path}"
    except Exception:
        return None


def _checkpoint_path() -> str | None:
    try:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        return None if ckpt is None else ckpt.path
    except Exception:
        return None


def _v1(ctx, name: str) -> str | None:
    """A Ray Train V1 context's trial getter (V2 deprecates them: a worker there knows no trial)."""
    if "v2" in type(ctx).__module__:
        return None
    try:
        value = getattr(ctx, name)()
        return str(value) if value else None
    except Exception:
        return None


__all__ = ["RayWorker", "SharedStoreRequired", "join", "train_context", "trial_runtime_env"]
