"""Expected values of a chapter (``tests/expected/<chapter>.json``): the schema, the checks, calibration.

An expected file holds

* ``metrics``: for each record either ``{"value", "tol"}`` (a calibrated centre and tolerance, with the
  ``floor`` the tolerance may not go below and the ``spread`` [min, max] seen over the calibration runs) or
  hand-set bounds ``{"min", "max"}`` (either may be left out);
* ``claims``: the paper's claims as inequalities between records (``"acc_pgd@0.1 <= acc_fgsm@0.1"``, chains
  ``"a <= b <= c"``, margins ``"a >= b + 0.3"``), each with the paper's number (``paper``), a ``why``, and the
  ``status`` found by calibration: ``reproduced`` (held in every calibration run: asserted),
  ``not reproduced`` (held in none: asserted to fail, so that the prose saying so cannot drift) or ``mixed``
  (reported, not asserted), with ``runs`` = "k/n" and the smallest ``margin`` seen;
* ``sample_sizes``: glob patterns over record names -> number of test items behind a fraction, which sets
  the binomial floor of the tolerance (3 standard errors).

Values never come from hand edits: :func:`calibrate` derives centres, tolerances and statuses from real
runs (``python -m companion calibrate``).
"""
from __future__ import annotations

import fnmatch
import json
import math
import operator
import re
from pathlib import Path
from typing import Any

STATUSES = ("reproduced", "not reproduced", "mixed")
TOLERANCE_PER_RANGE = 1.5   # tol >= 1.5 x (max - min) of the calibration runs, about 3.5 sd for five runs
BINOMIAL_SE = 3.0           # floor for a fraction of n items: 3 binomial standard errors

_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_SPLIT = re.compile(r"\s+(<=|>=|<|>)\s+")
_NAME = r"[A-Za-z][A-Za-z0-9_.@]*"
_NUMBER = r"-?[0-9.]+(?:e-?[0-9]+)?"
_TERM = re.compile(rf"^\s*({_NAME}|{_NUMBER})\s*(?:([+-])\s*([0-9.]+(?:e-?[0-9]+)?))?\s*$")

_TOP_KEYS = {"chapter": str, "profile": str, "note": str, "default_tol": (int, float, type(None)),
             "sample_sizes": dict, "calibration": dict, "metrics": dict, "claims": list}
_METRIC_KEYS = {"value": (int, float), "tol": (int, float), "floor": (int, float), "spread": list,
                "min": (int, float), "max": (int, float)}
_CLAIM_KEYS = {"claim": str, "why": str, "paper": str, "status": str, "runs": str, "margin": (int, float)}


class ExpectedFileError(ValueError):
    """An expected file that does not follow the schema (unknown key, wrong type, claim without a record...)."""


def _check_keys(where: str, item: Any, allowed: dict[str, Any], required: tuple[str, ...]) -> None:
    if not isinstance(item, dict):
        raise ExpectedFileError(f"{where}: must be an object, got {type(item).__name__}")
    unknown = sorted(set(item) - set(allowed))
    if unknown:
        raise ExpectedFileError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    for key in required:
        if key not in item:
            raise ExpectedFileError(f"{where}: missing key {key!r}")
    for key, value in item.items():
        if isinstance(value, bool) or not isinstance(value, allowed[key]):
            raise ExpectedFileError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
        if isinstance(value, float) and not math.isfinite(value):
            raise ExpectedFileError(f"{where}: {key!r} is not finite")


def claim_names(claim: str) -> list[str]:
    """Record names used in ``claim`` (after checking its syntax)."""
    parts = _SPLIT.split(claim.strip())
    if len(parts) < 3 or len(parts) % 2 == 0:
        raise ExpectedFileError(f"claim {claim!r} must read 'term OP term [OP term ...]' with OP one of <=, >=, <, >")
    names = []
    for term in parts[0::2]:
        match = _TERM.match(term)
        if not match:
            raise ExpectedFileError(f"cannot read term {term!r} of claim {claim!r}; write 'name', 'number' or 'name + number'")
        if match.group(1)[0].isalpha():
            names.append(match.group(1))
    return names


