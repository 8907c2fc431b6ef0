"""Model zoo: catalogue integrity, downloads against a local HTTP server (verify, cache hit,
checksum mismatch, 404 fallback, interrupted transfer, mirror, trust on first use, offline miss,
concurrent downloads), ONNX-source conversion, and names accepted where paths are."""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.predict.helpers import object_image, random_model, save, single_thread  # noqa: F401
from fixtures.zoo_server import ZooServer

from salseg.models.preprocess import Preprocessor
from salseg.models.registry import MODELS, create_model, side_logits
from salseg.models.weights import WeightsError, save_state_dict
from salseg.weights.load import read_state_dict
from salseg.zoo import catalogue
from salseg.zoo.cache import ChecksumError, ZooError, downloads_dir, fetch, recorded_pin
from salseg.zoo.catalogue import Source, ZooEntry, entries
from salseg.zoo.resolve import resolve_weights


@pytest.fixture
def server():
    srv = ZooServer()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def zoo_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("SALSEG_HOME", str(home))
    monkeypatch.delenv("SALSEG_OFFLINE", raising=False)
    monkeypatch.delenv("SALSEG_ZOO_MIRROR", raising=False)
    return home


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def entry(*sources: Source, name: str = "tiny", arch: str = "u2netp", **kw) -> ZooEntry:
    return ZooEntry(name=name, architecture=arch, description="test entry", sources=sources,
                    license="test", training_data="none", paper="none", **kw)


