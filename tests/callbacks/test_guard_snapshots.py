"""A guard's snapshots on disk (a model over ``max_memory_bytes``), for torch and Keras alike: the
file is written, a restore gives the saved weights and optimizer state back, the newer snapshots and
the older ones past ``keep`` are removed, and ``close`` leaves no file behind."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tmon_core.guard import Guard

torch = pytest.importorskip("torch")


def test_torch_snapshots_on_disk(tmp_path):
    from tmon_callbacks._guard_torch import TorchSnapshots

    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    snaps = TorchSnapshots(Guard(keep=2, max_memory_bytes=0, snapshot_dir=tmp_path), model, [opt])

    def step():
        opt.zero_grad()
        model(torch.ones(3, 4)).sum().backward()
        opt.step()

    saved = {}
    for s in (1, 2, 3):
        step()
        snaps.save(s)
        saved[s] = (
            {k: v.clone() for k, v in model.state_dict().items()},
            opt.state_dict()["state"][0]["exp_avg"].clone(),
        )
    assert snaps.where == "disk" and sorted(snaps.kept) == [2, 3], "keep=2: the oldest file went"
    assert sorted(os.listdir(tmp_path)) == [f"guard-{os.getpid()}-step{s}.pt" for s in (2, 3)]
    step()
    snaps.save(4)
    snaps.restore(3)
    weights, exp_avg = saved[3]
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], exp_avg), "Adam's moments too"
    assert sorted(snaps.kept) == [3] and len(os.listdir(tmp_path)) == 1, "the newer snapshot is dropped"
    snaps.close()
    assert os.listdir(tmp_path) == [] and os.path.isdir(tmp_path), "a folder the user gave stays"


def test_keras_snapshots_on_disk_restore_weights_and_optimizer_state(tmp_path):
    keras = pytest.importorskip("keras")
    from tmon_callbacks._guard_keras import KerasSnapshots

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 2), "float32")
    model.fit(x, y, epochs=1, verbose=0)
    snaps = KerasSnapshots(Guard(max_memory_bytes=0), lambda: model)
    snaps.save(7)
    weights = [w.copy() for w in model.get_weights()]
    moments = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    model.fit(x, y, epochs=2, verbose=0)
    assert not np.allclose(model.get_weights()[0], weights[0])
    path = snaps.kept[7][0]
    assert snaps.where == "disk" and path.endswith(".npz") and os.path.isfile(path)
    snaps.restore(7)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights))
    restored = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    # Adam's moments come back; its iteration count and lr are left to the guard's own lr change
    assert sum(np.array_equal(a, b) for a, b in zip(restored, moments)) >= len(moments) - 2
    folder = snaps.dir
    snaps.close()
    assert not os.path.exists(folder), "the temp folder tmon made is removed"
