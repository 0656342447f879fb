"""An MLflow tracking store <-> tmon runs, through MLflow's own client (``MlflowClient``).

Import: every run of the store (or of ``--experiment NAME``) becomes a tmon run: its params as
``hparams`` (strings, as MLflow keeps them), its tags and experiment in ``imported_from``, every
metric's full history with its steps and timestamps, its status (FINISHED -> completed, FAILED ->
failed, KILLED -> interrupted) and start/end times. An MLflow run imported before (same run id)
is not written again.

Export: a tmon run becomes one MLflow run (experiment ``tmon`` unless named) with the run's
hparams as params and every point as a metric with its step and timestamp.

Two limits are MLflow's: its timestamps are integer milliseconds, so wall times round trip to the
millisecond; and its SQL store writes ±inf as ±1.7976931348623157e308 (the largest float), which
the import reads back as ±inf (a real value of exactly that size does not occur in training
metrics). NaN round trips as NaN. A file store (``mlruns/``, in maintenance mode since MLflow 3)
is read and written too: ``MLFLOW_ALLOW_FILE_STORE`` is set for it.
"""

from __future__ import annotations

import math
import os
import sys

from .. import events as ev
from ._common import Imported, RunWriter, clean_hparams, find_imported, fingerprint

FRAMEWORK = "mlflow"
_STATUS = {"FINISHED": ev.COMPLETED, "FAILED": ev.FAILED, "KILLED": ev.INTERRUPTED}
_TO_MLFLOW = {ev.COMPLETED: "FINISHED", ev.FAILED: "FAILED", ev.INTERRUPTED: "KILLED", "lost": "FAILED"}
_BIG = sys.float_info.max


def _client(tracking_uri: str | None):
    try:
        from mlflow import MlflowClient
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "reading or writing an MLflow store needs mlflow: pip install 'tmon[interop]' "
            "(or pip install mlflow-skinny)"
        ) from exc
    if tracking_uri is not None and ("://" not in tracking_uri or tracking_uri.startswith("file:")):
        # a file store (mlruns/): MLflow 3 refuses it unless allowed, to push users to a database;
        # reading (or writing) one is what an import or export is for, so it is allowed here
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=tracking_uri)


def _value(v: float) -> float:
    return math.copysign(math.inf, v) if abs(v) == _BIG else v


def _all(fetch):
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = page.token
        if not token:
            return


def import_mlflow(
    tracking_uri: str | None, store=None, *, experiment: str | None = None, run_ids: list[str] | None = None
) -> list[Imported]:
    """Import the runs of the MLflow store at ``tracking_uri`` (all experiments, or ``experiment``
    by name; or only ``run_ids``) into ``store``."""
    client = _client(tracking_uri)
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise KeyError(f"no MLflow experiment {experiment!r} at {tracking_uri}")
        exps = [exp]
    else:
        exps = list(_all(lambda t: client.search_experiments(page_token=t)))
    names = {e.experiment_id: e.name for e in exps}
    if run_ids is not None:
        runs = [client.get_run(r) for r in run_ids]
    else:
        runs = list(
            _all(
                lambda t: client.search_runs(
                    list(names), page_token=t, order_by=["attributes.start_time ASC"]
                )
            )
        )
    out = []
    for r in runs:
        info, data = r.info, r.data
        source = f"{tracking_uri}#{info.run_id}"
        fp = fingerprint("mlflow", info.run_id)
        existing = find_imported(store, fp)
        if existing is not None:
            out.append(Imported(existing, source, False))
            continue
        tags = {k: v for k, v in data.tags.items()}
        w = RunWriter(
            store,
            name=info.run_name or info.run_id,
            framework=FRAMEWORK,
            fp=fp,
            source=source,
            fmt="mlflow",
            hparams=clean_hparams(dict(data.params)),
            extra={
                "mlflow_run_id": info.run_id,
                "experiment": names.get(info.experiment_id, info.experiment_id),
                "mlflow_status": info.status,
                "mlflow_tags": tags,
            },
        )
        points = []
        for key in sorted(data.metrics):
            for m in client.get_metric_history(info.run_id, key):
                points.append((m.timestamp, m.step, key, m.value))
        points.sort(key=lambda p: (p[0], p[1]))  # the order they were logged in, as near as MLflow keeps it
        log = w.log
        for ts, step, key, value in points:
            log({key: _value(value)}, step, wall_time=ts / 1000.0)
        w.points, w.keys = len(points), {p[2] for p in points}
        start = info.start_time / 1000.0 if info.start_time else (points[0][0] / 1000.0 if points else None)
        end = info.end_time / 1000.0 if info.end_time else (points[-1][0] / 1000.0 if points else start)
        w.close(
            first_wall=start,
            last_wall=end,
            last_step=max((p[1] for p in points), default=None),
            status=_STATUS.get(info.status, ev.COMPLETED),
        )
        out.append(w.result(source))
    return out


def _flat(d, prefix=""):
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def export_mlflow(run, tracking_uri: str | None, *, experiment: str = "tmon") -> str:
    """Write ``run`` (a ``tmon_core.Run``) into the MLflow store at ``tracking_uri`` as one MLflow
    run; returns its MLflow run id."""
    from mlflow.entities import Metric, Param

    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    info = run.info()
    mr = client.create_run(
        exp_id,
        start_time=int(round(info["created_at"] * 1000)),
        run_name=info["name"],
        tags={"tmon.run_id": info["id"], "tmon.framework": str(info.get("framework") or "")},
    )
    rid = mr.info.run_id
    params = [Param(k[:250], str(v)[:6000]) for k, v in _flat((info.get("config") or {}).get("hparams"))]
    for i in range(0, len(params), 100):
        client.log_batch(rid, params=params[i : i + 100])
    batch = []
    for key in run.metric_keys():
        df = run.metrics(key)
        for s, v, t in zip(df["step"].tolist(), df["value"].tolist(), df["wall_time"].tolist()):
            batch.append(Metric(key, v, int(round(t * 1000)), s))
            if len(batch) == 1000:  # MLflow's limit per log_batch
                client.log_batch(rid, metrics=batch)
                batch = []
    if batch:
        client.log_batch(rid, metrics=batch)
    status = _TO_MLFLOW.get(info["status"])
    if status is not None:
        end = info.get("ended_at")
        client.set_terminated(rid, status=status, end_time=int(round(end * 1000)) if end else None)
    return rid
