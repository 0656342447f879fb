"""The parity harness itself, without a framework: a mismatch is found and named."""

import math

from tests.e2e.parity.harness import (
    Also,
    AtReferenceSteps,
    Ignore,
    Rename,
    StepOffset,
    compare,
    from_records,
    read_csv,
)


def test_equal_tables_pass_and_every_kind_of_difference_is_named(tmp_path):
    ref = {"val_loss": [(9, 0.5)], "train_loss": [(0, 1.0), (1, 0.9)]}
    tmon = {"val_loss": [(9, 0.5)], "train_loss": [(0, 1.0), (1, 0.9)], "lr": [(0, 0.1), (1, 0.1)]}
    assert compare(tmon, ref).check().compared == {
        ("val_loss", "val_loss"): 1,
        ("train_loss", "train_loss"): 2,
    }

    bad = {"val_loss": [(8, 0.5)], "train_loss": [(0, 1.0), (1, 0.9), (1, 0.8)]}
    text = str(compare(bad, {**ref, "acc": [(1, 0.5)]}))
    assert "acc: tmon None, framework '1 point(s)' (tmon has no 'acc')" in text
    assert "val_loss at step 8: tmon 0.5, framework None (only tmon has a value at this step)" in text
    assert "val_loss at step 9: tmon None, framework 0.5 (tmon has no value at this step)" in text
    assert (
        "train_loss at step 1: tmon [0.9, 0.8], framework 0.9 (2 value(s) in tmon, 1 in the framework)"
        in text
    )
    assert "values differ" in str(compare({"v": [(0, 1.0)]}, {"v": [(0, 1.1)]}))
    assert compare({"v": [(0, math.nan)]}, {"v": [(0, math.nan)]}).ok


def test_rules_throttled_steps_offset_rename_ignore_and_required_keys(tmp_path):
    tmon = {"loss": [(s, 1.0 / (s + 1)) for s in range(10)]}
    ref = {"train_loss": [(s + 1, 1.0 / (s + 1)) for s in (4, 9)], "grad_norm_total": [(5, 3.0)]}
    tmon["train_loss"] = [(s, 1.0 / (s + 1)) for s in (4, 9)]
    result = compare(
        tmon,
        ref,
        rules=[
            Rename("loss", "train_loss", why="the user's name for it"),
            StepOffset(-1, why="this framework counts from 1"),
            AtReferenceSteps(why="the framework logs every 5th step"),
            Ignore("grad_norm_total", why="not recorded by design"),
        ],
        require=["train_loss"],
    )
    assert result.check().compared == {("train_loss", "loss"): 2}
    both = compare(
        tmon,
        ref,
        rules=[Also("loss", "train_loss"), StepOffset(-1), AtReferenceSteps(), Ignore("grad_norm_total")],
    )
    assert both.check().compared == {("train_loss", "loss"): 2, ("train_loss", "train_loss"): 2}
    assert not compare(tmon, ref, rules=[Rename("loss", "train_loss")], require=["x"]).ok

    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train_loss,val_loss\n0,0,1.5,\n0,9,,0.25\n")
    assert read_csv(path) == {
        "epoch": [(0, 0.0), (9, 0.0)],
        "train_loss": [(0, 1.5)],
        "val_loss": [(9, 0.25)],
    }
    assert from_records([{"loss": 2.0, "step": 1, "note": "x"}, {"train_runtime": 3.0}]) == {
        "loss": [(1, 2.0)]
    }
