"""ONNX export (parity with PyTorch, dynamic shapes, rembg option) and import round trips,
including BatchNorm-folded graphs with anonymous tensor names."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from fixtures.predict.helpers import object_image, random_model, single_thread  # noqa: F401
from onnx import numpy_helper

from salseg.cli.export import main as export_main
from salseg.export.onnx import (
    ExportCheckError,
    _rembg_adapter,
    check_onnx,
    export_onnx,
    onnx_to_state_dict,
)
from salseg.models import create_model
from salseg.models.onnx_import import identity_var
from salseg.models.weights import WeightsError, save_state_dict
from salseg.predict import Predictor
from salseg.weights.load import load_weights, read_state_dict


@pytest.fixture(scope="module")
def model():
    return random_model("u2netp", seed=5)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    folded = export_onnx(model, folder / "folded.onnx", "u2netp", trace_size=64)
    plain = export_onnx(model, folder / "plain.onnx", "u2netp", trace_size=64,
                        fold_batchnorm=False, check=False)  # checked by the exact import
    return folded, plain


def _ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _session(path):
    options = ort.SessionOptions()  # no spinning threads left behind to slow PyTorch down
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _ort(path, x):
    session = _session(path)
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def _torch(model, x):
    with torch.no_grad():
        return [torch.sigmoid(t).numpy() for t in model(x)]


def test_export_parity_and_dynamic_shapes(model, exported):
    folded, plain = exported
    assert max(folded.max_abs_diff.values()) <= 1e-4
    assert folded.outputs == ["fused"] + [f"side{i}" for i in range(1, 7)]
    assert "BatchNormalization" not in _ops(folded.path)
    assert "BatchNormalization" in _ops(plain.path)
    x = torch.randn(3, 3, 69, 50)  # other batch and an odd, non-square size than traced
    for got, want in zip(_ort(folded.path, x), _torch(model, x)):
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4
    meta = {p.key: p.value for p in onnx.load(str(folded.path)).metadata_props}
    assert meta["salseg.model"] == "u2netp"


def test_check_fails_above_tolerance(model, exported):
    other = random_model("u2netp", seed=6)

    class Official(torch.nn.Module):
        def forward(self, x):
            return [torch.sigmoid(t) for t in other(x)]

    with pytest.raises(ExportCheckError, match="differ"):
        check_onnx(exported[0].path, Official(), [(64, 64)])


def test_import_unfolded_graph_is_bit_exact(model, exported):
    state_dict = onnx_to_state_dict(exported[1].path)
    reference = model.state_dict()
    assert list(state_dict) == list(reference)
    for key, value in reference.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(state_dict[key], value), key
    assert set(read_state_dict(exported[1].path)) == set(reference)  # weights.py dispatch


def test_import_folded_graph_reproduces_the_graph(model, exported):
    path = exported[0].path
    state_dict = onnx_to_state_dict(path)
    imported = create_model("u2netp").eval()
    imported.load_state_dict(state_dict, strict=True)
    bn = imported.stage1.rebnconvin.bn_s1
    h = torch.randn(2, bn.num_features, 9, 7) * 5
    with torch.no_grad():
        assert torch.equal(bn(h), h)  # BatchNorm made exactly the identity
    x = torch.randn(2, 3, 72, 88)
    onnx_out, torch_out = _ort(path, x), _torch(imported, x)
    for got, want in zip(torch_out, onnx_out):
        assert np.abs(got - want).max() <= 1e-5
    for got, want in zip(torch_out, _torch(model, x)):
        assert np.abs(got - want).max() <= 1e-4
    v = identity_var(1e-5)
    assert np.float32(v) + np.float32(1e-5) == np.float32(1.0)


def test_import_ignores_names_and_absorbs_bn_epsilon(model, exported, tmp_path):
    proto = onnx.load(str(exported[1].path))
    graph = proto.graph
    renames = {t.name: f"w{i}" for i, t in enumerate(graph.initializer)}
    for t in graph.initializer:
        t.name = renames[t.name]
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "BatchNormalization":
            for attr in node.attribute:
                if attr.name == "epsilon":
                    attr.f = 1e-3
            var = inits[node.input[4]]
            var.CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(var) - np.float32(1e-3 - 1e-5), var.name))
    path = tmp_path / "renamed.onnx"
    onnx.save(proto, str(path))
    state_dict = onnx_to_state_dict(path)
    for key, value in model.state_dict().items():
        if key.endswith("running_var"):
            torch.testing.assert_close(state_dict[key], value, atol=1e-6, rtol=0)
        elif not key.endswith("num_batches_tracked"):
            assert torch.equal(state_dict[key], value), key


def test_import_errors(exported, tmp_path):
    with pytest.raises(WeightsError, match="does not match model u2net"):
        onnx_to_state_dict(exported[0].path, name="u2net")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="not a readable ONNX"):
        onnx_to_state_dict(bad)
    with pytest.raises(WeightsError, match="not found"):
        onnx_to_state_dict(tmp_path / "none.onnx")


def test_onnx_backend_and_onnx_weights_predict_like_torch(model, exported):
    img = object_image(70, 90)
    ref = Predictor(model, model="u2netp", input_size=64).predict(img)
    by_ort = Predictor(exported[0].path, backend="onnx", input_size=64).predict(img)
    imported = Predictor(exported[0].path, input_size=64)  # .onnx imported into PyTorch
    assert imported.name == "u2netp"
    for mask in (by_ort, imported.predict(img)):
        assert np.abs(mask.astype(int) - ref).max() <= 1 and (mask == ref).mean() > 0.99
    net = create_model("u2netp")
    load_weights(net, exported[0].path, name="u2netp")


def test_export_cli_rembg_contract_and_round_trip(model, tmp_path, capsys):
    weights = save_state_dict(model, tmp_path / "m.safetensors")
    out = tmp_path / "m.onnx"
    args = ["--weights", str(weights), "-o", str(out), "--trace-size", "64", "--rembg"]
    assert export_main(args) == 0
    printed = capsys.readouterr().out
    assert "max |diff|" in printed and "u2net_custom" in printed
    assert export_main(args) == 2  # never overwrites without --overwrite
    session = _session(out)
    assert len(session.get_inputs()) == 1
    # what rembg's u2net_custom session feeds: image / max, ImageNet mean/std, float32 NCHW;
    # it reads output 0 as the probability map
    img = object_image(64, 64).astype(np.float64)
    x = img / max(img.max(), 1e-6)
    x = (x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    batch = x.transpose(2, 0, 1)[None].astype(np.float32)
    prob = session.run(None, {session.get_inputs()[0].name: batch})[0]
    with torch.no_grad():
        want = torch.sigmoid(model(torch.from_numpy(batch))[0]).numpy()
    assert prob.shape == (1, 1, 64, 64) and np.abs(prob - want).max() <= 1e-4
    scale, shift, notes = _rembg_adapter("isnet")
    assert scale is None and shift is None and "255" in notes[0]
    with pytest.raises(ValueError, match="rembg"):
        _rembg_adapter("isnet_gt_encoder")
    back = tmp_path / "back.safetensors"
    assert export_main(["--import-onnx", str(out), "-o", str(back)]) == 0
    net = create_model("u2netp").eval()
    load_weights(net, back)
    x = torch.randn(1, 3, 64, 64)
    for got, want in zip(_torch(net, x), _torch(model, x)):
        assert np.abs(got - want).max() <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["isnet", "isnet_gt_encoder"])
def test_isnet_round_trip(name, tmp_path):
    net = random_model(name, seed=7)
    report = export_onnx(net, tmp_path / f"{name}.onnx", name, trace_size=64,
                         check_sizes=[(64, 64), (65, 80)])
    assert max(report.max_abs_diff.values()) <= 1e-4
    imported = create_model(name).eval()
    imported.load_state_dict(onnx_to_state_dict(report.path), strict=True)
    x = torch.randn(1, net.in_ch, 72, 88)
    with torch.no_grad():
        for got, want in zip(imported(x)[0], net(x)[0]):
            assert (torch.sigmoid(got) - torch.sigmoid(want)).abs().max() <= 1e-4


def test_onnx_export_carries_the_checkpoint_preprocessing(model, tmp_path, capsys):
    """An exported ``.ckpt`` predicts like the checkpoint by default (issue 10.7): the training
    input size and the rest of the preprocessing travel in the ONNX metadata."""
    ckpt = tmp_path / "run.ckpt"
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "pytorch-lightning_version": "2.6.0",
                "hyper_parameters": {"name": "u2netp", "input_size": [72, 56]}}, ckpt)
    out = tmp_path / "run.onnx"
    assert export_main(["--weights", str(ckpt), "-o", str(out), "--trace-size", "64"]) == 0
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["salseg.preprocessing"])["input_size"] == [72, 56]
    image = object_image(61, 83, seed=4)
    reference = Predictor(ckpt)
    assert reference.preprocessor.size == (72, 56)
    expected = reference.predict(image)
    for backend in ("onnx", "torch"):
        p = Predictor(out, backend=backend)
        assert p.name == "u2netp" and p.preprocessor.preprocessing == reference.preprocessing
        got = p.predict(image)
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