def leftovers(folder: Path) -> list[str]:
    """Files in the cache folder other than lock files."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


PAYLOAD = b"weights" * 1000  # for pinned sources: the checksum is what is checked


@pytest.fixture(scope="module")
def real_weights(tmp_path_factory) -> bytes:
    """A loadable U2-NetP state dict: what an unpinned source must be before it is trusted."""
    path = tmp_path_factory.mktemp("weights") / "u2netp.pth"
    return save_state_dict(random_model("u2netp", seed=11), path).read_bytes()


# -- the catalogue itself ---------------------------------------------------------------------
def test_catalogue_integrity():
    names = [e.name for e in entries()]
    assert len(names) == len(set(names))
    for required in ("u2net", "u2netp", "u2net_human_seg", "isnet", "isnet-general-use",
                     "isnet-anime", "silueta", "u2net_cloth_seg", "briaai/RMBG-1.4"):
        assert required in names
    by_file: dict[str, str | None] = {}
    for e in entries():
        assert e.architecture in MODELS, e.name
        assert e.sources, e.name
        for s in e.sources:
            assert s.format in catalogue.FORMATS, (e.name, s.filename)
            if s.checksum is None:  # explicit unpinned mark, explained
                assert "unpinned" in s.pin_note, (e.name, s.url)
            else:
                alg, _, digest = s.checksum.partition(":")
                assert alg in ("md5", "sha256") and len(digest) == {"md5": 32, "sha256": 64}[alg]
                int(digest, 16)
            # one file name, one content: sources sharing a name share the checksum
            if s.checksum is not None:
                assert by_file.setdefault(s.filename, s.checksum) == s.checksum, s.filename
        # preprocessing the predictor accepts
        pre = Preprocessor(e.architecture, e.input_size, overrides=e.preprocessing_overrides())
        out = pre(object_image(40, 50))
        size = e.input_size or pre.spec.input_size
        assert tuple(out.shape) == (3, *size)
        with torch.device("meta"):  # shapes only: no 176 MB initialisations
            net = create_model(e.architecture, **e.model_kwargs)
        assert getattr(net, "out_ch", 1) == e.out_ch
        if e.prediction == "argmax":
            assert len(e.classes) == e.out_ch
    rembg = {s.filename: s.checksum for e in entries() for s in e.sources
             if "rembg" in s.origin}
    assert rembg["u2netp.onnx"] == "md5:8e83ca70e441ab06c318d82300c84806"
    assert rembg["isnet-anime.onnx"] == "md5:6f184e756bb3bd901c8849220a83e38e"
    anime = catalogue.get_entry("isnet-anime")
    assert anime.mean == (0.485, 0.456, 0.406) and anime.std == (1.0, 1.0, 1.0)
    assert not catalogue.get_entry("briaai/RMBG-1.4").commercial_use
    assert catalogue.get_entry("RMBG-1.4").name == "briaai/RMBG-1.4"
    with pytest.raises(KeyError, match="unknown model-zoo name"):
        catalogue.get_entry("nope")


# -- downloads --------------------------------------------------------------------------------
def test_download_verify_and_cache_hit(server, monkeypatch):
    server.files["/a/w.pth"] = PAYLOAD
    e = entry(Source(server.url("/a/w.pth"), md5(PAYLOAD), "w.pth", "test"))
    path, src = fetch(e, progress=False)
    assert path.read_bytes() == PAYLOAD and path.parent == downloads_dir()
    assert server.hits == ["/a/w.pth"]
    server.close()  # no network any more: the cache answers, offline too
    monkeypatch.setenv("SALSEG_OFFLINE", "1")
    assert fetch(e, progress=False)[0] == path
    assert leftovers(downloads_dir()) == ["w.pth", "w.pth.verified"]


def test_checksum_mismatch_is_refused_and_leaves_nothing(server):
    server.files["/w.pth"] = PAYLOAD
    e = entry(Source(server.url("/w.pth"), md5(b"something else"), "w.pth", "test"))
    with pytest.raises(ZooError, match=r"checksum md5:[0-9a-f]{32} differs from the pinned"):
        fetch(e, progress=False)
    assert leftovers(downloads_dir()) == []


def test_404_then_second_source(server):
    server.files["/good/w.pth"] = PAYLOAD
    e = entry(Source(server.url("/missing/w.pth"), sha256(PAYLOAD), "w.pth", "first"),
              Source(server.url("/good/w.pth"), sha256(PAYLOAD), "w.pth", "second"))
    path, src = fetch(e, progress=False)
    assert src.origin == "second" and path.read_bytes() == PAYLOAD
    assert server.hits == ["/missing/w.pth", "/good/w.pth"]


def test_every_attempt_is_listed(server):
    e = entry(Source(server.url("/x/w.pth"), md5(PAYLOAD), "w.pth", "a"),
              Source(server.url("/y/w.onnx"), md5(PAYLOAD), "w.onnx", "b"))
    with pytest.raises(ZooError) as info:
        fetch(e, progress=False)
    text = str(info.value)
    assert "/x/w.pth" in text and "/y/w.onnx" in text and "404" in text
    assert str(downloads_dir()) in text


def test_interrupted_transfer_moves_on_and_leaves_nothing(server, real_weights):
    PAYLOAD = real_weights  # noqa: N806
    server.files["/cut/w.pth"] = PAYLOAD
    server.truncated.add("/cut/w.pth")
    server.files["/ok/w.pth"] = PAYLOAD
    # unpinned: only the transport can notice the short body
    first = Source(server.url("/cut/w.pth"), None, "w.pth", "cut", "unpinned")
    e = entry(first)
    with pytest.raises(ZooError, match="/cut/w.pth"):
        fetch(e, progress=False)
    assert leftovers(downloads_dir()) == []
    assert recorded_pin(first) is None  # nothing trusted from a broken transfer
    e2 = entry(first, Source(server.url("/ok/w.pth"), None, "w.pth", "ok", "unpinned"))
    path, src = fetch(e2, progress=False)
    assert src.origin == "ok" and path.read_bytes() == PAYLOAD


def test_unpinned_source_is_trusted_on_first_use_only(server, real_weights):
    PAYLOAD = real_weights  # noqa: N806
    server.files["/w.pth"] = PAYLOAD
    src = Source(server.url("/w.pth"), None, "w.pth", "drive", "unpinned")
    path, _ = fetch(entry(src), progress=False)
    assert recorded_pin(src) == sha256(PAYLOAD)
    path.unlink()
    server.files["/w.pth"] = PAYLOAD + b"tampered"
    with pytest.raises(ZooError, match="recorded at the first download"):
        fetch(entry(src), progress=False)
    assert not path.exists()


def test_mirror_is_tried_first_by_file_name(server, monkeypatch):
    server.files["/mirror/w.onnx"] = PAYLOAD
    monkeypatch.setenv("SALSEG_ZOO_MIRROR", server.url("/mirror/"))
    e = entry(Source("http://127.0.0.1:9/unreachable/w.pth", md5(b"x"), "w.pth", "official"),
              Source("http://127.0.0.1:9/unreachable/w.onnx", md5(PAYLOAD), "w.onnx", "rembg"))
    path, src = fetch(e, progress=False)
    assert src.filename == "w.onnx" and path.read_bytes() == PAYLOAD
    assert server.hits == ["/mirror/w.pth", "/mirror/w.onnx"]


def test_mirror_can_be_a_local_folder(tmp_path, monkeypatch):
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "w.pth").write_bytes(PAYLOAD)
    monkeypatch.setenv("SALSEG_ZOO_MIRROR", str(folder))
    e = entry(Source("http://127.0.0.1:9/w.pth", md5(PAYLOAD), "w.pth", "official"))
    assert fetch(e, progress=False)[0].read_bytes() == PAYLOAD


def test_offline_miss_names_the_file_and_the_folder(monkeypatch):
    monkeypatch.setenv("SALSEG_OFFLINE", "1")
    e = entry(Source("http://127.0.0.1:9/w.onnx", md5(PAYLOAD), "w.onnx", "rembg"))
    with pytest.raises(ZooError) as info:
        fetch(e, progress=False)
    text = str(info.value)
    assert "SALSEG_OFFLINE" in text and "w.onnx" in text and str(downloads_dir()) in text


def test_offline_refuses_a_corrupted_cached_copy(server, monkeypatch):
    server.files["/w.pth"] = PAYLOAD
    e = entry(Source(server.url("/w.pth"), md5(PAYLOAD), "w.pth", "test"))
    path, _ = fetch(e, progress=False)
    path.write_bytes(b"corrupted" + PAYLOAD)
    monkeypatch.setenv("SALSEG_OFFLINE", "1")
    with pytest.raises(ChecksumError, match=md5(PAYLOAD)):
        fetch(e, progress=False)


def test_concurrent_downloads_of_one_file(server):
    server.files["/w.pth"] = PAYLOAD
    server.delay = 0.3
    e = entry(Source(server.url("/w.pth"), md5(PAYLOAD), "w.pth", "test"))
    results, errors = [], []

    def work():
        try:
            results.append(fetch(e, progress=False)[0])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert server.hits == ["/w.pth"]  # the others waited and found the verified file
    assert results[0].read_bytes() == PAYLOAD


# -- names where paths are accepted, ONNX conversion --------------------------------------------
def _register(monkeypatch, e: ZooEntry) -> None:
    monkeypatch.setitem(catalogue._BY_NAME, e.name, e)


def _serve_tiny_u2netp(server, monkeypatch, tmp_path, seed: int):
    """A random U2-NetP served as ``/u.pth`` and registered as the zoo name ``tiny-u2netp``."""
    model = random_model("u2netp", seed=seed)
    data = save_state_dict(model, tmp_path / "u.pth").read_bytes()
    server.files["/u.pth"] = data
    _register(monkeypatch, entry(Source(server.url("/u.pth"), md5(data), "u.pth", "t"),
                                 name="tiny-u2netp"))
    return model


def test_pth_source_by_name_and_path_wins(server, monkeypatch, tmp_path):
    model = _serve_tiny_u2netp(server, monkeypatch, tmp_path, seed=1)
    sd = read_state_dict("tiny-u2netp")
    for k, v in model.state_dict().items():
        assert torch.equal(sd[k], v)
    # an existing path of that name wins over the catalogue name
    local = tmp_path / "tiny-u2netp"
    local.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsError, match="empty"):
        read_state_dict("tiny-u2netp")


def test_download_failure_is_a_weights_error(monkeypatch):
    _register(monkeypatch, entry(Source("http://127.0.0.1:9/u.pth", md5(b"x"), "u.pth", "t"),
                                 name="tiny-broken"))
    with pytest.raises(WeightsError, match="could not obtain model-zoo checkpoint 'tiny-broken'"):
        read_state_dict("tiny-broken")


@pytest.mark.parametrize("arch", ["u2netp", "isnet"])
def test_onnx_source_is_converted_checked_and_cached(arch, server, monkeypatch, tmp_path):
    from safetensors import safe_open

    from salseg.export.onnx import export_onnx
    from salseg.predict import Predictor

    model = random_model(arch, seed=3)
    # unchecked export: the zoo's own conversion check compares with onnxruntime below
    onnx_path = export_onnx(model, tmp_path / f"{arch}.onnx", arch, trace_size=64,
                            check=False).path
    data = onnx_path.read_bytes()
    server.files[f"/{arch}.onnx"] = data
    e = entry(Source(server.url(f"/{arch}.onnx"), md5(data), f"{arch}.onnx", "rembg-like"),
              name=f"tiny-{arch}", arch=arch)
    _register(monkeypatch, e)
    resolved = resolve_weights(f"tiny-{arch}", progress=False)
    assert resolved.path.suffix == ".safetensors" and resolved.folded_bn
    with safe_open(str(resolved.path), "pt") as fh:
        meta = fh.metadata()
    assert meta["salseg.zoo"] == f"tiny-{arch}" and meta["salseg.folded_bn"] == "1"
    assert float(meta["salseg.max_abs_diff"]) <= 1e-4
    # the converted weights reproduce the original model (eval mode)
    net = create_model(arch)
    net.load_state_dict(read_state_dict(f"tiny-{arch}"), strict=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, got = model(x), net.eval()(x)
    for a, b in zip(side_logits(arch, ref), side_logits(arch, got)):
        assert (torch.sigmoid(a) - torch.sigmoid(b)).abs().max() <= 1e-4
    # second use: cache hit, no new request, no new conversion
    hits = len(server.hits)
    mtime = resolved.path.stat().st_mtime_ns
    assert resolve_weights(f"tiny-{arch}", progress=False).path == resolved.path
    assert len(server.hits) == hits and resolved.path.stat().st_mtime_ns == mtime
    # the Predictor takes the name and the catalogue's architecture
    p = Predictor(f"tiny-{arch}", input_size=64)
    assert p.name == arch
    assert p.predict(object_image(40, 50)).shape == (40, 50)


def test_class_map_model(server, monkeypatch, tmp_path):
    """A 4-channel U2-Net (cloth parsing): converted from ONNX, predicts argmax class maps."""
    from salseg.export.onnx import export_onnx
    from salseg.predict import Predictor

    torch.manual_seed(4)  # independent of the tests that ran before
    model = create_model("u2netp", out_ch=4).eval()
    onnx_path = tmp_path / "cloth.onnx"
    export_onnx(model, onnx_path, "u2netp", trace_size=64, check=False)
    data = onnx_path.read_bytes()
    server.files["/cloth.onnx"] = data
    e = entry(Source(server.url("/cloth.onnx"), md5(data), "cloth.onnx", "t"),
              name="tiny-cloth", out_ch=4, input_size=(64, 64), prediction="argmax",
              classes=("background", "upper", "lower", "full"))
    _register(monkeypatch, e)
    p = Predictor("tiny-cloth")
    assert p.is_classifier and p.classes[1] == "upper"
    image = object_image(40, 50)
    labels = p.predict_classes(image)
    assert labels.shape == (40, 50) and labels.dtype == np.uint8 and labels.max() <= 3
    # the saved 8-bit mask holds the class indices
    assert np.array_equal(p.predict(image), labels)
    # reference: the original 4-channel network, bilinear scores up-sampling, argmax
    x = p.prepare(image)[None]
    with torch.no_grad():
        fused = model(x)[0]
    up = torch.nn.functional.interpolate(fused, size=(40, 50), mode="bilinear",
                                         align_corners=False)[0]
    # The converted graph (BatchNorm folded, traced) differs from the original network by float
    # rounding (~1e-6), which can flip the argmax where an untrained network's two best class
    # scores are that close: pixels with a clear winner must agree, near-ties may take either.
    top2 = up.topk(2, dim=0)
    clear = (top2.values[0] - top2.values[1] > 1e-4).numpy()
    ref = up.argmax(0).numpy().astype(np.uint8)
    assert clear.mean() > 0.9
    assert np.array_equal(ref[clear], labels[clear])
    tied = ~clear
    assert ((labels[tied] == top2.indices[0].numpy()[tied])
            | (labels[tied] == top2.indices[1].numpy()[tied])).all()


def test_predict_cli_with_a_name(server, monkeypatch, tmp_path):
    from salseg.cli.predict import main as predict_main

    _serve_tiny_u2netp(server, monkeypatch, tmp_path, seed=2)
    image = save(object_image(), tmp_path / "in" / "a.png")
    assert predict_main([str(image), "-o", str(tmp_path / "out"), "--weights", "tiny-u2netp",
                         "--device", "cpu"]) == 0
    assert (tmp_path / "out" / "a.png").is_file()


def test_onnx_backend_with_a_name_runs_the_published_file(server, monkeypatch, tmp_path):
    from salseg.export.onnx import export_onnx
    from salseg.predict import Predictor

    model = random_model("u2netp", seed=6)
    onnx_path = export_onnx(model, tmp_path / "m.onnx", "u2netp", trace_size=64).path
    data = onnx_path.read_bytes()
    server.files["/m.onnx"] = data
    _register(monkeypatch, entry(Source(server.url("/m.onnx"), md5(data), "m.onnx", "t"),
                                 name="tiny-onnx", input_size=(64, 64)))
    onnx_p = Predictor("tiny-onnx", backend="onnx")
    torch_p = Predictor("tiny-onnx")
    assert onnx_p.name == torch_p.name == "u2netp"
    assert onnx_p.preprocessor.size == (64, 64)
    image = object_image(40, 50)
    diff = np.abs(onnx_p.predict(image).astype(int) - torch_p.predict(image).astype(int))
    assert diff.max() <= 1
