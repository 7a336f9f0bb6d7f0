"""Golden outputs: an extractor's output may change only together with its version (the staleness guard).

A track row's ``pipeline_version`` fingerprints each extractor's name,
version and parameters; a re-run skips rows with the current fingerprint.
An output that changes under the same version and parameters would leave a
catalog holding old and new values side by side, and nothing would ever
redo the old ones. Fixtures: ``tests/fixtures/golden/<id>.json``, made by
``tests/fixtures/make_golden.py`` (which says what is stored and with what
tolerance).
"""

from __future__ import annotations

import copy
import json
import sys
import warnings

import pytest
from conftest import TESTS_DIR

sys.path.insert(0, str(TESTS_DIR / "fixtures"))
import make_golden  # noqa: E402

pytestmark = pytest.mark.slow

INSTANCES = {make_golden.instance_id(ex): ex for ex in make_golden.instances()}
FIXTURES = {p.stem: p for p in sorted(make_golden.GOLDEN_DIR.glob("*.json"))}


@pytest.fixture(scope="module")
def tracks():
    return make_golden.decoded_tracks()


def test_every_extractor_and_backend_has_a_golden_file():
    missing = sorted(set(INSTANCES) - set(FIXTURES))
    assert not missing, f"no golden output for {missing}: run python tests/fixtures/make_golden.py {' '.join(missing)}"
    stale = sorted(set(FIXTURES) - set(INSTANCES))
    assert not stale, f"golden files of extractors that no longer exist: {stale}; delete them"


def test_golden_tracks_are_still_the_same_audio(tracks):
    # The renderer lives in make_golden.py so mirflow cannot change it; a
    # change there changes every extractor's output and needs new fixtures.
    for name, spec in make_golden.TRACKS.items():
        for path in FIXTURES.values():
            recorded = json.loads(path.read_text(encoding="utf-8"))["tracks"].get(name)
            assert recorded is None or recorded == spec, f"{path.name} was made from other audio: regenerate the fixtures"
    assert set(tracks) == set(make_golden.TRACKS)


def check_golden(ident: str, record: dict, now: dict) -> None:
    """Fail when outputs changed with the same version and parameters; warn when the version was bumped."""
    diffs = make_golden.differences(record["outputs"], now["outputs"])
    if record["version"] != now["version"] or record["params"] != now["params"]:
        if diffs:
            warnings.warn(f"{ident}: version {record['version']} -> {now['version']} (or its parameters) changed and "
                          f"so did its output: refresh the golden file with python tests/fixtures/make_golden.py "
                          f"{ident}", UserWarning, stacklevel=2)
        return
    assert not diffs, (f"output of {ident} changed: bump its version (the staleness guard) or fix the change "
                       f"(then refresh with python tests/fixtures/make_golden.py {ident}):\n  " + "\n  ".join(diffs))


@pytest.mark.parametrize("ident", sorted(set(INSTANCES) & set(FIXTURES)))
def test_output_matches_golden_unless_version_bumped(ident, tracks):
    ex = INSTANCES[ident]
    problems = [f"{r.name}: {why} (install it with: {r.install})" for r in ex.requirements() if (why := r.problem())]
    if problems:
        pytest.skip(f"{ident}: {'; '.join(problems)}")
    record = json.loads(FIXTURES[ident].read_text(encoding="utf-8"))
    check_golden(ident, record, make_golden.golden(ex, tracks))


# ----------------------------------------------------------------------------- the guard itself
def _record() -> dict:
    return {"version": "1", "params": {"backend": "x"},
            "outputs": {"t": {"columns": {"tempo_bpm": 120.0, "key": "A minor", "beat_count": 16},
                              "tables": {"beats": {"rows": 16, "head": {"time_s": [0.5, 1.0, 1.5]}}},
                              "reasons": []}}}


def test_guard_fails_on_a_change_without_a_version_bump():
    golden, now = _record(), _record()
    now["outputs"]["t"]["columns"]["tempo_bpm"] = 120.0 * (1 + 1e-5)  # other CPU: last digits differ
    check_golden("rhythm-x", golden, now)
    now["outputs"]["t"]["tables"]["beats"]["head"]["time_s"][2] = 1.52
    with pytest.raises(AssertionError, match=r"(?s)output of rhythm-x changed: bump its version \(the staleness guard\) "
                                             r"or fix the change.*beats\.head\.time_s\[2\]: golden 1\.5, now 1\.52"):
        check_golden("rhythm-x", golden, now)
    for change in (("columns", "key", "C major"), ("columns", "beat_count", 17)):
        now = _record()
        now["outputs"]["t"][change[0]][change[1]] = change[2]
        with pytest.raises(AssertionError, match=f"{change[1]}: golden"):
            check_golden("rhythm-x", golden, now)


def test_guard_passes_and_asks_for_a_refresh_after_a_bump():
    golden, now = _record(), _record()
    now["outputs"]["t"]["columns"]["tempo_bpm"] = 60.0
    bumped = copy.deepcopy(now)
    bumped["version"] = "2"
    with pytest.warns(UserWarning, match="refresh the golden file"):
        check_golden("rhythm-x", golden, bumped)
    other_params = copy.deepcopy(now)
    other_params["params"] = {"backend": "y"}
    with pytest.warns(UserWarning, match="refresh"):
        check_golden("rhythm-x", golden, other_params)