def validate(expected: dict[str, Any], *, calibrated: bool = True) -> dict[str, Any]:
    """Raise :class:`ExpectedFileError` unless ``expected`` follows the schema; return it.

    ``calibrated=False`` accepts claims without ``status`` (a file about to be calibrated).
    """
    _check_keys("expected file", expected, _TOP_KEYS, ("chapter", "metrics", "claims"))
    default_tol = expected.get("default_tol")
    for key, spec in expected["metrics"].items():
        where = f"metric {key!r}"
        _check_keys(where, spec, _METRIC_KEYS, ())
        if "value" not in spec and "min" not in spec and "max" not in spec:
            raise ExpectedFileError(f"{where}: give a 'value' (with 'tol') or bounds 'min'/'max'")
        if "value" in spec and spec.get("tol", default_tol) is None:
            raise ExpectedFileError(f"{where}: a 'value' needs a 'tol' (or the file's 'default_tol')")
        if "tol" in spec and spec["tol"] < 0:
            raise ExpectedFileError(f"{where}: 'tol' must be >= 0")
    for pattern, n in expected.get("sample_sizes", {}).items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ExpectedFileError(f"sample_sizes[{pattern!r}] must be a positive integer, got {n!r}")
    for i, item in enumerate(expected["claims"]):
        where = f"claim {i} ({item.get('claim', '?') if isinstance(item, dict) else item!r})"
        _check_keys(where, item, _CLAIM_KEYS, ("claim", "why", "status") if calibrated else ("claim", "why"))
        if not item["why"].strip():
            raise ExpectedFileError(f"{where}: 'why' is empty")
        if "status" in item and item["status"] not in STATUSES:
            raise ExpectedFileError(f"{where}: status {item['status']!r} is not one of {STATUSES}")
        if not claim_names(item["claim"]):
            raise ExpectedFileError(f"{where}: a claim must name at least one record")
    return expected


def path(name: str, root: Path) -> Path:
    return root / "tests" / "expected" / f"{name}.json"


def load(name: str, root: Path, *, calibrated: bool = True) -> dict[str, Any]:
    """The validated expected file of chapter ``name``."""
    file = path(name, root)
    try:
        return validate(json.loads(file.read_text()), calibrated=calibrated)
    except ExpectedFileError as err:
        raise ExpectedFileError(f"{file}: {err}") from None


def _term(text: str, records: dict[str, float]) -> float:
    head, sign, offset = _TERM.match(text).groups()  # type: ignore[union-attr]  # syntax checked by claim_names
    value = records[head] if head[0].isalpha() else float(head)
    if sign:
        value = value + float(offset) if sign == "+" else value - float(offset)
    return value


def evaluate_claim(claim: str, records: dict[str, float]) -> tuple[bool, str, float]:
    """Evaluate ``"a <= b + 0.1"`` (chains allowed) on ``records``.

    Returns (holds, the claim with the values filled in, margin): the margin is the smallest slack over
    the chain's comparisons (negative when the claim fails). A missing record makes the claim fail.
    """
    names = claim_names(claim)
    missing = [n for n in names if n not in records]
    if missing:
        return False, f"record(s) {missing} missing", -math.inf
    parts = _SPLIT.split(claim.strip())
    values = [_term(p, records) for p in parts[0::2]]
    ops = parts[1::2]
    holds = all(_OPS[op](a, b) for a, op, b in zip(values, ops, values[1:]))
    margin = min((b - a) if op in ("<=", "<") else (a - b) for a, op, b in zip(values, ops, values[1:]))
    shown = " ".join(p if i % 2 else f"{p}[{values[i // 2]:.4g}]" for i, p in enumerate(parts))
    return holds, shown, margin


def check_records(name: str, records: dict[str, float], expected: dict[str, Any], *, values: bool = True) -> list[str]:
    """Every difference between ``records`` and the (validated) expected file; an empty list is a pass.

    ``values=False`` checks only the claims (the ``book`` profile: its values are not calibrated).
    """
    finite = {k: v for k, v in records.items()
              if not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)}
    problems = [f"record {k}: not a finite number ({v!r})" for k, v in sorted(records.items()) if k not in finite]
    if values:
        default_tol = expected.get("default_tol")
        for key, spec in expected["metrics"].items():
            if key not in records:
                problems.append(f"metric {key}: expected but not recorded")
                continue
            if key not in finite:
                continue
            got = finite[key]
            if "value" in spec:
                tol = spec.get("tol", default_tol)
                if abs(got - spec["value"]) > tol:
                    problems.append(f"metric {key}: got {got:.4g}, expected {spec['value']:.4g} ± {tol:.3g}")
            if "min" in spec and got < spec["min"]:
                problems.append(f"metric {key}: got {got:.4g}, below the minimum {spec['min']:g}")
            if "max" in spec and got > spec["max"]:
                problems.append(f"metric {key}: got {got:.4g}, above the maximum {spec['max']:g}")
        for key in sorted(set(records) - set(expected["metrics"])):
            problems.append(f"metric {key}: recorded but not in the expected file; calibrate the chapter "
                            f"(python -m companion calibrate {name})")
    for item in expected["claims"]:
        missing = [n for n in claim_names(item["claim"]) if n not in finite]
        if missing:   # whatever its status, a claim on a missing or non-finite record is a problem
            problems.append(f"claim {item['claim']!r}: record(s) {missing} missing")
            continue
        holds, shown, _ = evaluate_claim(item["claim"], finite)
        status = item.get("status", "reproduced")
        if status == "reproduced" and not holds:
            problems.append(f"claim failed: {shown}  ({item['why']})")
        elif status == "not reproduced" and holds:
            problems.append(f"claim now holds although the chapter reports it as not reproduced: {shown}; "
                            f"recalibrate and update the chapter's text  ({item['why']})")
    return problems


