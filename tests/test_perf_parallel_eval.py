"""salseg-eval model mode with num_processes=2 (CPU): exactly the metrics of one process; a
restart predicts only the missing maps; maps made by another checkpoint or input size are never
scored, and a finished run leaves none behind unless keep_maps=true."""
from __future__ import annotations

import sys

import pytest
import torch
from test_eval_model import _compose, _custom_set

from salseg.cli.eval import run
from salseg.models import create_model


def _weights(tmp_path, seed: int) -> str:
    torch.manual_seed(seed)
    weights = tmp_path / f"u2netp-{seed}.pth"
    torch.save(create_model("u2netp").state_dict(), weights)
    return str(weights)


def _setup(tmp_path, n: int) -> list[str]:
    """``n`` test pairs and saved U2-NetP weights; the common model-mode overrides."""
    images, masks = _custom_set(tmp_path, n=n)
    weights = _weights(tmp_path, 0)
    return [f"ckpt={weights}", "model=u2netp", "data=custom", f"data.images={images}",
            f"data.masks={masks}", "data.val_split=0", "progress=false", "workers=1",
            "input_size=[64,64]", "device=cpu", "plots=false"]


def test_two_processes_give_exactly_the_same_metrics(tmp_path):
    common = _setup(tmp_path, n=4)
    one = run(_compose(common), tmp_path / "one")
    two = run(_compose(common + ["num_processes=2", "keep_maps=true"]), tmp_path / "two")
    assert one == two  # every metric, exactly
    (name,) = one
    maps = tmp_path / "two" / ".maps" / name
    assert sorted(p.name for p in maps.iterdir()) == [".manifest.json"] + [
        f"im{i}.png" for i in range(4)]
    # restart after an interruption: the remaining maps are reused, the missing one predicted
    (maps / "im2.png").unlink()
    stamp = (maps / "im0.png").stat().st_mtime_ns
    again = run(_compose(common + ["num_processes=2", "overwrite=true", "keep_maps=true"]),
                tmp_path / "two")
    assert again == one and (maps / "im2.png").is_file()
    assert (maps / "im0.png").stat().st_mtime_ns == stamp
    # without keep_maps a finished run leaves no maps behind
    run(_compose(common + ["num_processes=2", "overwrite=true"]), tmp_path / "two")
    assert not (tmp_path / "two" / ".maps").exists()


def _eval_cli(tmp_path, overrides: list[str]):
    import subprocess

    return subprocess.run(["salseg-eval", *overrides, f"paths.output_dir={tmp_path / 'out'}",
                           "run_name=rerun", "html=false"],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # three salseg-eval runs of two processes each (~1 min on 2 cores)
def test_rerun_with_another_model_never_scores_the_old_maps(tmp_path):
    """Issue 19.1: re-running one run directory (overwrite=true, as the docs advise for a
    restart) with another checkpoint, then another input size, scores the new model: neither
    the maps a finished run used to leave nor kept maps of another model are scored."""
    import json

    base = _setup(tmp_path, n=3)
    data = [o for o in base if not o.startswith(("ckpt=", "input_size="))]
    other = _weights(tmp_path, 1)
    run_dir = tmp_path / "out" / "eval" / "rerun"
    runs = [(f"ckpt={tmp_path / 'u2netp-0.pth'}", "input_size=[64,64]", []),
            (f"ckpt={other}", "input_size=[64,64]", ["++keep_maps=true"]),
            (f"ckpt={other}", "input_size=96", ["++keep_maps=true"])]  # an int: issue 19.10
    for i, (ckpt, size, keep) in enumerate(runs):
        proc = _eval_cli(tmp_path, [ckpt, size, *data, "num_processes=2", "overwrite=true",
                                    *keep])
        assert proc.returncode == 0, proc.stderr[-3000:]
        ref = run(_compose([ckpt, size, *data]), tmp_path / f"ref{i}")
        assert json.loads((run_dir / "metrics.json").read_text()) == ref, i
        assert (run_dir / ".maps").exists() == bool(keep)


def test_torchrun_ranks_give_exactly_the_metrics_of_one_process(tmp_path):
    """``torchrun --nproc-per-node 2 -m salseg.cli.eval``: each rank predicts its shard, rank 0
    scores after a gloo barrier; the metrics equal one process's exactly."""
    import json

    from launch_helpers import torchrun

    common = _setup(tmp_path, n=5) + ["html=false"]
    one = run(_compose(common), tmp_path / "one")
    proc = torchrun("salseg.cli.eval", [*common, f"paths.output_dir={tmp_path / 'out'}",
                                        "run_name=ranks"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "out" / "eval" / "ranks"
    assert json.loads((run_dir / "metrics.json").read_text()) == one  # every metric, exactly
    assert not (run_dir / ".maps").exists()  # scored, not kept (keep_maps=false)
    assert (run_dir / ".hydra" / "config.yaml").is_file()


def test_launched_eval_needs_a_run_name_and_model_mode(tmp_path, monkeypatch, capsys):
    import pytest

    from salseg.cli import eval as eval_cli
    from salseg.evaluation import EvaluationError

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    images, masks = _custom_set(tmp_path, n=1)
    with pytest.raises(EvaluationError, match="folder mode runs in one process"):
        run(_compose([f"pred_dir={masks}", f"gt_dir={masks}", "progress=false"]), tmp_path / "f")
    monkeypatch.setattr(sys, "argv", ["salseg-eval", "random_weights=true", "model=u2netp",
                                      "data=custom", f"paths.output_dir={tmp_path / 'out'}"])
    with pytest.raises(SystemExit) as exc:
        eval_cli.main()
    assert exc.value.code == 2 and "pass run_name=" in capsys.readouterr().err
    assert not any((tmp_path / "out").rglob("*.yaml"))  # nothing recorded
