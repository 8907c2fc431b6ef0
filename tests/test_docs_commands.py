"""Executable docs (issue 20): every fenced ``bash`` block of README.md and docs/*.md runs as
written, in a fresh shell, in a sandbox holding what the commands name (tests/doc_sandbox.py).

Conventions of the doc sources:

* the line ``<!-- doc-test: skip REASON -->`` right before a fence: the block is not run (it needs
  a GPU, a cluster, real datasets, downloads or minutes of work); the reason is required;
* ``<!-- doc-test: slow -->``: the block runs only in the slow tests (``make test-all``);
* any other ``bash`` block runs in ``make test``; output examples are fenced as ``text``, and
  every fence names its language (an unlabelled block could hide a command).

README.md's blocks run top to bottom in one shell, in a clean copy of the repository, in
``test_readme_top_to_bottom`` (slow): set-up, ``source .venv/bin/activate``, the demo on tiny
settings (``SALSEG_DEMO_TINY=1``), the first commands.

Config keys the docs name as overrides (``data.cache.enabled=true``, ``aug.gray=...``) must exist
in the composed configs (``test_config_keys_named_in_the_docs_exist``).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from doc_sandbox import REPO, build_sandbox, sandbox_env, write_u2netp_weights, write_weights

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
KEY_DOCS = [*DOCS, REPO / "data" / "README.md"]
MARK = re.compile(r"^\s*<!--\s*doc-test:\s*(\S+)\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")  # indented fences too (inside a list item)
LANGUAGES = {"bash", "text", "python", "yaml", "json", "toml"}
GROUPS = ("data", "aug", "model", "trainer", "callbacks", "logger", "paths")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int          # 1-based line of the opening fence
    lang: str
    text: str
    mark: str | None   # skip | slow | None
    reason: str

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    lines = doc.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, indent, lang = i, m.group(1), m.group(2)
        j = i + 1
        while j < len(lines) and not lines[j].lstrip().startswith("```"):
            j += 1
        mark = MARK.match(lines[start - 1]) if start > 0 else None
        body = [line[len(indent):] if line.startswith(indent) else line
                for line in lines[start + 1:j]]
        out.append(Block(doc, start + 1, lang, "\n".join(body) + "\n",
                         mark.group(1) if mark else None, mark.group(2) if mark else ""))
        i = j + 1
    return out


ALL = [b for doc in DOCS for b in blocks(doc)]
BASH = [b for b in ALL if b.lang == "bash"]
FAST = [b for b in BASH if b.mark is None]
SLOW = [b for b in BASH if b.mark == "slow" and b.doc.name != "README.md"]


def test_every_fence_names_its_language():
    bad = [f"{b.id} ```{b.lang}" for b in ALL if b.lang not in LANGUAGES]
    assert not bad, f"fence without a known language (bash for commands, text for output): {bad}"


def test_every_fence_is_seen():
    """No fence hides from the parser (an indented one in a list item, a ``~~~`` one): every
    line that opens or closes a fence belongs to a parsed block, so a command that is neither
    run nor marked cannot exist."""
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        fences = [n for n, line in enumerate(lines, 1) if line.lstrip().startswith(("```", "~~~"))]
        parsed = [b for b in ALL if b.doc == doc]
        assert len(fences) == 2 * len(parsed), (
            f"{doc.relative_to(REPO)}: {len(fences)} fence lines, {len(parsed)} parsed blocks "
            f"(fence lines {fences})")


def test_doc_test_marks_are_well_formed():
    marks, skips = [], 0
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        for n, line in enumerate(lines):
            if "doc-test" not in line:
                continue
            m = MARK.match(line)
            where = f"{doc.relative_to(REPO)}:{n + 1}"
            assert m, f"{where}: malformed mark {line!r}"
            kind, reason = m.groups()
            assert kind in ("skip", "slow"), f"{where}: unknown mark {kind!r}"
            nxt = lines[n + 1] if n + 1 < len(lines) else ""
            assert nxt.lstrip().startswith("```bash"), f"{where}: a mark must precede a ```bash fence"
            if kind == "skip":
                skips += 1
                assert len(reason.split()) >= 2, f"{where}: a skip needs a reason"
            marks.append(where)
    print(f"doc-test marks: {len(marks)} ({skips} skip, {len(marks) - skips} slow); "
          f"bash blocks: {len(BASH)}, run in make test: {len(FAST)}")
    assert len(FAST) >= 3  # the docs keep commands that run in the fast suite


# ------------------------------------------------------------------ config keys

def _flat(node, prefix: str) -> set[str]:
    keys = {prefix}
    if isinstance(node, dict):
        for k, v in node.items():
            keys |= _flat(v, f"{prefix}.{k}")
    return keys


def _keys_of(overrides: list[str]) -> set[str]:
    from hydra import compose
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(compose("train", overrides=overrides), resolve=False)
    keys: set[str] = set()
    for group in GROUPS:
        keys |= _flat(tree.get(group), group)
    return keys


def _named_keys() -> dict[str, str]:
    groups = "|".join(GROUPS)
    pattern = re.compile(r"(?<![\w./+$-])((?:" + groups + r")(?:\.[A-Za-z_]\w*)+)=")
    found: dict[str, str] = {}
    for doc in KEY_DOCS:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            for m in pattern.finditer(line):
                found.setdefault(m.group(1), f"{doc.relative_to(REPO)}:{n}")
    return found


def test_config_keys_named_in_the_docs_exist():
    """A key counts when the default composition has it, or one with an option of its group
    (``data=custom`` has ``data.images``) or with an experiment (``experiment=finetune``)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from salseg.config import CONFIG_DIR

    named = _named_keys()
    assert {"data.cache.enabled", "aug.gray", "data.drop_last"} <= set(named)
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        known = _keys_of([])
        pending = {k: w for k, w in named.items() if k not in known}
        for group in ("data", "model", "aug", "trainer", "callbacks", "logger", "experiment"):
            if not pending:
                break
            if group != "experiment" and not any(k.startswith(group + ".") for k in pending):
                continue
            for option in sorted((CONFIG_DIR / group).glob("*.yaml")):
                known |= _keys_of([f"{group}={option.stem}"])
                pending = {k: w for k, w in pending.items() if k not in known}
    GlobalHydra.instance().clear()
    assert not pending, f"overrides the docs name that no composed config has: {pending}"


