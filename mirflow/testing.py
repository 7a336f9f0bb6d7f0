"""Check that an extractor keeps the extractor contract (scikit-learn's ``check_estimator`` idea).

Plugin authors run the same checks as the built-in extractors::

    from mirflow.testing import check_extractor

    def test_my_extractor_keeps_the_contract():
        check_extractor(MyExtractor())

or one test per check, with pytest::

    from mirflow.testing import parametrize_with_checks

    @parametrize_with_checks([MyExtractor(), MyExtractor(backend="fast")])
    def test_contract(extractor, check):
        check(extractor)

Each check raises :class:`AssertionError` with a message naming the
extractor and what broke. When an instance's backend is not usable here (its
:meth:`~mirflow.extractors.Extractor.requirements` report a problem), the
checks that run it raise :class:`unittest.SkipTest` with the requirement's
message, which pytest reports as a skip.

What is checked
---------------
* declaration: name, version, licences, ``requires`` within
  :data:`mirflow.frontend.INPUTS`, columns and tables as tuples of names;
* parameters: a frozen, keyword-only :class:`~mirflow.extractors.Params`
  dataclass whose defaults are valid, and whose bad values (unknown key,
  value outside ``choices`` or ``range``) raise
  :class:`~mirflow.errors.ParameterError` naming the key;
* schemas: declared columns exist in the ``tracks`` schema and declared
  tables have schemas (see :func:`mirflow.catalog.schema.schema_dirs`);
* outputs on music, digital silence, empty audio and very short audio
  conform to the schemas (:func:`mirflow.catalog.conform`), use ``None``
  rather than NaN/inf, and every empty value comes with a reason
  (:attr:`~mirflow.extractors.Extraction.reasons`);
* determinism: a second run on a fresh frontend gives the same output;
* ``requires`` is enforced: the frontend records the inputs ``extract``
  touches, and touching one the class does not declare fails;
* picklable and small (< 10 kB) after a run (Dask ships instances to
  workers; models must be loaded on the worker, not kept on the instance).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import pickle
import sys
import tempfile
import unittest
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mirflow.catalog.schema import conform, load_schemas, table_schema
from mirflow.errors import ParameterError
from mirflow.extractors.base import Extraction, Extractor, Params
from mirflow.frontend import INPUTS, Frontend

__all__ = [
    "CHECKS",
    "RecordingFrontend",
    "check_declaration",
    "check_determinism",
    "check_extractor",
    "check_outputs_conform",
    "check_params",
    "check_picklable",
    "check_requires",
    "check_schema_declarations",
    "extractor_id",
    "parametrize_with_checks",
    "registered_instances",
    "render_music",
]

#: Largest pickled instance: Dask sends it with every task.
MAX_PICKLED_BYTES = 10_000
#: Sample rate of the audio the checks render (the rate most files have).
SAMPLE_RATE_HZ = 44100
#: Length of the rendered music: long enough for tempo, key and chord
#: estimators to give values (rhythm's ``min_duration_s`` and chords' minimum).
MUSIC_SECONDS = 10.0
#: Parameter choices the checks do not instantiate: they need a file only a user has.
SKIPPED_CHOICES: dict[str, tuple[Any, ...]] = {"model": ("onnx",)}
#: Parameters whose every choice is checked (each picks a different backend or model).
CHOICE_AXES = ("backend", "model")


# --------------------------------------------------------------------------- audio
def render_music(seconds: float = MUSIC_SECONDS, *, sample_rate_hz: int = SAMPLE_RATE_HZ, seed: int = 0,
                 tempo_bpm: float = 120.0, tonic: int = 0, minor: bool = False, stereo: bool = True) -> np.ndarray:
    """A deterministic pop-like loop: kick, hi-hat, bass and a I–V–vi–IV progression.

    Plain numpy (no soundfont, no renderer that could change), so the golden
    outputs of ``tests/fixtures/golden`` stay reproducible.

    Parameters
    ----------
    seconds : float
        Length.
    sample_rate_hz : int
        Rate of the samples.
    seed : int
        Seeds the noise of the drums and the small level differences between channels.
    tempo_bpm : float
        Beats per minute (one chord per bar of 4 beats).
    tonic : int
        Pitch class of the key (C = 0).
    minor : bool
        Minor key (i–VI–III–VII) instead of major (I–V–vi–IV).
    stereo : bool
        Two channels (the right one slightly quieter) instead of one.

    Returns
    -------
    numpy.ndarray
        Float32, ``(n,)`` or ``(n, 2)``, peak 0.7.
    """
    rng = np.random.default_rng(seed)
    sr = int(sample_rate_hz)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    beat_s = 60.0 / tempo_bpm
    y = np.zeros(n)
    # Progression as (semitones above the tonic, minor triad?).
    progression = ([(0, True), (8, False), (3, False), (10, False)] if minor
                   else [(0, False), (7, False), (9, True), (5, False)])
    bar_s = 4 * beat_s
    for bar in range(int(math.ceil(seconds / bar_s))):
        root, is_minor = progression[bar % len(progression)]
        start = int(bar * bar_s * sr)
        stop = min(n, int((bar + 1) * bar_s * sr))
        if start >= n:
            break
        tt = t[start:stop] - bar * bar_s
        env = np.exp(-1.5 * tt)
        base = 60 + tonic + root  # MIDI note of the chord root, around middle C
        for interval in (0, 3 if is_minor else 4, 7):
            f = 440.0 * 2 ** ((base + interval - 69) / 12)
            y[start:stop] += 0.12 * env * (np.sin(2 * np.pi * f * tt) + 0.3 * np.sin(4 * np.pi * f * tt))
        f_bass = 440.0 * 2 ** ((base - 24 - 69) / 12)
        y[start:stop] += 0.2 * np.exp(-2.0 * (tt % beat_s)) * np.sin(2 * np.pi * f_bass * tt)
    for k in range(int(seconds / beat_s * 2) + 1):  # eighth notes: kick on beats, hi-hat on all
        at = int(k * beat_s / 2 * sr)
        if at >= n:
            break
        m = min(n - at, int(0.15 * sr))
        tt = np.arange(m) / sr
        if k % 2 == 0:
            y[at:at + m] += 0.6 * np.exp(-25 * tt) * np.sin(2 * np.pi * (50 + 100 * np.exp(-30 * tt)) * tt)
        hat = min(m, int(0.04 * sr))
        y[at:at + hat] += 0.08 * np.exp(-80 * tt[:hat]) * rng.standard_normal(hat)
    y = 0.7 * y / max(float(np.max(np.abs(y))), 1e-9)
    if stereo:
        y = np.stack([y, y * (0.9 + 0.05 * rng.random())], axis=1)
    return y.astype(np.float32)


def _file_frontend(samples: np.ndarray, sample_rate_hz: int, *, cls: type[Frontend] = Frontend) -> Frontend:
    """Decode ``samples`` written as a float WAV file, so the probe has real container facts."""
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="mirflow-check-") as tmp:
        path = Path(tmp) / "music.wav"
        sf.write(path, samples, sample_rate_hz, subtype="FLOAT")
        return cls.from_file(path)


# --------------------------------------------------------------------------- recording frontend
#: Frontend methods and the input (of INPUTS) each one is.
_METHOD_INPUTS = {"signal": "signal", "channels": "channels", "stft": "stft", "mel": "mel", "cached": "cached",
                  # Levels of the decoded signal, computed from it.
                  "rms_dbfs": "signal", "peak_dbfs": "signal"}
#: Inputs the recording frontend sees being used (``info``/``path`` are ``probe``).
_RECORDED_INPUTS = frozenset(_METHOD_INPUTS.values()) | {"probe"}


def _caller_is_frontend() -> bool:
    # Frame 0 is this function, 1 the recording method, 2 its caller. The
    # Frontend's own methods call each other (stft asks for signal, signal
    # for cached); only calls from outside mirflow.frontend are the
    # extractor's use of an input. An extractor's ``compute`` callback passed
    # to ``cached`` runs in the extractor's module, so its uses count.
    return sys._getframe(2).f_globals.get("__name__") == Frontend.__module__


class _RecordingAudio:
    """Proxy of :class:`~mirflow.audio.decode.DecodedAudio`: reading ``samples`` is the ``channels`` input."""

    def __init__(self, audio: Any, owner: RecordingFrontend) -> None:
        object.__setattr__(self, "_audio", audio)
        object.__setattr__(self, "_owner", owner)

    def __getattr__(self, name: str) -> Any:
        if name == "samples" and not _caller_is_frontend():
            self._owner._touch("channels", "audio.samples")
        return getattr(self._audio, name)


class RecordingFrontend(Frontend):
    """A :class:`~mirflow.frontend.Frontend` that records which inputs its users touch.

    ``touched`` maps each input of :data:`~mirflow.frontend.INPUTS` used
    since the last :meth:`reset` to the first attribute that used it.
    ``info`` and ``path`` are the ``probe`` input; ``audio.samples`` is
    ``channels``; ``rms_dbfs`` and ``peak_dbfs`` are levels of the decoded
    signal and count as ``signal``. Facts every frontend has
    (``duration_s``, ``is_empty``, ``native_sample_rate_hz``, the channel
    count) are free. Calls the Frontend makes to itself are not counted.
    """

    def __init__(self, audio: Any, info: Any = None, path: str | None = None) -> None:
        self.touched: dict[str, str] = {}
        super().__init__(audio, info, path)

    def reset(self) -> None:
        """Forget what was touched (before the next extractor runs)."""
        self.touched = {}

    def _touch(self, input_name: str, attribute: str) -> None:
        self.touched.setdefault(input_name, attribute)

    # The base class assigns these in __init__; properties record reads.
    @property
    def info(self) -> Any:
        if not _caller_is_frontend():
            self._touch("probe", "info")
        return self._info

    @info.setter
    def info(self, value: Any) -> None:
        self._info = value

    @property
    def path(self) -> str | None:
        if not _caller_is_frontend():
            self._touch("probe", "path")
        return self._path

    @path.setter
    def path(self, value: str | None) -> None:
        self._path = value

    @property
    def audio(self) -> Any:
        return _RecordingAudio(self._audio, self)

    @audio.setter
    def audio(self, value: Any) -> None:
        self._audio = value

    def fresh(self) -> RecordingFrontend:
        """The same decoded audio and probe facts with an empty cache."""
        return RecordingFrontend(self._audio, self._info, self._path)

    def signal(self, sample_rate_hz: int | None = None) -> np.ndarray:
        if not _caller_is_frontend():
            self._touch("signal", "signal()")
        return super().signal(sample_rate_hz)

    def channels(self, sample_rate_hz: int | None = None) -> np.ndarray:
        if not _caller_is_frontend():
            self._touch("channels", "channels()")
        return super().channels(sample_rate_hz)

    def stft(self, **kwargs: Any) -> np.ndarray:
        if not _caller_is_frontend():
            self._touch("stft", "stft()")
        return super().stft(**kwargs)

    def mel(self, **kwargs: Any) -> np.ndarray:
        if not _caller_is_frontend():
            self._touch("mel", "mel()")
        return super().mel(**kwargs)

    def cached(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        if _caller_is_frontend():
            return super().cached(key, compute)
        self._touch("cached", "cached()")

        def users_compute() -> Any:
            # A frame outside mirflow.frontend: what ``compute`` uses is the
            # caller's use even when it has no frame of its own
            # (``functools.partial(frontend.stft, ...)``).
            return compute()

        return super().cached(key, users_compute)

    def rms_dbfs(self, sample_rate_hz: int | None = None) -> float:
        if not _caller_is_frontend():
            self._touch("signal", "rms_dbfs()")
        return super().rms_dbfs(sample_rate_hz)

    def peak_dbfs(self) -> float:
        if not _caller_is_frontend():
            self._touch("signal", "peak_dbfs()")
        return super().peak_dbfs()


# --------------------------------------------------------------------------- shared runs
_FRONTENDS: dict[str, RecordingFrontend] = {}
#: id(extractor) -> (extractor, {audio kind: (Extraction, touched)}); the
#: extractor is kept so that its id is not reused while the entry lives.
_RUNS: dict[int, tuple[Extractor, dict[str, tuple[Extraction, dict[str, str]]]]] = {}
_MAX_RUNS = 8


def _audio(kind: str) -> RecordingFrontend:
    """The shared frontend of one kind of audio (rendered once per process)."""
    if kind not in _FRONTENDS:
        sr = SAMPLE_RATE_HZ
        if kind == "music":
            fe = _file_frontend(render_music(seed=0), sr, cls=RecordingFrontend)
        elif kind == "silence":
            fe = RecordingFrontend.from_array(np.zeros((5 * sr, 2), dtype=np.float32), sr)
        elif kind == "empty":
            fe = RecordingFrontend.from_array(np.zeros((0, 2), dtype=np.float32), sr)
        elif kind == "short":
            fe = RecordingFrontend.from_array(render_music(0.05, seed=1), sr)  # 50 ms: shorter than any window
        else:
            raise ValueError(f"unknown audio kind {kind!r}")
        assert isinstance(fe, RecordingFrontend)
        _FRONTENDS[kind] = fe
    return _FRONTENDS[kind]


AUDIO_KINDS = ("music", "silence", "empty", "short")


def _skip_if_unusable(extractor: Extractor) -> None:
    for req in extractor.requirements():
        why = req.problem()
        if why is not None:
            raise unittest.SkipTest(f"{extractor_id(extractor)}: {req.name} is not usable here ({why}); "
                                    f"install it with: {req.install}")


def _run(extractor: Extractor, kind: str) -> tuple[Extraction, dict[str, str]]:
    """``extractor``'s output on one kind of audio and the inputs it touched, computed once per instance."""
    entry = _RUNS.get(id(extractor))
    if entry is None or entry[0] is not extractor:
        _skip_if_unusable(extractor)
        while len(_RUNS) >= _MAX_RUNS:
            _RUNS.pop(next(iter(_RUNS)))
        entry = _RUNS[id(extractor)] = (extractor, {})
    runs = entry[1]
    if kind not in runs:
        fe = _audio(kind)
        fe.reset()
        try:
            out = extractor.extract(fe)
        except unittest.SkipTest:
            raise
        except Exception as exc:
            raise AssertionError(f"{extractor_id(extractor)}: extract() raised on {kind} audio: "
                                 f"{type(exc).__name__}: {exc}") from exc
        runs[kind] = (out, dict(fe.touched))
    return runs[kind]


