"""The model-card contract (issue 11): every registered card passes the same battery, and a toy
architecture defined in this file passes it too without editing any module of the package
(the "adding a model" checklist of docs/architecture.md).

Battery: construction, strict load of its official manifest (where it has one), forward at any
size, ``to_official``, prediction at an odd size, ONNX round trip (onnxruntime parity and the
preprocessing read back from the metadata), one training step of its task.  The 44M-parameter
networks run the two costly checks (ONNX, training step) in the slow suite only.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures.predict.helpers import object_image, single_thread  # noqa: F401
from parity_helpers import FIXTURES, deterministic_state_dict
from torch import nn

from salseg.export.onnx import export_onnx, read_metadata
from salseg.models.card import (
    ModelCard,
    ModelOutputs,
    Preprocessing,
    cards,
    get_card,
    register_card,
    unregister_card,
)
from salseg.predict.predictor import Predictor

PACKAGE = Path(__file__).resolve().parents[1] / "salseg"
HEAVY = {"u2net", "isnet", "birefnet_lite"}  # 44M parameters: ONNX, training step slow
VERY_HEAVY = {"birefnet"}  # 220M parameters (Swin-L): the whole battery in the slow suite


# -- a toy architecture, defined here only ----------------------------------------------------
class ToyNet(nn.Module):
    """Two supervised maps (a full-resolution head and a coarse auxiliary head), dict output."""

    def __init__(self, in_ch: int = 3, out_ch: int = 1) -> None:
        super().__init__()
        self.enc = nn.Conv2d(in_ch, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, out_ch, 1)
        self.aux = nn.Conv2d(4, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = F.relu(self.bn(self.enc(x)))
        coarse = F.max_pool2d(h, 2, ceil_mode=True)
        aux = F.interpolate(self.aux(coarse), size=x.shape[-2:], mode="bilinear",
                            align_corners=False)
        return {"out": self.head(h), "aux": aux}


def _toy_outputs(raw: dict[str, torch.Tensor]) -> ModelOutputs:
    return ModelOutputs(sides=[raw["out"], raw["aux"]], features=[], prediction=raw["out"])


TOY = ModelCard(
    name="toy_contract", build=ToyNet, aliases=("toy_alias",),
    preprocessing=Preprocessing(input_size=(32, 32), scale="255", mean=(0.5, 0.5, 0.5),
                                std=(0.25, 0.25, 0.25), gray="per_channel", resize="torch_trunc",
                                restore="float"),
    outputs=_toy_outputs, to_official=lambda raw: [torch.sigmoid(raw["out"]),
                                                   torch.sigmoid(raw["aux"])],
    side_names=("out", "aux"), encoder_prefixes=("enc.", "bn."),
    default_aug="u2net_paper")

NAMES = [c.name for c in cards()] + [TOY.name]
COSTLY = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY | VERY_HEAVY else n
          for n in NAMES]
PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n in VERY_HEAVY else n for n in NAMES]


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
    register_card(TOY)
    yield
    unregister_card(TOY.name)


@pytest.fixture(params=PARAMS)
def card(request) -> ModelCard:
    return get_card(request.param)


def _size(card: ModelCard, size: tuple[int, int]) -> tuple[int, int]:
    """``size`` rounded up to the card's input multiple (BiRefNet: 32)."""
    m = card.size_multiple
    return tuple(-(-s // m) * m for s in size)


def _model(card: ModelCard, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return card.build().eval()


# -- the battery ------------------------------------------------------------------------------
class TestModelCardContract:
    def test_construction_and_registry(self, card):
        model = card.build()
        assert isinstance(model, nn.Module) and model.state_dict()
        for alias in card.aliases:
            assert get_card(alias) is card and get_card(alias.upper()) is card
        keys = [k for k, _ in model.named_parameters()]
        assert card.encoder_prefixes and any(k.startswith(card.encoder_prefixes) for k in keys)
        assert not all(k.startswith(card.encoder_prefixes) for k in keys)  # a decoder remains
        importlib.import_module(card.task.rsplit(".", 1)[0])

    def test_strict_load_of_official_manifest(self, card):
        if card.official_manifest is None:
            pytest.skip(f"{card.name} has no official manifest")
        assert (FIXTURES / f"{card.official_manifest}.json").is_file()
        card.build().load_state_dict(deterministic_state_dict(card.official_manifest),
                                      strict=True)

    @pytest.mark.parametrize("size", [(37, 53), (64, 48)])
    def test_any_size_forward_and_to_official(self, card, size):
        size = _size(card, size)
        model = _model(card)
        x = torch.randn(1, card.preprocessing.in_channels, *size)
        with torch.no_grad():
            raw = model(x)
        out = card.outputs(raw)
        assert out.sides and all(s.shape == (1, 1, *size) for s in out.sides)
        assert out.prediction.shape == (1, 1, *size)
        assert any(s is out.prediction for s in out.sides)
        flat = card.official_flat(raw)
        assert len(flat) == len(out.sides) + len(out.features)
        for prob, logit in zip(flat, out.sides):
            assert torch.equal(prob, torch.sigmoid(logit))
        assert card.to_official(raw) is not None
        assert len(card.onnx_output_names()) == len(out.sides)
        assert len(card.onnx_output_names(True)) == len(out.sides) + len(card.feature_names)

    def test_prediction_at_an_odd_size(self, card):
        if not card.can_predict:
            with pytest.raises(ValueError, match="takes masks"):
                Predictor(_model(card), model=card.name)
            return
        size = _size(card, (33, 47))
        p = Predictor(_model(card), model=card.name, input_size=size, device="cpu")
        assert p.preprocessor.preprocessing == replace(card.preprocessing, input_size=size)
        mask = p.predict(object_image(41, 59, seed=2))
        assert mask.shape == (41, 59) and mask.dtype == np.uint8

    @pytest.mark.parametrize("name", COSTLY)
    def test_onnx_round_trip(self, name, tmp_path):
        card = get_card(name)
        model = _model(card, seed=1)
        pre = replace(card.preprocessing, input_size=_size(card, (48, 40)))
        report = export_onnx(model, tmp_path / "m.onnx", card.name, trace_size=64,
                             check_sizes=[(64, 64), (45, 71)], preprocessing=pre)
        assert max(report.max_abs_diff.values()) <= 1e-4
        assert read_metadata(report.path) == (card.name, pre)
        if card.can_predict:
            p = Predictor(report.path, backend="onnx", device="cpu")
            assert p.name == card.name and p.preprocessor.size == pre.input_size

    @pytest.mark.parametrize("name", COSTLY)
    def test_training_step(self, name):
        card = get_card(name)
        task_cls = getattr(importlib.import_module(card.task.rsplit(".", 1)[0]),
                           card.task.rsplit(".", 1)[1])
        kwargs = {"feature_sync": False} if card.gt_encoder else {}
        task = task_cls(name=card.name, input_size=[32, 32], **kwargs)
        task.train()
        mask = (torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) > 0.5)
        batch = {"image": torch.randn(2, 3, 32, 32), "mask": mask.float()}
        outputs = task(task.model_input(batch))
        loss, terms = task.compute_loss(batch, outputs)
        assert torch.isfinite(loss) and terms
        optimizer = task.configure_optimizers()
        optimizer.zero_grad()
        loss.backward()
        before = {k: v.detach().clone() for k, v in task.model.named_parameters()}
        optimizer.step()
        changed = [k for k, v in task.model.named_parameters() if not torch.equal(v, before[k])]
        assert changed


# -- no architecture is named outside its card ------------------------------------------------
CARD_MODULES = {"models/card.py", "models/u2net.py", "models/isnet.py", "models/birefnet.py"}


def test_no_architecture_name_checks_outside_the_cards():
    names = sorted({n for c in cards() for n in (c.name, *c.aliases)}, key=len, reverse=True)
    alt = "|".join(re.escape(n) for n in names)
    quoted = rf"[\"'](?:{alt})[\"']"
    pattern = re.compile(rf"is_u2net|is_isnet|[=!]=\s*{quoted}|{quoted}\s*[=!]=|"
                         rf"\bin\s*[\(\[\{{]\s*{quoted}")
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in CARD_MODULES:
            continue
        for no, line in enumerate(path.read_text().splitlines(), 1):
            # the metric *conventions* are named after the papers (u2net / dis), not models
            if pattern.search(line):
                hits.append(f"salseg/{rel}:{no}: {line.strip()}")
    assert not hits, "architecture-name checks outside the model cards:\n" + "\n".join(hits)


# Where an architecture may be named in code (docstrings and comments aside), and why.
NAMING_ALLOWED = {
    "models/u2net.py": "the architecture",
    "models/isnet.py": "the architecture",
    "models/birefnet.py": "the architecture",
    "models/card.py": "BUILTIN_CARD_MODULES: where the built-in cards are registered",
    "models/__init__.py": "the public re-exports of the networks",
    "models/parity.py": "the outside parity checkers' hooks (names fixed by the checkers)",
    "losses/parity.py": "the outside parity checkers' loss functions (names fixed by them)",
    "zoo/catalogue.py": "catalogue records: each real checkpoint names its card",
    "zoo/published.py": "the papers' published tables, named after the papers' models",
    "metrics/conventions.py": "the u2net convention record (named after the paper's protocol)",
    "data/transforms.py": "the papers' augmentation recipes name the card that normalises",
}


def _code_tokens(text: str):
    """(line, token) of every name and non-docstring string of ``text`` (no comments)."""
    import io
    import tokenize

    previous = tokenize.NEWLINE
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.STRING and previous in (
                tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.NL):
            previous = tok.type  # a docstring (a string that is a statement of its own)
            continue
        if tok.type in (tokenize.NAME, tokenize.STRING):
            yield tok.start[0], tok.string
        if tok.type not in (tokenize.COMMENT, tokenize.NL):
            previous = tok.type


def test_no_architecture_specific_code_outside_its_module_card_and_config():
    """Issue 22's "done": no code outside ``salseg/models/<arch>.py`` (its card lives there)
    names an architecture — no card name, no class of an architecture module — except the
    places of :data:`NAMING_ALLOWED`, each with its reason.  Docstrings and comments may cite
    the papers."""
    import inspect

    names = {c.name for c in cards() if c.build.__module__.startswith("salseg.")}
    for module in {c.build.__module__ for c in cards() if c.build.__module__.startswith("salseg.")}:
        mod = importlib.import_module(module)
        names |= {n for n, obj in vars(mod).items()
                  if inspect.isclass(obj) and obj.__module__ == module}
    pattern = re.compile(r"(?<![\w.])(?:" + "|".join(
        re.escape(n) for n in sorted(names, key=len, reverse=True)) + r")(?!\w)", re.IGNORECASE)
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in NAMING_ALLOWED or rel.startswith("models/backbones/"):
            continue
        for no, token in _code_tokens(path.read_text()):
            if pattern.search(token):
                hits.append(f"salseg/{rel}:{no}: {token[:80]}")
    assert not hits, "architecture-specific code outside the architecture modules:\n" + \
        "\n".join(hits)
