"""Loading checkpoints of every supported kind, strictly, with clear errors."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from parity_helpers import deterministic_state_dict

from salseg.models import create_model
from salseg.models.weights import WeightsError, guess_architecture, save_state_dict
from salseg.weights.load import load_model, load_weights


@pytest.fixture(scope="module")
def u2netp_sd():
    return deterministic_state_dict("u2netp")


def _same(model, sd):
    state = model.state_dict()
    return all(torch.equal(state[k], v) for k, v in sd.items() if not k.endswith("num_batches_tracked"))


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod."])
def test_pth_with_wrapper_prefixes(tmp_path, u2netp_sd, prefix):
    path = tmp_path / "u2netp.pth"
    torch.save(OrderedDict((prefix + k, v) for k, v in u2netp_sd.items()), path)
    assert _same(load_model("u2netp", path), u2netp_sd)


def test_wrapped_state_dict(tmp_path, u2netp_sd):
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": dict(u2netp_sd), "epoch": 3}, path)
    assert _same(load_model("u2netp", path), u2netp_sd)


def test_old_checkpoint_without_num_batches_tracked(tmp_path, u2netp_sd):
    path = tmp_path / "old.pth"
    torch.save(OrderedDict((k, v) for k, v in u2netp_sd.items() if "num_batches_tracked" not in k), path)
    model = load_model("u2netp", path)
    assert _same(model, u2netp_sd)
    assert int(model.stage1.rebnconvin.bn_s1.num_batches_tracked) == 0


def test_lightning_checkpoint(tmp_path, u2netp_sd):
    path = tmp_path / "run.ckpt"
    sd = {f"model.{k}": v for k, v in u2netp_sd.items()}
    sd["gt_encoder.conv_in.conv.weight"] = torch.zeros(1)
    torch.save({"state_dict": sd, "pytorch-lightning_version": "2.6.0", "epoch": 1}, path)
    assert _same(load_model("u2netp", path), u2netp_sd)


def test_safetensors_round_trip(tmp_path, u2netp_sd):
    model = create_model("u2netp")
    model.load_state_dict(u2netp_sd)
    path = save_state_dict(model, tmp_path / "w.safetensors")
    assert _same(load_model("u2netp", path), u2netp_sd)


def test_wrong_architecture_names_the_right_one(tmp_path, u2netp_sd):
    path = tmp_path / "u2netp.pth"
    torch.save(u2netp_sd, path)
    with pytest.raises(WeightsError) as err:
        load_weights(create_model("isnet_gt_encoder"), path, name="isnet_gt_encoder")
    msg = str(err.value)
    assert str(path) in msg and "missing keys" in msg and "unexpected keys" in msg
    assert "this looks like a u2netp checkpoint; use model=u2netp" in msg


def test_guess_architecture_for_every_model():
    for name in ["u2net", "u2netp", "isnet", "isnet_gt_encoder"]:
        with torch.device("meta"):
            sd = create_model(name).state_dict()
        assert guess_architecture(sd) == name


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_model("u2netp", tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        load_model("u2netp", tmp_path / "empty.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth"):
        load_model("u2netp", tmp_path / "junk.pth")


def test_untrusted_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(WeightsError, match="evil.pth"):
        load_model("u2netp", path)
