"""One error style for every entry point (issue 20 item 5): a user error prints one line
``salseg-<cmd>: error: <what> (<where>)``, exits 2 and shows no traceback unless
``SALSEG_DEBUG=1``.  One subprocess per entry point, as a user runs it (started together: most
of their time is Python start-up)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LINE = re.compile(r"^(salseg-[a-z0-9-]+): error: (.+)$", re.M)


def _cases(tmp: Path) -> dict[str, tuple[list[str], str, tuple[str, ...]]]:
    """name -> (argv, expected prog, words the error line must hold)."""
    py = sys.executable
    missing = tmp / "missing"
    empty = tmp / "empty_root"
    out = tmp / "outputs"
    return {
        "train.py data": ([py, "train.py", "data=duts", f"data.root={empty}", "trainer=cpu",
                           f"paths.output_dir={out}", "run_name=t1"],
                          "salseg-train", ("DUTS", str(empty))),
        "train.py override": ([py, "train.py", "data.nosuchkey=1", f"paths.output_dir={out}"],
                              "salseg-train", ("data.nosuchkey", "not in struct")),
        "eval.py alone": ([py, "eval.py", f"paths.output_dir={out}", "run_name=e0"],
                          "salseg-eval", ("pred_dir=", "gt_dir=", "ckpt=")),
        "eval.py data.root": ([py, "eval.py", "random_weights=true", "model=u2netp", "data=duts_te",
                               f"data.root={missing}", f"paths.output_dir={out}",
                               "run_name=e1"], "salseg-eval", (str(missing),)),
        "salseg-train": ([str(BIN / "salseg-train"), "data=duts", f"data.root={empty}",
                          "trainer=cpu", f"paths.output_dir={out}", "run_name=t2"],
                         "salseg-train", ("DUTS", str(empty))),
        "salseg-eval": ([str(BIN / "salseg-eval"), "random_weights=true", "model=u2netp",
                         "data=duts_te", f"data.root={missing}", f"paths.output_dir={out}",
                         "run_name=e2"], "salseg-eval", (str(missing),)),
        "predict.py": ([py, "predict.py", str(tmp / "img.png"), "-o", str(tmp / "p"),
                        "--weights", str(missing / "w.pth")], "salseg-predict", ("w.pth",)),
        "salseg-predict": ([str(BIN / "salseg-predict"), str(tmp / "img.png"), "-o",
                            str(tmp / "p2"), "--weights", str(missing / "w.pth")],
                           "salseg-predict", ("w.pth",)),
        "salseg-export": ([str(BIN / "salseg-export"), "--weights", str(missing / "w.pth"),
                           "-o", str(tmp / "x.onnx")], "salseg-export", ("w.pth",)),
        "salseg-data": ([str(BIN / "salseg-data"), "check", "--images", str(missing / "im"),
                         "--masks", str(missing / "gt")], "salseg-data", (str(missing),)),
        "salseg-models": ([str(BIN / "salseg-models"), "info", "no-such-model"],
                          "salseg-models", ("no-such-model",)),
        "salseg-serve": ([str(BIN / "salseg-serve"), "--weights", str(missing / "w.pth"),
                          "--port", "0"], "salseg-serve", ("w.pth",)),
        "prepare_duts.py": ([py, "scripts/prepare_duts.py", "--root", str(tmp / "d"), "--from",
                             str(tmp / "missing.zip")], "salseg-prepare-duts", ("missing.zip",)),
        "prepare_dis5k.py": ([py, "scripts/prepare_dis5k.py", "--root", str(tmp / "d"), "--from",
                              str(tmp / "missing.zip")], "salseg-prepare-dis5k",
                             ("missing.zip",)),
    }


def _env(debug: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALSEG_", "HYDRA_"))}
    env["PYTHONPATH"] = str(REPO)
    env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    env["OMP_NUM_THREADS"] = "1"
    if debug:
        env["SALSEG_DEBUG"] = "1"
    return env


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_errors")
    (tmp / "empty_root").mkdir()
    cases = _cases(tmp)
    jobs = [(name, argv, _env()) for name, (argv, _, _) in cases.items()]
    jobs.append(("debug", cases["prepare_duts.py"][0], _env(debug=True)))

    def go(job):
        name, argv, env = job
        return name, subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                                    timeout=600)

    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(pool.map(go, jobs))
    return cases, done, tmp


@pytest.mark.parametrize("name", list(_cases(Path("/nonexistent")).keys()))
def test_one_error_line_exit_2_no_traceback(results, name):
    cases, done, tmp = results
    _, prog, words = cases[name]
    proc = done[name]
    err = proc.stderr
    assert proc.returncode == 2, (name, proc.returncode, err[-2000:])
    assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err, err[-2000:]
    lines = LINE.findall(err)
    assert len(lines) == 1, err[-2000:]
    got_prog, what = lines[0]
    assert got_prog == prog, err
    for word in words:
        assert word in what, (word, what)
    if name.startswith(("train.py", "eval.py")):  # nothing of Hydra's own report
        assert "Error executing job" not in err and "Error in call to target" not in err


def test_salseg_debug_shows_the_traceback(results):
    _, done, _ = results
    proc = done["debug"]
    assert proc.returncode == 2 and "Traceback" in proc.stderr
    assert "salseg-prepare-duts: error:" in proc.stderr


def test_nothing_is_extracted_before_a_missing_archive_is_named(results):
    _, _, tmp = results
    assert not (tmp / "d" / "DUTS").exists() and not (tmp / "d" / "DIS5K").exists()


def test_format_error():
    from salseg.cli.errors import format_error

    assert format_error("salseg-x", "bad value\n  more", "a.png") == \
        "salseg-x: error: bad value more (a.png)"
    assert format_error("salseg-x", "a.png: bad", "a.png") == "salseg-x: error: a.png: bad"
