"""``python eval.py reproduce=...`` end to end, through the Hydra entry point in a subprocess, on
tiny stand-in datasets laid out like the real ones: every published cell of the table is
printed with the measured value and the difference (the DIS overall row included), the data
root is checked before any checkpoint is downloaded, and every missing test set is named.
The zoo's entries point at a local HTTP server (tiny random U2-NetP weights); IS-Net runs with
seeded random weights at 64x64."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures.predict.helpers import random_model
from fixtures.zoo_server import ZooServer
from PIL import Image

from salseg.models.weights import save_state_dict

REPO = Path(__file__).resolve().parents[1]
SOD_SETS = ("DUT-OMRON", "DUTS-TE", "HKU-IS", "ECSSD", "PASCAL-S", "SOD")
DIS_SETS = ("DIS-VD", "DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4")
# the Hydra entry point (salseg.cli.eval.main) with the zoo's entries redirected to the test
# server: TEST_ZOO = {name: [url, checksum, file name]}
LAUNCH = """
import json, os, sys
from dataclasses import replace
from salseg.zoo import catalogue
from salseg.zoo.catalogue import Source
for name, (url, checksum, filename) in json.loads(os.environ["TEST_ZOO"]).items():
    entry = catalogue._BY_NAME[name]
    catalogue._BY_NAME[name] = replace(entry, sources=(Source(url, checksum, filename, "test"),))