# --------------------------------------------------------------------------- naming
def extractor_id(extractor: Extractor) -> str:
    """``name`` plus its backend/model choice, e.g. ``rhythm-madmom`` (used for test ids and golden files)."""
    values = [str(getattr(extractor.params, axis)) for axis in CHOICE_AXES if hasattr(extractor.params, axis)]
    return "-".join([extractor.name, *values])


def registered_instances(*, names: Iterable[str] | None = None) -> list[Extractor]:
    """One instance of every registered extractor for each choice of its ``backend`` and ``model``.

    The permissive backends are checked too, not only the defaults. Choices
    in :data:`SKIPPED_CHOICES` (``model: onnx`` needs a file only a user
    has) are left out. Plugins named in ``MIRFLOW_PLUGINS`` are included.
    """
    import itertools

    from mirflow.extractors import registry

    out = []
    for name in names if names is not None else registry.names():
        cls = registry.get(name)
        fields = {f.name: f for f in dataclasses.fields(cls.Params)}
        axes = [(axis, [c for c in fields[axis].metadata["choices"] if c not in SKIPPED_CHOICES.get(axis, ())])
                for axis in CHOICE_AXES if axis in fields and "choices" in fields[axis].metadata]
        for combo in itertools.product(*(choices for _, choices in axes)):
            out.append(cls({axis: value for (axis, _), value in zip(axes, combo, strict=True)}))
    return out


