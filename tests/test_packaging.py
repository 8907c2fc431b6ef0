"""Reproducible installs (issue 9 item 6): requirements/constraints.txt pins every direct
requirement of ``salseg[dev]`` within pyproject.toml's ranges (torch 2.14.1 and torchvision
0.29.1 as the local wheels), and ``make install`` / ``make bench`` install through it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parent.parent
CONSTRAINTS = REPO / "requirements" / "constraints.txt"


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def test_constraints_pin_every_direct_requirement_within_its_range():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = _pins()
    for text in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in {CONSTRAINTS.name}"
        assert req.specifier.contains(pins[name], prereleases=True), (req, pins[name])
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert "salseg" not in pins


def test_make_targets_use_the_constraints():
    make = (REPO / "Makefile").read_text()
    installs = re.findall(r"\$\(PY\) -m pip install [^\n]*-e '\.\[[^\n]*", make)
    assert installs and all("-c $(CONSTRAINTS)" in line for line in installs), installs
    assert "CONSTRAINTS := requirements/constraints.txt" in make
    assert re.search(r"^test-latest:", make, re.M) and re.search(r"^lock: test-latest", make, re.M)
    assert re.search(r"^\$\(STAMP\): pyproject.toml \$\(CONSTRAINTS\)", make, re.M)


def test_license_is_an_spdx_string_read_without_warnings():
    """Issue 20: a TOML-table license made setuptools print a deprecation banner at each install."""
    import warnings

    from setuptools.config.pyprojecttoml import read_configuration

    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert doc["project"]["license"] == "Apache-2.0"
    assert any(Requirement(r).name == "setuptools" and Requirement(r).specifier.contains("77")
               and not Requirement(r).specifier.contains("76")
               for r in doc["build-system"]["requires"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_configuration(REPO / "pyproject.toml")
