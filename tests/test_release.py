"""Release metadata: one version (pyproject.toml) that CITATION.cff, CHANGELOG.md and the installed package agree
with, a valid-looking CITATION.cff and both licence files. Also run by ``make release-check``."""
from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DIST = "robust-imaging-companion"


def _project() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:   # Python 3.10: read the two keys the tests need
        text = (ROOT / "pyproject.toml").read_text()
        section = text.split("[project]", 1)[1].split("\n[", 1)[0]
        found = dict(re.findall(r'^(name|version)\s*=\s*"([^"]*)"', section, re.M))
        licence = re.search(r'^license\s*=\s*\{\s*text\s*=\s*"([^"]*)"', section, re.M)
        return found | ({"license": {"text": licence.group(1)}} if licence else {})
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _citation() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text())


def _changelog_release() -> tuple[str, str]:
    """Version and date of the newest released section of CHANGELOG.md (``## [X.Y.Z] - YYYY-MM-DD``)."""
    match = re.search(r"^## \[(\d+\.\d+\.\d+[^\]]*)\] - (\d{4}-\d{2}-\d{2})\s*$", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert match, "CHANGELOG.md has no '## [X.Y.Z] - YYYY-MM-DD' section"
    return match.group(1), match.group(2)


def test_citation_has_the_required_keys():
    cff = _citation()
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "version", "date-released", "license", "repository-code"):
        assert isinstance(cff.get(key), str) and cff[key].strip(), f"CITATION.cff: {key} missing or empty"
    assert cff.get("type", "software") == "software"
    assert cff["authors"] and all(a.get("name") or a.get("family-names") for a in cff["authors"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", cff["date-released"]), "date-released must be a quoted YYYY-MM-DD"
    for ref in cff.get("references", []):
        assert {"type", "title", "authors"} <= set(ref), f"reference without type, title or authors: {ref}"


def test_one_version_everywhere():
    version = _project()["version"]
    cff = _citation()
    assert cff["version"] == version, "CITATION.cff version differs from pyproject.toml"
    assert _changelog_release() == (version, cff["date-released"]), \
        "the newest CHANGELOG.md release must be pyproject's version, dated as CITATION.cff's date-released"


def test_installed_version_is_pyprojects():
    import companion

    dists = list(metadata.distributions(name=DIST))
    if not dists:
        assert companion.__version__ == "0+unknown"
        return
    # an editable install records this tree in direct_url.json; its build also leaves an .egg-info in the tree,
    # which comes first on sys.path when Python runs from the tree
    urls = [json.loads(d.read_text("direct_url.json") or "{}").get("url", "").rstrip("/") for d in dists]
    in_tree = [Path(str(getattr(d, "_path", ""))).resolve().is_relative_to(ROOT) for d in dists]
    if ROOT.as_uri() not in urls and not any(in_tree):
        pytest.skip(f"{DIST} is installed from another place ({', '.join(u for u in urls if u) or 'an index'}), "
                    "not from this tree")
    assert companion.__version__ == _project()["version"], "stale install: run `make setup` (pip install -e .)"


def test_licences():
    assert _project()["license"] == {"text": "MIT"} and _citation()["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    text = (ROOT / "LICENSE-text.md").read_text()
    assert "CC BY 4.0" in text and "https://creativecommons.org/licenses/by/4.0/legalcode" in text