def sample_size(key: str, expected: dict[str, Any]) -> int | None:
    """The number of items behind fraction ``key`` (first matching pattern of ``sample_sizes``), if any."""
    for pattern, n in expected.get("sample_sizes", {}).items():
        if fnmatch.fnmatchcase(key, pattern):
            return n
    return None


def _round_up(x: float, digits: int = 2) -> float:
    if x <= 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(x)) - digits + 1)
    return round(math.ceil(x / scale - 1e-9) * scale, 12)


def calibrate(expected: dict[str, Any], runs: dict[str, dict[str, float]],
              claim_runs: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """A new expected file whose centres, tolerances and claim statuses come from the records of ``runs``.

    ``runs`` maps a run's label (seed, thread count, CPU kernel level) to its ``ci`` records; ``claim_runs``
    are further runs (the ``book`` profile's) that count as evidence for the claims' statuses only. For each metric with a
    ``value``: the centre is the middle of the range seen, and the tolerance is the largest of its floor
    (the hand-set ``floor``/former ``tol``/``default_tol``, and 3 binomial standard errors for a fraction of n
    items), and 1.5 times the range. Hand-set bounds stay as they are. Each claim's status is what the runs
    show; a metric seen in no run is an error.
    """
    validate(expected, calibrated=False)
    if len(runs) < 2:
        raise ValueError(f"calibration needs at least two runs, got {len(runs)}")
    new = json.loads(json.dumps(expected))
    names = sorted(set().union(*(set(r) for r in runs.values())))
    for label, records in runs.items():
        bad = [k for k in names if k not in records or not math.isfinite(records[k])]
        if bad:
            raise ValueError(f"calibration run {label!r} lacks or has non-finite records {bad}")
    for item in expected["claims"]:
        unknown = [n for n in claim_names(item["claim"]) if n not in names]
        if unknown:
            raise ValueError(f"claim {item['claim']!r} names {unknown}, which no calibration run recorded")
    default_tol = expected.get("default_tol")
    metrics = {}
    for key in names:
        spec = dict(expected["metrics"].get(key, {}))
        seen = [runs[label][key] for label in runs]
        lo, hi = min(seen), max(seen)
        if "min" in spec or "max" in spec:
            metrics[key] = {k: spec[k] for k in ("min", "max") if k in spec}
            continue
        floor = spec.get("floor", spec.get("tol", default_tol)) or 0.0
        centre = (lo + hi) / 2
        n = sample_size(key, expected)
        if n is not None:
            p = min(max(centre, 1 / n), 1 - 1 / n)
            floor = max(floor, BINOMIAL_SE * math.sqrt(p * (1 - p) / n))
        floor = _round_up(floor)
        metrics[key] = {"value": round(centre, 6), "tol": max(floor, _round_up(TOLERANCE_PER_RANGE * (hi - lo))),
                        "floor": floor, "spread": [round(lo, 6), round(hi, 6)]}
    new["metrics"] = metrics
    evidence = {**runs, **(claim_runs or {})}
    for item in new["claims"]:
        outcomes = [evaluate_claim(item["claim"], records) for records in evidence.values()]
        held = sum(ok for ok, _, _ in outcomes)
        item["status"] = "reproduced" if held == len(evidence) else "not reproduced" if held == 0 else "mixed"
        item["runs"] = f"{held}/{len(evidence)}"
        item["margin"] = round(min(m for _, _, m in outcomes), 6)
    new["calibration"] = {"runs": sorted(runs), "claims_also_from": sorted(claim_runs or {}),
                          "tolerance": f"max(floor, {TOLERANCE_PER_RANGE} x range of the runs)"}
    return validate(new)


def dumps(expected: dict[str, Any]) -> str:
    """The expected file as JSON, one line per metric and per claim field, so that diffs stay readable."""
    def one(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    lines = ["{"]
    items = list(expected.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if key == "metrics":
            body = [f'    {one(k)}: {json.dumps(v, ensure_ascii=False, separators=(", ", ": "))}' for k, v in value.items()]
            lines.append(f'  "metrics": {{\n' + ",\n".join(body) + f"\n  }}{comma}")
        elif key == "claims":
            claims = ["    {\n" + ",\n".join(f"      {one(k)}: {one(v)}" for k, v in c.items()) + "\n    }" for c in value]
            lines.append('  "claims": [\n' + ",\n".join(claims) + f"\n  ]{comma}")
        else:
            lines.append(f"  {one(key)}: {json.dumps(value, ensure_ascii=False, separators=(', ', ': '))}{comma}")
    return "\n".join(lines) + "\n}\n"
