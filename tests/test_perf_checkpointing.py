"""Activation checkpointing: the same loss, gradients and BatchNorm statistics as a plain step."""
from __future__ import annotations

import copy

import torch

from salseg.models import create_model, side_logits
from salseg.models.checkpointing import enable_activation_checkpointing


def _step(net, x):
    out = net(x)
    loss = sum(t.float().square().mean() for t in side_logits("isnet_gt_encoder", out))
    loss = loss + sum(f.float().mean() for f in out[1])
    loss.backward()
    return loss.detach()


def test_checkpointed_step_equals_plain_step():
    torch.manual_seed(0)
    plain = create_model("isnet_gt_encoder").train()
    ckpt = copy.deepcopy(plain)
    assert enable_activation_checkpointing(ckpt) == 6
    assert list(ckpt.state_dict()) == list(plain.state_dict())  # keys unchanged
    x = torch.rand(2, 1, 48, 40)
    la, lb = _step(plain, x), _step(ckpt, x)
    torch.testing.assert_close(la, lb)
    for (name, pa), (_, pb) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, atol=1e-5, rtol=1e-4, msg=name)
    sa, sb = plain.state_dict(), ckpt.state_dict()
    for key in sa:  # running statistics updated once, as in a plain step
        torch.testing.assert_close(sa[key], sb[key], atol=1e-6, rtol=1e-5, msg=key)


def test_eval_and_no_grad_run_plain():
    net = create_model("u2netp").eval()
    enable_activation_checkpointing(net)
    with torch.no_grad():
        out = net(torch.rand(1, 3, 32, 32))
    assert out[0].shape == (1, 1, 32, 32)


def test_task_options_fused_optimizer_and_checkpointing():
    import functools

    from salseg.tasks import TrainingTask

    task = TrainingTask(name="u2netp", activation_checkpointing=True, fused_optimizer=True,
                        optimizer=functools.partial(torch.optim.Adam, lr=1e-3))
    assert all(getattr(m, "_salseg_checkpointed", False) for n, m in task.model.named_children()
               if n.startswith("stage"))
    opt = task.configure_optimizers()
    assert opt.defaults["fused"] is True and opt.defaults["lr"] == 1e-3
    plain = TrainingTask(name="u2netp").configure_optimizers()  # CPU: not fused by default
    assert not plain.defaults.get("fused")
    given = TrainingTask(name="u2netp", fused_optimizer=True,
                         optimizer=functools.partial(torch.optim.Adam, foreach=False))
    assert not given.configure_optimizers().defaults.get("fused")  # the config's choice wins


def test_compile_takes_torch_compile_modes(monkeypatch):
    import pytest

    from salseg.tasks import TrainingTask

    seen = []
    monkeypatch.setattr(torch, "compile", lambda module, mode=None: seen.append(mode) or module)
    for value, mode in ((True, None), ("default", None), ("reduce-overhead", "reduce-overhead"),
                        ("max-autotune", "max-autotune")):
        task = TrainingTask(name="u2netp", compile=value)
        assert seen[-1] == mode and len(task._compiled) == 1
        assert not any("_orig_mod" in k for k in task.state_dict())
    count = len(seen)
    assert TrainingTask(name="u2netp", compile=False)._compiled == [] and len(seen) == count
    with pytest.raises(ValueError, match="model.compile must be true, false or one of"):
        TrainingTask(name="u2netp", compile="fastest")
