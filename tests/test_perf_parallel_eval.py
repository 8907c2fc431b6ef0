"""salseg-eval model mode with num_processes=2 (CPU): exactly the metrics of one process; a
restart predicts only the missing maps."""
from __future__ import annotations

import torch
from test_eval_model import _compose, _custom_set

from salseg.cli.eval import run
from salseg.models import create_model


def test_two_processes_give_exactly_the_same_metrics(tmp_path):
    images, masks = _custom_set(tmp_path, n=4)
    torch.manual_seed(0)
    weights = tmp_path / "u2netp.pth"
    torch.save(create_model("u2netp").state_dict(), weights)
    common = [f"ckpt={weights}", "model=u2netp", "data=custom", f"data.images={images}",
              f"data.masks={masks}", "data.val_split=0", "progress=false", "workers=1",
              "input_size=[64,64]", "device=cpu", "plots=false"]
    one = run(_compose(common), tmp_path / "one")
    two = run(_compose(common + ["num_processes=2"]), tmp_path / "two")
    assert one == two  # every metric, exactly
    (name,) = one
    maps = tmp_path / "two" / ".maps" / name
    assert sorted(p.name for p in maps.iterdir()) == [f"im{i}.png" for i in range(4)]
    # restart after an interruption: the remaining maps are reused, the missing one predicted
    (maps / "im2.png").unlink()
    stamp = (maps / "im0.png").stat().st_mtime_ns
    again = run(_compose(common + ["num_processes=2", "overwrite=true"]), tmp_path / "two")
    assert again == one and (maps / "im2.png").is_file()
    assert (maps / "im0.png").stat().st_mtime_ns == stamp