# --------------------------------------------------------------------------- checks
def _fail(extractor: Extractor | type[Extractor], message: str) -> None:
    who = extractor_id(extractor) if isinstance(extractor, Extractor) else getattr(extractor, "name", repr(extractor))
    raise AssertionError(f"{who}: {message}")


def check_declaration(extractor: Extractor) -> None:
    """Name, version, licences, ``requires``, columns and tables are declared."""
    cls = type(extractor)
    for attr in ("name", "version"):
        value = getattr(cls, attr, None)
        if not isinstance(value, str) or not value:
            _fail(extractor, f"class attribute {attr!r} must be a non-empty string, got {value!r}")
    if not cls.name.isidentifier():
        _fail(extractor, f"name {cls.name!r} must be an identifier (it names a pipeline entry and SQL values)")
    for attr in ("columns", "tables", "requires", "licences", "libraries"):
        value = getattr(cls, attr)
        if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
            _fail(extractor, f"class attribute {attr!r} must be a tuple of non-empty strings, got {value!r}")
        if len(set(value)) != len(value):
            _fail(extractor, f"class attribute {attr!r} names something twice: {value!r}")
    if not cls.licences:
        _fail(extractor, "must name the licences of the code and models it runs (class attribute 'licences')")
    unknown = sorted(set(cls.requires) - INPUTS)
    if unknown:
        _fail(extractor, f"requires unknown inputs {unknown}; known: {sorted(INPUTS)}")


