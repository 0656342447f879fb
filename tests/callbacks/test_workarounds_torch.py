"""What ``tmon_callbacks/_workarounds/torch.py`` relies on in the installed torch.

Each test checks one LR-scheduler internal the torch adapters use against real torch objects, so a
torch release that changes it fails here, naming it, instead of steering silently going wrong.
"""

import pytest

torch = pytest.importorskip("torch")

from tmon_callbacks import _torch  # noqa: E402
from tmon_callbacks._workarounds import torch as wa  # noqa: E402
from tmon_core.control import Change  # noqa: E402

sched = torch.optim.lr_scheduler


def sgd(lr: float = 0.1):
    return torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=lr, momentum=0.9)


@pytest.mark.parametrize("composite", ["SequentialLR", "ChainedScheduler"])
def test_composite_schedulers_keep_their_children_in__schedulers(composite):
    opt = sgd()
    children = [sched.LinearLR(opt, start_factor=0.5, total_iters=4), sched.ExponentialLR(opt, gamma=0.9)]
    outer = (
        sched.SequentialLR(opt, children, milestones=[4])
        if composite == "SequentialLR"
        else sched.ChainedScheduler(children)
    )
    assert hasattr(outer, "_schedulers"), f"torch {torch.__version__}: {composite} no longer has _schedulers"
    assert wa.inner_schedulers(outer) == children, (
        f"torch {torch.__version__}: {composite}._schedulers changed"
    )
    assert wa.inner_schedulers(children[0]) == []
    # and what it is for: a scaled lr reaches the bases of the children that act on the optimizer
    before, lr = [c.base_lrs[0] for c in children], opt.param_groups[0]["lr"]
    _torch.apply_changes([opt], [outer], [Change("lr", None, 2 * lr)], "scale")
    assert [c.base_lrs[0] for c in children] == pytest.approx([2 * b for b in before])


def test_get_last_lr_reports__last_lr_set_by_step():
    opt = sgd()
    s = sched.StepLR(opt, step_size=1, gamma=0.5)
    assert hasattr(s, "_last_lr"), f"torch {torch.__version__}: LR schedulers no longer keep _last_lr"
    opt.step()
    s.step()
    assert s.get_last_lr() == s._last_lr == [0.05]
    opt.param_groups[0]["lr"] = 0.3  # what tmon's lr change does between two steps
    assert s.get_last_lr() == [0.05]  # torch alone still reports the old value...
    wa.sync_last_lr(s)
    assert s.get_last_lr() == [0.3], f"torch {torch.__version__}: get_last_lr() no longer returns _last_lr"


def test_sync_last_lr_leaves_a_scheduler_without__last_lr_alone():
    class Custom:  # a scheduler of the user's own, not torch's
        optimizer = sgd()

    s = Custom()
    wa.sync_last_lr(s)
    assert not hasattr(s, "_last_lr")