ENTRY = re.compile(r"(?:^|/)(train\.py|eval\.py|salseg-train|salseg-eval|salseg\.cli\.(?:train|eval))$")


def documented_runs() -> list[tuple[str, str, list[str]]]:
    """``(where, config, overrides)`` of every train/eval command in every bash block, marked
    or not: a skipped command is not run, but its overrides must still compose."""
    import shlex

    runs = []
    for block in BASH:
        text = re.sub(r"\\\n", " ", block.text)  # line continuations
        text = re.sub(r"\$\([^()]*\)", "SUBSTITUTED", text)  # $(command): a value only
        for n, line in enumerate(text.splitlines()):
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue
            hit = next((i for i, w in enumerate(words) if ENTRY.search(w)), None)
            if hit is None:
                continue
            config = "eval" if "eval" in words[hit] else "train"
            overrides = []
            for word in words[hit + 1:]:
                if word in ("&&", "||", "|", ";", "&"):
                    break
                key, eq, value = word.partition("=")
                if not eq or word.startswith("-") or key.startswith("hydra."):
                    continue
                if "-m" in words[hit + 1:] and "," in value and not value.startswith("["):
                    value = value.split(",")[0]  # a multirun sweep: its first job
                overrides.append(f"{key}={value}")
            runs.append((f"{block.id} (+{n})", config, overrides))
    return runs