def _bad_value(f: dataclasses.Field) -> list[Any]:
    """Values outside a field's declared choices or range."""
    bad: list[Any] = []
    if "choices" in f.metadata:
        choices = f.metadata["choices"]
        if all(isinstance(c, str) for c in choices):
            bad.append("__not_a_choice__")
        elif all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices):
            outside = max(choices) + 1
            bad.append((outside,) if isinstance(f.default, tuple) else outside)
    if "range" in f.metadata:
        lo, hi = f.metadata["range"]
        for edge, step in ((hi, 1), (lo, -1)):
            if edge is None:
                continue
            value = edge + step * (abs(edge) + 1)
            bad.append(int(value) if isinstance(f.default, int) and not isinstance(f.default, bool) else float(value))
    return bad


def check_params(extractor: Extractor) -> None:
    """A frozen, keyword-only Params dataclass; bad values raise ParameterError naming the key."""
    cls = type(extractor)
    P = cls.Params
    if not (isinstance(P, type) and issubclass(P, Params) and dataclasses.is_dataclass(P)):
        _fail(extractor, "Params must be a dataclass subclass of mirflow.extractors.Params")
    if not P.__dataclass_params__.frozen:
        _fail(extractor, f"{P.__name__} must be frozen (@dataclass(frozen=True, kw_only=True))")
    fields = dataclasses.fields(P)
    if any(not f.kw_only for f in fields):
        _fail(extractor, f"{P.__name__} must be keyword-only (@dataclass(frozen=True, kw_only=True))")
    if not isinstance(extractor.params, P):
        _fail(extractor, f"params is a {type(extractor.params).__name__}, not {P.__name__}")
    try:
        defaults = P()
    except ParameterError as exc:
        _fail(extractor, f"the default parameters are invalid: {exc}")
    except TypeError as exc:
        _fail(extractor, f"every parameter needs a default: {exc}")
    if P.from_mapping(extractor.params.to_dict()) != extractor.params:
        _fail(extractor, "parameters do not round-trip through to_dict() and from_mapping()")
    if fields:
        try:
            setattr(extractor.params, fields[0].name, getattr(defaults, fields[0].name))
        except dataclasses.FrozenInstanceError:
            pass
        else:
            _fail(extractor, "parameters can be changed after creation (they are part of the pipeline fingerprint)")
    for f in fields:
        if "doc" not in f.metadata or not f.metadata["doc"]:
            _fail(extractor, f"parameter {f.name!r} has no description (declare it with mirflow.extractors.param)")
    try:
        cls({"__no_such_param__": 1})
    except ParameterError as exc:
        if "__no_such_param__" not in str(exc):
            _fail(extractor, f"an unknown parameter's error must name it; got: {exc}")
    else:
        _fail(extractor, "an unknown parameter was accepted")
    for f in fields:
        for bad in _bad_value(f):
            try:
                cls({f.name: bad})
            except ParameterError as exc:
                if f.name not in str(exc):
                    _fail(extractor, f"the error for {f.name}={bad!r} must name the key; got: {exc}")
            else:
                _fail(extractor, f"parameter {f.name!r} accepted {bad!r}, outside its declared choices or range")


