"""Every registered extractor, with every backend and model, passes mirflow.testing's contract checks.

The second half checks the checks: small extractors that break one rule
each must fail the check meant to catch them, with a message that says what
to fix.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import unittest

import numpy as np
import pytest

from mirflow.errors import ParameterError
from mirflow.extractors import Extraction, Extractor, Params, param, registry
from mirflow.testing import (
    CHECKS,
    RecordingFrontend,
    check_declaration,
    check_determinism,
    check_extractor,
    check_outputs_conform,
    check_params,
    check_picklable,
    check_requires,
    check_schema_declarations,
    extractor_id,
    parametrize_with_checks,
    registered_instances,
)

INSTANCES = registered_instances()

#: Contract violations of built-in extractors that are known and reported
#: (instance id, check name) -> part of the message. Each is asserted to
#: still fail, so that fixing one makes this test fail until it is removed here.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


@parametrize_with_checks(INSTANCES)
def test_registered_extractors_keep_the_contract(extractor, check):
    known = KNOWN_VIOLATIONS.get((extractor_id(extractor), check.__name__))
    if known is None:
        check(extractor)
        return
    try:
        check(extractor)
    except AssertionError as exc:
        assert known in str(exc), f"a different failure than the known one: {exc}"
    else:
        pytest.fail(f"{extractor_id(extractor)} now passes {check.__name__}: remove it from KNOWN_VIOLATIONS")


def test_every_backend_and_model_choice_is_checked():
    ids = {extractor_id(ex) for ex in INSTANCES}
    # The built-ins (plugins that other tests register later in the session are not collected here).
    for name in registry.BUILTIN:
        fields = {f.name: f for f in dataclasses.fields(registry.get(name).Params)}
        for axis in ("backend", "model"):
            if axis in fields:
                expected = {c for c in fields[axis].metadata["choices"] if c != "onnx"}
                assert {i.split("-", 1)[1] for i in ids if i.split("-", 1)[0] == name} == expected
        if not ({"backend", "model"} & set(fields)):
            assert name in ids
    assert "embeddings-onnx" not in ids  # needs a model file only a user has


# ----------------------------------------------------------------------------- the checks catch what they should
@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyParams(Params):
    gain: float = param(1.0, range=(0.0, 10.0), doc="multiplies the level")
    mode: str = param("rms", choices=("rms", "peak"), doc="which level")


class Toy(Extractor):
    """A well-behaved extractor: the level of the signal into ``rms_dbfs``."""

    name = "toy"
    version = "1"
    Params = ToyParams
    columns = ("rms_dbfs",)
    requires = ("signal",)
    licences = ("MIT",)

    def extract(self, frontend) -> Extraction:
        y = frontend.signal(22050)
        if y.size == 0 or not np.any(y):
            return self.empty("silent", reason="silent")
        level = float(np.sqrt(np.mean(y.astype(np.float64) ** 2))) if self.params.mode == "rms" else float(np.max(np.abs(y)))
        return self.result({"rms_dbfs": 20 * np.log10(level * self.params.gain)})


def test_a_well_behaved_plugin_passes():
    check_extractor(Toy())
    check_extractor(Toy(mode="peak"))


class UndeclaredStft(Toy):
    name = "undeclared_stft"

    def extract(self, frontend) -> Extraction:
        frontend.stft(sample_rate_hz=22050)
        return super().extract(frontend)


class UndeclaredInCallback(Toy):
    name = "undeclared_in_callback"

    def extract(self, frontend) -> Extraction:
        # Inside a cached() callback: still the extractor's use of the input.
        frontend.cached("toy-mel", lambda: frontend.mel(sample_rate_hz=22050))
        return super().extract(frontend)


class UndeclaredInPartial(Toy):
    name = "undeclared_in_partial"
    requires = ("signal", "cached")

    def extract(self, frontend) -> Extraction:
        # A callback without a Python frame of its own still counts.
        frontend.cached("toy-stft", functools.partial(frontend.stft, sample_rate_hz=22050))
        return super().extract(frontend)


class UndeclaredProbe(Toy):
    name = "undeclared_probe"
    requires = ("signal", "cached")

    def extract(self, frontend) -> Extraction:
        _ = frontend.info
        return super().extract(frontend)


class RawSamples(Toy):
    name = "raw_samples"

    def extract(self, frontend) -> Extraction:
        _ = frontend.audio.samples
        return super().extract(frontend)


@pytest.mark.parametrize(("cls", "what"), [
    (UndeclaredStft, "'stft' (through frontend.stft())"),
    (UndeclaredInCallback, "'cached' (through frontend.cached())"),
    (UndeclaredInPartial, "'stft' (through frontend.stft())"),
    (UndeclaredProbe, "'probe' (through frontend.info)"),
    (RawSamples, "'channels' (through frontend.audio.samples)"),
])
def test_requires_is_enforced(cls, what):
    with pytest.raises(AssertionError, match="does not declare in requires") as exc:
        check_requires(cls())
    assert what in str(exc.value)
    assert cls.name in str(exc.value)


def test_requires_does_not_count_the_frontends_own_calls():
    # stft() asks the frontend for signal() and cached() itself: only stft is the caller's.
    fe = RecordingFrontend.from_array(np.ones(4096, dtype=np.float32), 22050)
    fe.stft(sample_rate_hz=22050)
    assert set(fe.touched) == {"stft"}
    fe.reset()
    _ = fe.duration_s, fe.is_empty, fe.native_sample_rate_hz, fe.audio.channels
    assert fe.touched == {}


class NotANumber(Toy):
    name = "not_a_number"

    def extract(self, frontend) -> Extraction:
        return self.result({"rms_dbfs": float("nan")})


class NoReason(Toy):
    name = "no_reason"

    def extract(self, frontend) -> Extraction:
        return self.result({"rms_dbfs": None})


class WrongType(Toy):
    name = "wrong_type"

    def extract(self, frontend) -> Extraction:
        return Extraction(columns={"rms_dbfs": "loud"})


class UnknownColumn(Toy):
    name = "unknown_column"
    columns = ("no_such_column",)


class UnknownTable(Toy):
    name = "unknown_table"
    tables = ("no_such_table",)


class BadTableRows(Toy):
    name = "bad_table_rows"
    columns = ()
    tables = ("beats",)

    def extract(self, frontend) -> Extraction:
        return self.result({}, {"beats": {"time_s": [0.5, 1.0], "no_such": [1, 2]}})


class Random(Toy):
    name = "random"

    def extract(self, frontend) -> Extraction:
        return self.result({"rms_dbfs": -random.random()})  # noqa: S311 - the point is that it is random


class KeepsAModel(Toy):
    name = "keeps_a_model"

    def extract(self, frontend) -> Extraction:
        self.model = np.zeros(10_000)  # a model loaded in the worker and left on the instance
        return super().extract(frontend)


def test_outputs_are_checked_against_the_schemas():
    with pytest.raises(AssertionError, match="use None, not NaN"):
        check_outputs_conform(NotANumber())
    with pytest.raises(AssertionError, match=r"\['rms_dbfs'\] are empty on music audio without a reason"):
        check_outputs_conform(NoReason())
    with pytest.raises(AssertionError, match="do not conform to the schema"):
        check_outputs_conform(WrongType())
    with pytest.raises(AssertionError, match="does not conform to its schema"):
        check_outputs_conform(BadTableRows())
    with pytest.raises(AssertionError, match=r"columns not in the tracks schema: \['no_such_column'\]"):
        check_schema_declarations(UnknownColumn())
    with pytest.raises(AssertionError, match=r"tables without a schema: \['no_such_table'\]"):
        check_schema_declarations(UnknownTable())


def test_determinism_and_pickling_are_checked():
    with pytest.raises(AssertionError, match="not deterministic: .*rms_dbfs"):
        check_determinism(Random())
    with pytest.raises(AssertionError, match="pickles to .* bytes after a run"):
        check_picklable(KeepsAModel())


@dataclasses.dataclass(frozen=True, kw_only=True)
class UncheckedParams(Params):
    # A range declared in the doc only, not with param(range=...): nothing validates it.
    gain: float = param(1.0, doc="multiplies the level, 0-10")


class Unvalidated(Toy):
    name = "unvalidated"
    Params = UncheckedParams


@dataclasses.dataclass(frozen=True)
class PositionalParams(Params):
    gain: float = param(1.0, range=(0.0, 10.0), doc="multiplies the level")


class Positional(Toy):
    name = "positional"
    Params = PositionalParams


class Unlicensed(Toy):
    name = "unlicensed"
    licences = ()


class BadInput(Toy):
    name = "bad_input"
    requires = ("waveform",)


def test_declarations_and_parameters_are_checked():
    check_params(Toy())
    with pytest.raises(AssertionError, match="keyword-only"):
        check_params(Positional())
    with pytest.raises(AssertionError, match="licences"):
        check_declaration(Unlicensed())
    with pytest.raises(AssertionError, match=r"unknown inputs \['waveform'\]"):
        check_declaration(BadInput())
    # No declared range: an out-of-range value is simply accepted, and the check has nothing to try.
    check_params(Unvalidated())
    with pytest.raises(ParameterError, match="gain"):
        Toy(gain=11.0)


def test_missing_backend_is_a_skip_with_the_requirement():
    from mirflow.extractors.requirements import Requirement

    class NeedsAbsent(Toy):
        name = "needs_absent"

        def requirements(self):
            return (Requirement("nosuchlib", "pip install nosuchlib", module="mirflow_no_such_module"),)

    with pytest.raises(unittest.SkipTest, match="nosuchlib .*pip install nosuchlib"):
        check_extractor(NeedsAbsent())


@parametrize_with_checks([Toy()])
def test_parametrize_with_checks_for_plugin_authors(extractor, check):
    check(extractor)


def test_parametrize_with_checks_ids():
    mark = parametrize_with_checks([Toy(), Toy(mode="peak")])
    assert mark.args[0] == ("extractor", "check")
    assert len(mark.args[1]) == 2 * len(CHECKS)
    assert mark.kwargs["ids"][0] == "toy-check_declaration"