def test_every_documented_train_and_eval_command_composes():
    """The overrides of every documented ``train.py`` / ``eval.py`` command, skipped blocks
    included, are accepted by Hydra: the groups' options exist and every key is in the
    composed config (nothing is run)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from salseg.config import CONFIG_DIR

    runs = documented_runs()
    assert len(runs) >= 20, runs
    bad = []
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        for where, config, overrides in runs:
            try:
                compose(config, overrides=overrides)
            except Exception as err:  # noqa: BLE001 - every failure is listed
                bad.append(f"{where}: {config}.py {' '.join(overrides)}\n    {err}")
    GlobalHydra.instance().clear()
    assert not bad, "documented commands Hydra rejects:\n" + "\n".join(bad)


def test_the_documented_overrides_compose_and_reach_the_datamodule(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from salseg.config import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[
            "data=dis5k", f"data.root={tmp_path}", "data.cache.enabled=true",
            f"data.cache.dir={tmp_path / 'cache'}", "aug.gray=per_channel",
            "data.drop_last=false"])
    GlobalHydra.instance().clear()
    dm = instantiate(cfg.data, verbose=False)
    assert dm.cache_cfg["enabled"] is True and dm.cache is not None
    assert dm.recipe.gray == "per_channel" and dm.recipe.spec.gray == "per_channel"
    assert dm.loader.drop_last is False


# ------------------------------------------------------------------ running the blocks

@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    root = build_sandbox(tmp_path_factory.mktemp("doc_sandbox"))
    write_u2netp_weights(root / "u2netp.pth")
    return root


def run_block(block: Block, cwd: Path, env: dict[str, str], timeout: float = 600
              ) -> subprocess.CompletedProcess:
    script = "set -euo pipefail\n" + block.text
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _check(block: Block, proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (
        f"{block.id} failed (exit {proc.returncode}):\n{block.text}\n--- stdout\n"
        f"{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
    assert "Traceback" not in proc.stderr, (block.id, proc.stderr[-3000:])


def test_fast_doc_commands(sandbox):
    """The unmarked blocks, each in its own fresh shell (concurrently: most of their time is
    Python start-up)."""
    env = sandbox_env(sandbox)
    with ThreadPoolExecutor(max_workers=4) as pool:
        procs = list(pool.map(lambda b: run_block(b, sandbox, env, timeout=300), FAST))
    for block, proc in zip(FAST, procs):
        _check(block, proc)


FINETUNE_RUNS = "outputs/finetune"
DEMO_CKPTS = "outputs/demo/train/checkpoints"


def prepare(block: Block, sandbox: Path, env: dict[str, str]) -> Block:
    """What a slow block names beyond the sandbox, made on demand (placeholders filled from a
    fixture): ``u2net.pth``, ``u2net.onnx`` (exported from it), ``make demo``'s checkpoint, a
    fine-tuning run for ``<run>``."""
    text = block.text
    if "u2net.pth" in text or "u2net.onnx" in text:
        write_weights(sandbox / "u2net.pth", "u2net")
    if "--import-onnx u2net.onnx" in text and not (sandbox / "u2net.onnx").exists():
        export = Block(block.doc, block.line, "bash",
                       "salseg-export --model u2net --weights u2net.pth -o u2net.onnx\n", None, "")
        _check(export, run_block(export, sandbox, env))  # in place of rembg's u2net.onnx
    if DEMO_CKPTS in text and not list((sandbox / DEMO_CKPTS).glob("epoch*.ckpt")):
        demo = Block(block.doc, block.line, "bash", "python train.py experiment=demo\n", None, "")
        _check(demo, run_block(demo, sandbox, env))
    if f"{FINETUNE_RUNS}/<run>" in text:
        runs = sorted((sandbox / FINETUNE_RUNS).glob("*/train_summary.json"))
        if not runs:
            first = next(b for b in SLOW if b.doc == block.doc and "experiment=finetune" in b.text)
            _check(first, run_block(prepare(first, sandbox, env), sandbox, env))
            runs = sorted((sandbox / FINETUNE_RUNS).glob("*/train_summary.json"))
        text = text.replace(f"{FINETUNE_RUNS}/<run>", f"{FINETUNE_RUNS}/{runs[-1].parent.name}")
    return Block(block.doc, block.line, block.lang, text, block.mark, block.reason)


@pytest.mark.slow
@pytest.mark.parametrize("block", SLOW, ids=[b.id for b in SLOW])
def test_slow_doc_commands(block, sandbox):
    env = sandbox_env(sandbox)
    _check(block, run_block(prepare(block, sandbox, env), sandbox, env))


# ------------------------------------------------------------------ the README, top to bottom

def _clean_copy(dest: Path) -> Path:
    """The repository's tracked and new (not ignored) files, mtimes kept, and a ``.venv`` that
    sees the running venv's packages and holds this copy's salseg (nothing installed into the
    running venv)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    venv = dest / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    import sysconfig

    (site / "_shared_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (site / "_salseg_checkout.pth").write_text(str(dest) + "\n")
    for name in ("salseg-train", "salseg-eval", "salseg-predict", "salseg-export", "salseg-data",
                 "salseg-models", "salseg-serve"):
        module = "salseg.cli." + name.split("-", 1)[1]
        script = venv / "bin" / name
        script.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {module} import main\n"
                          "sys.exit(main())\n")
        script.chmod(0o755)
    tb = shutil.which("tensorboard", path=str(Path(sys.executable).parent))
    if tb:
        (venv / "bin" / "tensorboard").symlink_to(tb)
    (venv / ".installed").touch()  # the pinned install is done: make install is quick
    return dest


@pytest.mark.slow
def test_readme_top_to_bottom(tmp_path):
    """The README's bash blocks, in order, in one shell, in a clean copy: what a new user types."""
    repo = _clean_copy(tmp_path / "salseg")
    readme = [b for b in blocks(REPO / "README.md") if b.lang == "bash" and b.mark != "skip"]
    assert "source .venv/bin/activate" in readme[0].text
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SALSEG_", "VIRTUAL_ENV", "PYTHON", "PYTEST_"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(Path(sys.executable).parent)))
    env.update(SALSEG_DEMO_TINY="1", SALSEG_HOME=str(tmp_path / "home"), SALSEG_OFFLINE="1",
               SALSEG_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    script = "set -euo pipefail\n" + "".join(b.text for b in readme)
    proc = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    assert "salseg demo finished" in proc.stdout and "Traceback" not in proc.stderr
    assert "source .venv/bin/activate" in proc.stdout  # make install / the demo say it


def test_the_readme_demo_figure_is_the_demo_s_own_line():
    """Issue 20 item 9: the README's demo time is quoted from the demo's "finished in" line,
    which names the cores and the load average (no hand-written "~3 min")."""
    line = re.compile(r"finished in \d+ s \(\d+ CPU cores, load average \d+\.\d\)")
    assert line.search((REPO / "README.md").read_text()), "README: quote make demo's finished-in line"
    demo = (REPO / "scripts" / "demo.py").read_text()
    assert "finished in {time.time() - start:.0f} s " in demo
    assert "({os.cpu_count()} CPU cores, load average {load:.1f})" in demo


def test_docs_do_not_point_outside_the_repository():
    """Issue 20 item 7: a clone has no ../shared and no OFFICIAL_NOTES; docs/official.md states
    what the project takes from the official code."""
    for doc in KEY_DOCS:
        text = doc.read_text()
        for needle in ("../shared", "OFFICIAL_NOTES"):
            assert needle not in text, f"{doc.relative_to(REPO)} mentions {needle}"
    assert (REPO / "docs" / "official.md").is_file()