def check_schema_declarations(extractor: Extractor) -> None:
    """Declared ``tracks`` columns and long tables exist in the schemas."""
    tracks = set(table_schema("tracks").names)
    missing = [c for c in extractor.columns if c not in tracks]
    if missing:
        _fail(extractor, f"declares columns not in the tracks schema: {missing} (declare them in schemas/tracks.yaml "
                         "or a tracks.<plugin>.yaml fragment on the schema path)")
    schemas = load_schemas()
    unknown = [t for t in extractor.tables if t not in schemas]
    if unknown:
        _fail(extractor, f"declares tables without a schema: {unknown}")
    if "tracks" in extractor.tables:
        _fail(extractor, "'tracks' is not a long table: declare tracks values in 'columns'")


_TRACKS_CORE = {
    "track_id": "0" * 32, "path": "x.wav", "file_size_bytes": 1, "pipeline": "check", "pipeline_version": "v",
    "mirflow_version": "0", "analyzed_at": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
    "analysis_sample_rate_hz": SAMPLE_RATE_HZ, "downmix": "mean", "lineage": "{}", "analysis_seconds": 0.0,
}


def _check_output(extractor: Extractor, kind: str, out: Extraction) -> None:
    where = f"on {kind} audio"
    if not isinstance(out, Extraction):
        _fail(extractor, f"extract() returned {type(out).__name__} {where}, not an Extraction")
    if set(out.columns) != set(extractor.columns):
        _fail(extractor, f"columns {where} differ from the declaration: missing "
                         f"{sorted(set(extractor.columns) - set(out.columns))}, "
                         f"extra {sorted(set(out.columns) - set(extractor.columns))}")
    for column, value in out.columns.items():
        if isinstance(value, (float, np.floating)) and not math.isfinite(value):
            _fail(extractor, f"{column} is {value} {where}: use None, not NaN/inf, for 'no value'")
    try:
        conform("tracks", {**{k: [v] for k, v in _TRACKS_CORE.items()}, **{k: [v] for k, v in out.columns.items()}},
                fill_missing=True)
    except Exception as exc:
        _fail(extractor, f"tracks columns {where} do not conform to the schema: {exc}")
    if set(out.tables) != set(extractor.tables):
        _fail(extractor, f"tables {where} differ from the declaration: {sorted(out.tables)} vs {sorted(extractor.tables)}")
    for table, rows in out.tables.items():
        if not rows:
            continue
        lengths = {len(v) for v in rows.values()}
        if len(lengths) != 1:
            _fail(extractor, f"table {table} {where}: columns have different lengths {sorted(lengths)}")
        n = lengths.pop()
        if "track_id" in rows:
            _fail(extractor, f"table {table} {where}: leave out track_id (the writer adds it)")
        data = {"track_id": ["0" * 32] * n, **rows}
        spec = table_schema(table)
        try:
            conform(table, data, sizes=spec.sizes_of(data))
        except Exception as exc:
            _fail(extractor, f"table {table} {where} does not conform to its schema: {exc}")
    empty = [c for c, v in out.columns.items() if v is None]
    if empty and not (out.reasons and all(isinstance(r, str) and r for r in out.reasons)):
        _fail(extractor, f"{empty} are empty {where} without a reason: return Extraction(reasons=...) "
                         "(self.empty(..., reason=...) or self.result(..., reason=...))")
    if not all(isinstance(note, str) for note in out.notes):
        _fail(extractor, f"notes {where} must be strings")