from salseg.cli.eval import main
sys.argv = ["eval.py", *sys.argv[1:]]
main()
"""


def _write_set(folder: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    (folder / "im").mkdir(parents=True)
    (folder / "gt").mkdir(parents=True)
    for i in range(n):
        h, w = 40 + 4 * i, 48
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        top, left = rng.integers(4, 12, 2)
        mask[top:top + 20, left:left + 24] = 255
        image[mask > 0] //= 3  # an object the network can (barely) see
        Image.fromarray(image).save(folder / "im" / f"img{i}.png")
        Image.fromarray(mask).save(folder / "gt" / f"img{i}.png")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """The six SOD test sets at <root>/<set>/{im,gt} and DIS5K at <root>/DIS5K/<split>/{im,gt}."""
    root = tmp_path_factory.mktemp("datasets")
    for i, name in enumerate(SOD_SETS):
        _write_set(root / name, 2, seed=i)
    for i, split in enumerate(DIS_SETS):
        _write_set(root / "DIS5K" / split, 2, seed=10 + i)
    return root


@pytest.fixture
def server():
    srv = ZooServer()
    yield srv
    srv.close()


def launch(tmp_path: Path, zoo: dict, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TEST_ZOO=json.dumps(zoo), SALSEG_HOME=str(tmp_path / "home"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("SALSEG_OFFLINE", None)
    env.pop("SALSEG_ZOO_MIRROR", None)
    return subprocess.run(
        [sys.executable, "-c", LAUNCH, *overrides, f"paths.output_dir={tmp_path / 'out'}",
         "run_name=r", "progress=false", "plots=false", "html=false", "workers=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def comparison_rows(text: str) -> dict[str, dict[str, list[str]]]:
    """The printed "Paper vs measured" table: dataset -> row label -> cells."""
    section = text[text.index("## Paper vs measured"):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
    rows: dict[str, dict[str, list[str]]] = {}
    dataset = None
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[1] not in ("measured", "paper", "diff"):
            continue
        dataset = cells[0] or dataset
        rows.setdefault(dataset, {})[cells[1]] = cells[2:]
    return rows


def filled(cells: list[str]) -> int:
    return sum(c != "–" for c in cells)


def test_reproduce_u2netp_prints_30_paper_cells_and_30_differences(data_root, server,
                                                                     tmp_path):
    data = save_state_dict(random_model("u2netp", seed=4), tmp_path / "u2netp.pth").read_bytes()
    server.files["/u2netp.pth"] = data
    zoo = {"u2netp": [server.url("/u2netp.pth"), "md5:" + hashlib.md5(data).hexdigest(),
                      "u2netp.pth"]}
    proc = launch(tmp_path, zoo, "reproduce=u2netp", "input_size=[64,64]",
                  f"data.root={data_root}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = comparison_rows(proc.stdout)
    assert list(rows) == list(SOD_SETS)
    assert sum(filled(r["paper"]) for r in rows.values()) == 30
    assert sum(filled(r["diff"]) for r in rows.values()) == 30
    assert sum(filled(r["measured"]) for r in rows.values()) == 30
    assert rows["ECSSD"]["paper"] == ["0.943", "0.041", "0.885", "0.918", "0.808"]
    out = tmp_path / "out" / "eval" / "r"
    comp = json.loads((out / "paper_comparison.json").read_text())
    assert comp["model"] == "u2netp" and comp["tables"] == ["u2net_paper/U2-NetP"]
    metrics = json.loads((out / "metrics.json").read_text())
    for row in comp["rows"]:
        for key, cell in row["metrics"].items():
            measured = metrics[row["dataset"]][key]
            assert cell["measured"] == measured
            assert cell["diff"] == pytest.approx(round(round(measured, 3) - cell["paper"], 3))
    md = (out / "results.md").read_text()
    assert md.count("## Paper vs measured: u2netp") == 1
    sod = md[md.index("### SOD"):]
    assert "**u2netp (measured)**" in sod and "| PiCANet |" in sod and "| Amulet |" in sod
    assert server.hits == ["/u2netp.pth"]


@pytest.mark.slow  # ~25 s CPU: a 44M-parameter network + HCE; the rules are fast-tested in
# tests/test_zoo_published.py
def test_reproduce_isnet_prints_30_paper_cells_and_the_overall_row(data_root, tmp_path):
    proc = launch(tmp_path, {}, "reproduce=isnet", "ckpt=null", "random_weights=true",
                  "model=isnet", "input_size=[64,64]", f"data.root={data_root}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = comparison_rows(proc.stdout)
    assert list(rows) == [*DIS_SETS, "DIS-TE(1-4)"]
    assert sum(filled(rows[s]["paper"]) for s in DIS_SETS) == 30
    assert sum(filled(rows[s]["diff"]) for s in DIS_SETS) == 30
    total = rows["DIS-TE(1-4)"]
    assert total["paper"] == ["0.799", "0.726", "0.070", "0.819", "0.858", "1016"]
    assert filled(total["measured"]) == filled(total["diff"]) == 6
    out = tmp_path / "out" / "eval" / "r"
    metrics = json.loads((out / "metrics.json").read_text())
    comp = {r["dataset"]: r for r in json.loads((out / "paper_comparison.json").read_text())["rows"]}
    for key in ("max_f", "mae", "wf", "sm", "mean_em", "hce"):
        mean = sum(metrics[s][key] for s in DIS_SETS[1:]) / 4
        assert comp["DIS-TE(1-4)"]["metrics"][key]["measured"] == pytest.approx(mean)
    md = (out / "results.md").read_text()
    board = md[md.index("### DIS-TE(1-4)"):]
    assert all(f"| {m} |" in board for m in ("IS-Net", "U2-Net", "BASNet", "HRNet", "PFNet"))


def test_reproduce_checks_the_data_before_downloading(server, tmp_path):
    """Issue 20 item 6: an empty data root is reported, naming all six missing sets, before
    anything is downloaded (the zoo's u2net points at the local server)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    server.files["/u2net.pth"] = b"not reached"
    zoo = {"u2net": [server.url("/u2net.pth"), "md5:" + "0" * 32, "u2net.pth"]}
    proc = launch(tmp_path, zoo, "reproduce=u2net", f"data.root={empty}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.startswith("salseg-eval: error: ")
    assert "6 of 6 test sets not found" in proc.stderr
    for name in SOD_SETS:
        assert f"- {name}: " in proc.stderr, name  # one error line names every set
    assert server.hits == []
    assert not (tmp_path / "home" / "zoo" / "downloads").exists()


def test_reproduce_with_a_checkpoint_at_hand_names_every_missing_set(tmp_path):
    """Issue 20 item 6, second half: with ``ckpt=`` a local file, the missing data was reported
    one set at a time (the first of six); now all six in one error, exit 2."""
    empty = tmp_path / "empty"
    empty.mkdir()
    import torch

    from salseg.models import create_model

    torch.manual_seed(0)
    torch.save(create_model("u2netp").state_dict(), tmp_path / "w.pth")
    proc = launch(tmp_path, {}, "reproduce=u2netp", f"ckpt={tmp_path / 'w.pth'}",
                  f"data.root={empty}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.startswith("salseg-eval: error: 6 of 6 test sets not found")
    for name in SOD_SETS:
        assert f"- {name}: " in proc.stderr, name