def check_outputs_conform(extractor: Extractor) -> None:
    """Outputs on music, silence, empty and very short audio conform to the schemas, with reasons for empty values."""
    for kind in AUDIO_KINDS:
        out, _ = _run(extractor, kind)
        _check_output(extractor, kind, out)


def canonical(value: Any) -> Any:
    """Plain Python values (lists, floats, ints, str, None) for comparing outputs exactly."""
    if isinstance(value, np.ndarray):
        return [canonical(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{where}{key} present in one run only"
            d = _first_difference(a[key], b[key], f"{where}{key}.")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where.rstrip('.')} has {len(a)} then {len(b)} values"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = _first_difference(x, y, f"{where.rstrip('.')}[{i}].")
            if d:
                return d
        return None
    same = a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    return None if same else f"{where.rstrip('.')}: {a!r} then {b!r}"


def check_determinism(extractor: Extractor) -> None:
    """Two runs on the same audio, each on a fresh frontend, give the same output.

    Both run with one BLAS thread, as mirflow's workers run extractors
    (``mirflow.pipeline.worker``): with two, OpenBLAS's kernels for AMD EPYC
    gave the rhythm ensemble's alternative-tempo confidence in other last bits
    from one run to the next (4e-12 relative, 2026-12-02), which says nothing
    about the extractor.
    """
    from threadpoolctl import threadpool_limits

    _run(extractor, "music")  # skips an extractor this machine cannot run, and reports its own errors
    runs = []
    with threadpool_limits(1):
        for which in ("a first", "a second"):
            try:
                runs.append(extractor.extract(_audio("music").fresh()))
            except Exception as exc:
                raise AssertionError(f"{extractor_id(extractor)}: {which} extract() raised "
                                     f"{type(exc).__name__}: {exc}") from exc
    first, second = runs
    a = {"columns": canonical(first.columns), "tables": canonical(first.tables), "reasons": list(first.reasons)}
    b = {"columns": canonical(second.columns), "tables": canonical(second.tables), "reasons": list(second.reasons)}
    diff = _first_difference(a, b)
    if diff:
        _fail(extractor, f"is not deterministic: two runs on the same audio differ at {diff}")


def check_requires(extractor: Extractor) -> None:
    """``extract`` touches only the frontend inputs its class declares in ``requires``."""
    unrecorded = sorted(INPUTS - _RECORDED_INPUTS)
    if unrecorded:
        raise AssertionError(f"mirflow.testing.RecordingFrontend cannot record the inputs {unrecorded} of "
                             "mirflow.frontend.INPUTS: teach it (and _RECORDED_INPUTS) how they are used")
    declared = set(type(extractor).requires)
    for kind in AUDIO_KINDS:
        _, touched = _run(extractor, kind)
        undeclared = {name: attr for name, attr in touched.items() if name not in declared}
        if undeclared:
            uses = ", ".join(f"{name!r} (through frontend.{attr})" for name, attr in sorted(undeclared.items()))
            _fail(extractor, f"touches frontend inputs it does not declare in requires={tuple(type(extractor).requires)} "
                             f"on {kind} audio: {uses}")


def check_picklable(extractor: Extractor) -> None:
    """After a run, the instance pickles small (< 10 kB) and unpickles equal (Dask ships it to workers)."""
    _run(extractor, "music")  # models a run loads must not end up on the instance
    try:
        blob = pickle.dumps(extractor)
    except Exception as exc:
        raise AssertionError(f"{extractor_id(extractor)}: does not pickle after a run: {exc}") from exc
    if len(blob) >= MAX_PICKLED_BYTES:
        _fail(extractor, f"pickles to {len(blob)} bytes after a run (limit {MAX_PICKLED_BYTES}): "
                         "keep models and caches off the instance (load them in the worker, e.g. functools.cache)")
    back = pickle.loads(blob)  # noqa: S301 - our own bytes, just written
    if back != extractor:
        _fail(extractor, "does not unpickle equal to itself")


#: Window length and context of :func:`check_window_merge` (on the 10-s music: three windows).
CHECK_WINDOW_S, CHECK_CONTEXT_S = 4.0, 1.0


def check_window_merge(extractor: Extractor) -> None:
    """Extractors that merge windows: the music cut in windows and merged conforms, in track time.

    The 10-s music is cut as :func:`mirflow.audio.decode.iter_windows` cuts
    long tracks (shares of :data:`CHECK_WINDOW_S` with :data:`CHECK_CONTEXT_S`
    of context), each window is extracted on its own frontend and
    :meth:`~mirflow.extractors.base.Extractor.merge` combines them: the result
    must conform to the schemas like any output, with every time of its tables
    inside the track. Extractors that do not merge windows pass.
    """
    import soundfile as sf

    from mirflow.audio.decode import iter_windows
    from mirflow.extractors.base import WindowPart

    if not extractor.merges_windows():
        return
    _skip_if_unusable(extractor)
    music = _audio("music")
    duration = music.duration_s
    parts = []
    with tempfile.TemporaryDirectory(prefix="mirflow-check-") as tmp:
        path = Path(tmp) / "music.wav"
        sf.write(path, music.audio.samples, music.native_sample_rate_hz, subtype="FLOAT")
        for window in iter_windows(path, window_s=CHECK_WINDOW_S, context_s=CHECK_CONTEXT_S):
            try:
                out = extractor.extract(Frontend(window.audio, music.info, music.path, window=window))
            except Exception as exc:
                raise AssertionError(f"{extractor_id(extractor)}: extract() on a window raised "
                                     f"{type(exc).__name__}: {exc}") from exc
            parts.append(WindowPart(start_s=window.start_s, core_start_s=window.core_start_s,
                                    core_end_s=window.core_end_s,
                                    end_s=window.start_s + window.audio.duration_s, extraction=out))
    if len(parts) < 2:
        raise AssertionError(f"the check cut the music in {len(parts)} window(s); it needs several")
    try:
        merged = extractor.merge(parts)
    except Exception as exc:
        raise AssertionError(f"{extractor_id(extractor)}: merge() of {len(parts)} windows raised "
                             f"{type(exc).__name__}: {exc}") from exc
    _check_output(extractor, "music cut in windows and merged", merged)
    for table, rows in merged.tables.items():
        for column in ("time_s", "start_s", "end_s"):
            times = [t for t in rows.get(column, []) if t is not None]
            if times and not (min(times) >= 0.0 and max(times) <= duration + 1e-6):
                _fail(extractor, f"merged {table}.{column} runs from {min(times):.3f} to {max(times):.3f} s, "
                                 f"outside the {duration:.1f}-s track: merge must shift window times to track times")
            if times and any(b < a for a, b in zip(times, times[1:], strict=False)):
                _fail(extractor, f"merged {table}.{column} is not in track order")


#: Every check, in the order :func:`check_extractor` runs them.
CHECKS: tuple[Callable[[Extractor], None], ...] = (
    check_declaration,
    check_params,
    check_schema_declarations,
    check_outputs_conform,
    check_requires,
    check_determinism,
    check_picklable,
    check_window_merge,
)


def check_extractor(extractor: Extractor) -> None:
    """Run every contract check on one extractor instance.

    Parameters
    ----------
    extractor : Extractor
        An instance (its parameters pick the backend checked).

    Raises
    ------
    AssertionError
        On the first failed check, naming the extractor and what broke.
    unittest.SkipTest
        When the instance's backend is not usable here (pytest reports a skip).

    Examples
    --------
    >>> from mirflow.extractors import create
    >>> check_extractor(create("metadata"))  # doctest: +SKIP
    """
    if not isinstance(extractor, Extractor):
        raise AssertionError(f"{extractor!r} is not an Extractor instance")
    try:
        for check in CHECKS:
            check(extractor)
    finally:
        _RUNS.pop(id(extractor), None)


def parametrize_with_checks(extractors: Sequence[Extractor]) -> Any:
    """A ``pytest.mark.parametrize`` over ``(extractor, check)`` pairs, with readable ids.

    Examples
    --------
    >>> @parametrize_with_checks([MyExtractor()])  # doctest: +SKIP
    ... def test_contract(extractor, check):
    ...     check(extractor)
    """
    import pytest  # a test dependency only

    pairs = [(ex, check) for ex in extractors for check in CHECKS]
    ids = [f"{extractor_id(ex)}-{check.__name__}" for ex, check in pairs]
    return pytest.mark.parametrize(("extractor", "check"), pairs, ids=ids)
