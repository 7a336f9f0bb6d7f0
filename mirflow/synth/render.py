"""Render arrangements to audio: FluidSynth or a self-contained numpy synthesizer.

Both backends place beat 0 of an :class:`~mirflow.synth.midi.Arrangement`
at exactly ``lead_in_s`` and return exactly ``n_samples`` samples, so the
ground truth computed from the spec holds for the audio. FluidSynth processes
MIDI events at 64-sample block boundaries with millisecond timing, so its
attacks land 0-2.5 ms after the nominal time; the numpy backend is exact to
the sample.

After rendering, :func:`finish` normalizes the peak, optionally adds white
noise at a given SNR and optionally round-trips through a low-bitrate MP3
(re-aligned by cross-correlation, so the truth still holds).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from mirflow.errors import ConfigError
from mirflow.synth.midi import CLOSED_HAT, CRASH, DRUM_CHANNEL, KICK, SNARE, Arrangement, write_midi

logger = logging.getLogger(__name__)

PEAK = 0.89  # -1 dBFS
SOUNDFONT_ENV = "MIRFLOW_SOUNDFONT"
_SOUNDFONT_DIRS = (
    "/usr/share/sounds/sf2",
    "/usr/share/soundfonts",
    "/usr/share/sounds/sf3",
    "/usr/local/share/soundfonts",
    "/opt/homebrew/share/soundfonts",
)
_SOUNDFONT_NAMES = (
    "FluidR3_GM.sf2",
    "default-GM.sf2",
    "default.sf2",
    "FluidR3_GM.sf3",
    "MuseScore_General.sf3",
)
AUDIO_FORMATS = ("wav", "flac", "ogg", "mp3", "m4a", "aac")


class RendererUnavailableError(ConfigError):
    """A render backend or encoder needs a program or file that is not installed."""


# --------------------------------------------------------------------------- FluidSynth


def find_soundfont(soundfont: str | Path | None = None) -> Path:
    """Locate a General MIDI soundfont.

    Parameters
    ----------
    soundfont : str or Path, optional
        Explicit path; else ``$MIRFLOW_SOUNDFONT``; else Debian's
        ``fluid-soundfont-gm`` (``/usr/share/sounds/sf2/FluidR3_GM.sf2``)
        and other usual places.

    Returns
    -------
    Path
        An existing soundfont file.

    Raises
    ------
    RendererUnavailableError
        If none is found.
    """
    if soundfont is None:
        soundfont = os.environ.get(SOUNDFONT_ENV) or None
    if soundfont is not None:
        path = Path(soundfont)
        if path.is_file():
            return path
        raise RendererUnavailableError(f"soundfont not found: {path}")
    for directory in _SOUNDFONT_DIRS:
        for name in _SOUNDFONT_NAMES:
            path = Path(directory, name)
            if path.is_file():  # follows symlinks; a dangling default-GM.sf2 is skipped
                return path
    for directory in _SOUNDFONT_DIRS:
        found = (
            sorted(p for p in Path(directory).glob("*.sf[23]") if p.is_file())
            if Path(directory).is_dir()
            else []
        )
        if found:
            return found[0]
    raise RendererUnavailableError(
        "no General MIDI soundfont found; install Debian's fluid-soundfont-gm "
        f"(apt-get install fluid-soundfont-gm) or set ${SOUNDFONT_ENV}"
    )


def fluidsynth_available() -> bool:
    """Return True if the ``fluidsynth`` program and a GM soundfont are installed."""
    if shutil.which("fluidsynth") is None:
        return False
    try:
        find_soundfont()
    except RendererUnavailableError:
        return False
    return True


def _fit(y: np.ndarray, lead_in_samples: int, n_samples: int) -> np.ndarray:
    """Prepend ``lead_in_samples`` of silence, then trim or zero-pad to ``n_samples``."""
    pad = np.zeros((lead_in_samples,) + y.shape[1:], dtype=np.float32)
    y = np.concatenate([pad, y.astype(np.float32)])[:n_samples]
    if len(y) < n_samples:
        tail = np.zeros((n_samples - len(y),) + y.shape[1:], dtype=np.float32)
        y = np.concatenate([y, tail])
    return y


def render_fluidsynth(
    arrangement: Arrangement,
    *,
    sample_rate_hz: int,
    lead_in_s: float,
    n_samples: int,
    soundfont: str | Path | None = None,
    gain: float = 0.6,
) -> np.ndarray:
    """Render with the ``fluidsynth`` command-line program.

    Parameters
    ----------
    arrangement : Arrangement
        What to play; beat 0 is MIDI tick 0.
    sample_rate_hz : int
        Output sample rate.
    lead_in_s : float
        Silence before beat 0.
    n_samples : int
        Exact output length.
    soundfont : str or Path, optional
        See :func:`find_soundfont`.
    gain : float
        FluidSynth master gain (``-g``); output is float so nothing clips.

    Returns
    -------
    numpy.ndarray
        Float32 array of shape ``(n_samples, 2)``.

    Raises
    ------
    RendererUnavailableError
        If fluidsynth or a soundfont is missing, or fluidsynth fails.
    """
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RendererUnavailableError(
            "the fluidsynth program is not installed (apt-get install fluidsynth); "
            "use backend='numpy' instead"
        )
    sf2 = find_soundfont(soundfont)
    with tempfile.TemporaryDirectory(prefix="mirflow-synth-") as tmp:
        mid = write_midi(arrangement, Path(tmp, "in.mid"))
        wav = Path(tmp, "out.wav")
        cmd = [
            exe, "-ni", "-q", "-g", str(gain), "-r", str(sample_rate_hz),
            "-o", "synth.cpu-cores=1", "-O", "float", "-T", "wav", "-F", str(wav), str(sf2), str(mid),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0 or not wav.is_file():
            raise RendererUnavailableError(
                f"fluidsynth failed (rc {proc.returncode}): {(proc.stderr or proc.stdout)[-500:]}"
            )
        y, sr = sf.read(wav, dtype="float32", always_2d=True)
    if sr != sample_rate_hz:
        raise RendererUnavailableError(f"fluidsynth wrote {sr} Hz, wanted {sample_rate_hz} Hz")
    return _fit(y, int(round(lead_in_s * sample_rate_hz)), n_samples)


# --------------------------------------------------------------------------- numpy synthesizer


@dataclass(frozen=True)
class Timbre:
    """Additive-synthesis recipe of one instrument family.

    Parameters
    ----------
    n_harm : int
        Number of harmonics (fewer if they would pass 10 kHz).
    slope : float
        Harmonic ``k`` has amplitude ``k ** -slope``.
    odd_only : bool
        Keep odd harmonics only (square-ish, clarinet-like).
    attack_s, release_s : float
        Linear attack and release times.
    decay_s : float or None
        Exponential decay time constant of the fundamental at middle C (lower
        notes ring longer); None for sustained tones.
    tilt : float
        Harmonic ``k`` decays ``1 + tilt * (k - 1)`` times faster.
    detune_cents : float
        Detune of a second oscillator (0 for none); thickens strings and pads.
    vibrato : float
        Relative frequency deviation of a 5 Hz vibrato.
    gain : float
        Mix level of one note.
    """

    n_harm: int
    slope: float
    odd_only: bool = False
    attack_s: float = 0.005
    release_s: float = 0.08
    decay_s: float | None = None
    tilt: float = 0.0
    detune_cents: float = 0.0
    vibrato: float = 0.0
    gain: float = 0.3


TIMBRES: dict[str, Timbre] = {
    "piano": Timbre(12, 1.1, attack_s=0.003, decay_s=1.4, tilt=0.5, release_s=0.1),
    "mallet": Timbre(4, 1.8, attack_s=0.002, decay_s=1.0, tilt=1.0, release_s=0.3),
    "organ": Timbre(8, 0.9, attack_s=0.01, release_s=0.06),
    "guitar": Timbre(14, 1.0, attack_s=0.002, decay_s=0.8, tilt=0.8, release_s=0.06),
    "bass": Timbre(8, 1.3, attack_s=0.004, decay_s=1.0, tilt=0.6, release_s=0.05, gain=0.6),
    "strings": Timbre(14, 1.0, attack_s=0.05, release_s=0.15, detune_cents=7.0, vibrato=0.003),
    "brass": Timbre(12, 0.9, attack_s=0.03, release_s=0.08),
    "reed": Timbre(11, 1.0, odd_only=True, attack_s=0.02, release_s=0.06, vibrato=0.002),
    "flute": Timbre(3, 2.0, attack_s=0.04, release_s=0.08, vibrato=0.004),
    "lead": Timbre(15, 1.0, odd_only=True, attack_s=0.005, release_s=0.05),
    "pad": Timbre(12, 1.2, attack_s=0.12, release_s=0.25, detune_cents=9.0),
}

_FAMILY_TIMBRE = (
    "piano", "mallet", "organ", "guitar", "bass", "strings", "strings", "brass",
    "reed", "flute", "lead", "pad", "organ", "guitar", "mallet", "organ",
)  # fmt: skip


def timbre_for_program(program: int) -> str:
    """Return the numpy-backend timbre name that stands in for a GM program.

    Parameters
    ----------
    program : int
        General MIDI program 0-127.

    Returns
    -------
    str
        A key of :data:`TIMBRES`.
    """
    return _FAMILY_TIMBRE[program // 8]


def _tone(timbre: Timbre, pitch: int, n_on: int, sr: int) -> np.ndarray:
    """Synthesize one note of ``n_on`` samples plus its release, unit velocity."""
    n_rel = int(timbre.release_s * sr)
    n = n_on + n_rel
    t = np.arange(n, dtype=np.float64) / sr
    f0 = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
    phase = 2 * np.pi * f0 * t
    if timbre.vibrato:
        rate = 5.0
        phase = phase - timbre.vibrato * f0 / rate * np.cos(2 * np.pi * rate * t)
    ks = [k for k in range(1, timbre.n_harm + 1) if k * f0 < min(10000.0, 0.45 * sr)]
    if timbre.odd_only:
        ks = [k for k in ks if k % 2 == 1] or [1]
    amps = np.array([k**-timbre.slope for k in ks])
    amps /= np.sqrt(np.sum(amps**2))
    out = np.zeros(n)
    detunes = (
        (0.0,) if not timbre.detune_cents else (-timbre.detune_cents / 2, timbre.detune_cents / 2)
    )
    for cents in detunes:
        ratio = 2.0 ** (cents / 1200.0)
        for k, a in zip(ks, amps, strict=True):
            partial = np.sin(k * ratio * phase + 0.7 * k)
            if timbre.decay_s is not None:
                tau = timbre.decay_s * 2.0 ** (-(pitch - 60) / 24.0) / (1.0 + timbre.tilt * (k - 1))
                partial *= np.exp(-t / tau)
            out += a * partial
    out /= len(detunes)
    env = np.ones(n)
    n_att = max(1, min(int(timbre.attack_s * sr), n_on))
    env[:n_att] = np.linspace(0.0, 1.0, n_att, endpoint=False)
    env[n_on:] = np.linspace(1.0, 0.0, n_rel) if n_rel else 1.0
    return (out * env).astype(np.float32)


def _filtered_noise(
    n: int, rng: np.random.Generator, sr: int, lo_hz: float, hi_hz: float
) -> np.ndarray:
    """White noise band-limited to ``[lo_hz, hi_hz]`` with smooth (raised-cosine) edges."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)

    def edge(f0: float, x: np.ndarray) -> np.ndarray:  # 0 below f0 / 1.5, 1 above f0 * 1.5
        z = np.clip(np.log(np.maximum(x, 1e-9) / f0) / np.log(1.5), -1.0, 1.0)
        return 0.5 + 0.5 * np.sin(z * np.pi / 2)

    mask = edge(lo_hz, freqs) * (1.0 - edge(hi_hz, freqs)) if hi_hz < sr / 2 else edge(lo_hz, freqs)
    return np.fft.irfft(spectrum * mask, n)


def _drum_kit(sr: int, rng: np.random.Generator) -> dict[int, tuple[np.ndarray, float]]:
    """Synthesize kick, snare, closed hi-hat and crash samples with their mix levels."""

    def t_of(dur: float) -> np.ndarray:
        return np.arange(int(dur * sr)) / sr

    t = t_of(0.45)  # kick: sine sweep 150 -> 48 Hz with a short click
    freq = 48.0 + 102.0 * np.exp(-t / 0.035)
    kick = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / 0.16)
    kick += 0.3 * _filtered_noise(len(t), rng, sr, 1000.0, 4000.0) * np.exp(-t / 0.003)
    t = t_of(0.3)  # snare: band-passed noise plus a 185/330 Hz body
    noise = _filtered_noise(len(t), rng, sr, 1500.0, 9000.0)
    body = (np.sin(2 * np.pi * 185 * t) + 0.5 * np.sin(2 * np.pi * 330 * t)) * np.exp(-t / 0.05)
    snare = 2.0 * noise * np.exp(-t / 0.09) + 0.6 * body
    t = t_of(0.12)  # closed hi-hat: high-passed noise
    hat = _filtered_noise(len(t), rng, sr, 7000.0, sr / 2) * np.exp(-t / 0.025)
    t = t_of(1.5)  # crash: long high-passed noise
    crash = _filtered_noise(len(t), rng, sr, 4000.0, sr / 2) * np.exp(-t / 0.5)
    kit = {}
    for key, wave, level in (
        (KICK, kick, 0.9),
        (SNARE, snare, 0.5),
        (CLOSED_HAT, hat, 0.22),
        (CRASH, crash, 0.2),
    ):
        wave = wave / np.max(np.abs(wave))
        kit[key] = (wave.astype(np.float32), level)
    return kit


def render_numpy(
    arrangement: Arrangement,
    *,
    sample_rate_hz: int,
    lead_in_s: float,
    n_samples: int,
    seed: int,
) -> np.ndarray:
    """Render with additive synthesis and synthesized drums (no external program).

    Each melodic channel plays the :data:`TIMBRES` entry of its GM program's
    family (:func:`timbre_for_program`); channel 9 plays a kick (pitched-down
    sine sweep), snare (noise burst with a tonal body), closed hi-hat
    (high-passed noise) and crash.

    Parameters
    ----------
    arrangement : Arrangement
        What to play.
    sample_rate_hz : int
        Output sample rate.
    lead_in_s : float
        Beat 0 sounds at exactly this time (to the nearest sample).
    n_samples : int
        Exact output length.
    seed : int
        Seeds the drum noise.

    Returns
    -------
    numpy.ndarray
        Float32 array of shape ``(n_samples,)``.
    """
    sr = sample_rate_hz
    out = np.zeros(n_samples, dtype=np.float32)
    kit = _drum_kit(sr, np.random.default_rng([seed, 303]))
    cache: dict[tuple[str, int, int], np.ndarray] = {}
    for note in arrangement.notes:
        start = int(round((lead_in_s + note.start_beat * arrangement.beat_s) * sr))
        if start >= n_samples:
            continue
        amp = (note.velocity / 127.0) ** 1.5
        if note.channel == DRUM_CHANNEL:
            if note.pitch not in kit:
                continue
            wave, level = kit[note.pitch]
            amp *= level
        else:
            name = timbre_for_program(arrangement.programs.get(note.channel, 0))
            timbre = TIMBRES[name]
            n_on = max(1, int(round(note.dur_beats * arrangement.beat_s * sr)))
            key = (name, note.pitch, n_on)
            if key not in cache:
                cache[key] = _tone(timbre, note.pitch, n_on, sr)
            wave = cache[key]
            amp *= timbre.gain
        end = min(n_samples, start + len(wave))
        out[start:end] += amp * wave[: end - start]
    logger.debug("numpy render: %d notes, %d distinct tones", len(arrangement.notes), len(cache))
    return out


def render_arrangement(
    arrangement: Arrangement,
    *,
    backend: str,
    sample_rate_hz: int,
    lead_in_s: float,
    n_samples: int,
    seed: int,
    soundfont: str | Path | None = None,
) -> np.ndarray:
    """Render with the named backend (``'fluidsynth'`` or ``'numpy'``); see those functions."""
    if backend == "fluidsynth":
        return render_fluidsynth(
            arrangement,
            sample_rate_hz=sample_rate_hz,
            lead_in_s=lead_in_s,
            n_samples=n_samples,
            soundfont=soundfont,
        )
    if backend == "numpy":
        return render_numpy(
            arrangement,
            sample_rate_hz=sample_rate_hz,
            lead_in_s=lead_in_s,
            n_samples=n_samples,
            seed=seed,
        )
    raise ConfigError(f"unknown synth backend {backend!r}")


# --------------------------------------------------------------------------- degradations


def normalize(y: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """Scale to the given peak amplitude (silence is returned unchanged)."""
    top = float(np.max(np.abs(y))) if y.size else 0.0
    return (y * (peak / top)).astype(np.float32) if top > 0 else y.astype(np.float32)


def add_noise(
    y: np.ndarray, snr_db: float, rng: np.random.Generator, region: tuple[int, int] | None = None
) -> np.ndarray:
    """Add white Gaussian noise at ``snr_db`` relative to the signal power in ``region``.

    Parameters
    ----------
    y : numpy.ndarray
        Signal, shape ``(n,)`` or ``(n, channels)``.
    snr_db : float
        Signal-to-noise ratio in dB.
    rng : numpy.random.Generator
        Noise source.
    region : tuple of int, optional
        Sample range whose mean power is the signal power (default: all).

    Returns
    -------
    numpy.ndarray
        Float32 noisy signal, same shape.
    """
    lo, hi = region if region is not None else (0, len(y))
    power = float(np.mean(np.square(y[lo:hi], dtype=np.float64))) if hi > lo else 0.0
    sigma = np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return (y + sigma * rng.standard_normal(y.shape)).astype(np.float32)


def _ffmpeg() -> str | None:
    return shutil.which("ffmpeg")


@lru_cache(maxsize=1)
def soundfile_writes_mp3() -> bool:
    """Return True if this libsndfile can write MP3."""
    return "MP3" in sf.available_formats()


def _run_ffmpeg(args: list[str]) -> None:
    exe = _ffmpeg()
    if exe is None:
        raise RendererUnavailableError("ffmpeg is not installed (apt-get install ffmpeg)")
    cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-threads", "1", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RendererUnavailableError(
            f"ffmpeg failed (rc {proc.returncode}): {proc.stderr[-500:]}"
        )


_SF_MP3_LEVEL = {
    48: 0.95,
    56: 0.9,
    64: 0.87,
    80: 0.84,
    96: 0.8,
    128: 0.65,
    160: 0.5,
    192: 0.4,
    320: 0.0,
}


def write_audio(
    y: np.ndarray, sample_rate_hz: int, path: str | Path, *, mp3_kbps: int | None = None
) -> Path:
    """Write audio in the format named by the file suffix.

    ``wav`` and ``flac`` are 16-bit PCM, ``ogg`` is Vorbis (all via
    soundfile); ``mp3`` uses libsndfile's encoder when it has one, else
    ``ffmpeg``; ``m4a``/``aac`` are AAC at 160 kbps via ``ffmpeg``. All these
    decode without an offset (gapless) with soundfile and ffmpeg.

    Parameters
    ----------
    y : numpy.ndarray
        Samples in [-1, 1], shape ``(n,)`` or ``(n, channels)``.
    sample_rate_hz : int
        Sample rate.
    path : str or Path
        Output path; the suffix picks the format.
    mp3_kbps : int, optional
        Constant MP3 bit rate (default: the encoder's default VBR quality).

    Returns
    -------
    Path
        The written path.

    Raises
    ------
    ConfigError
        For an unknown suffix.
    RendererUnavailableError
        If the format needs ffmpeg and it is missing.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    y = np.clip(y, -1.0, 1.0)
    if fmt in ("wav", "flac"):
        sf.write(path, y, sample_rate_hz, subtype="PCM_16")
    elif fmt == "ogg":
        sf.write(path, y, sample_rate_hz, format="OGG", subtype="VORBIS")
    elif fmt == "mp3" and soundfile_writes_mp3():
        kwargs: dict[str, object] = {}
        if mp3_kbps is not None:
            level = _SF_MP3_LEVEL[min(_SF_MP3_LEVEL, key=lambda k: abs(k - mp3_kbps))]
            kwargs = {"compression_level": level, "bitrate_mode": "CONSTANT"}
        sf.write(path, y, sample_rate_hz, format="MP3", subtype="MPEG_LAYER_III", **kwargs)
    elif fmt in ("mp3", "m4a", "aac"):
        codec = (
            ["-c:a", "libmp3lame", "-b:a", f"{mp3_kbps or 192}k"]
            if fmt == "mp3"
            else ["-c:a", "aac", "-b:a", "160k"]
        )
        with tempfile.TemporaryDirectory(prefix="mirflow-synth-") as tmp:
            wav = Path(tmp, "in.wav")
            sf.write(wav, y, sample_rate_hz, subtype="PCM_16")
            _run_ffmpeg(["-i", str(wav), *codec, str(path)])
    else:
        raise ConfigError(f"unsupported audio format {fmt!r}; use one of {AUDIO_FORMATS}")
    return path


def _align(decoded: np.ndarray, reference: np.ndarray, max_lag: int = 4096) -> np.ndarray:
    """Shift ``decoded`` so that it lines up with ``reference``; same length as the reference."""
    n = len(reference)
    a = reference if reference.ndim == 1 else reference.mean(axis=1)
    b = decoded if decoded.ndim == 1 else decoded.mean(axis=1)
    m = min(len(a), len(b), 20 * 44100)
    size = 1 << int(np.ceil(np.log2(2 * m)))
    corr = np.fft.irfft(np.fft.rfft(b[:m], size) * np.conj(np.fft.rfft(a[:m], size)), size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    lag = int(lags[np.argmax(corr[lags])])
    if lag:
        logger.debug("mp3 round trip: re-aligned by %d samples", lag)
    out = (
        decoded[lag:]
        if lag > 0
        else np.concatenate([np.zeros((-lag,) + decoded.shape[1:], decoded.dtype), decoded])
    )
    return _fit(out, 0, n)


def mp3_roundtrip(y: np.ndarray, sample_rate_hz: int, kbps: int = 64) -> np.ndarray:
    """Encode to constant-bit-rate MP3 and decode back, re-aligned to the input.

    Uses ``ffmpeg``/LAME when available (exact bit rate), else libsndfile's
    MP3 encoder (nearest of its bit-rate steps).

    Parameters
    ----------
    y : numpy.ndarray
        Signal, shape ``(n,)`` or ``(n, channels)``.
    sample_rate_hz : int
        Sample rate.
    kbps : int
        Bit rate.

    Returns
    -------
    numpy.ndarray
        Float32 decoded signal, same shape as ``y``, aligned by cross-correlation.
    """
    with tempfile.TemporaryDirectory(prefix="mirflow-synth-") as tmp:
        mp3 = Path(tmp, "rt.mp3")
        if _ffmpeg() is not None:
            wav = Path(tmp, "in.wav")
            sf.write(wav, np.clip(y, -1, 1), sample_rate_hz, subtype="PCM_16")
            _run_ffmpeg(["-i", str(wav), "-c:a", "libmp3lame", "-b:a", f"{kbps}k", str(mp3)])
        elif soundfile_writes_mp3():
            write_audio(y, sample_rate_hz, mp3, mp3_kbps=kbps)
        else:
            raise RendererUnavailableError(
                "an MP3 round trip needs ffmpeg or a libsndfile with MP3"
            )
        decoded, sr = sf.read(mp3, dtype="float32", always_2d=y.ndim == 2)
    if sr != sample_rate_hz:
        raise RendererUnavailableError(f"MP3 decoded at {sr} Hz, expected {sample_rate_hz} Hz")
    return _align(decoded, y)


def finish(
    y: np.ndarray,
    *,
    sample_rate_hz: int,
    seed: int,
    noise_snr_db: float | None = None,
    mp3_kbps: int | None = None,
    music_region: tuple[int, int] | None = None,
) -> np.ndarray:
    """Normalize to -1 dBFS, then apply the optional degradations.

    Parameters
    ----------
    y : numpy.ndarray
        Rendered signal.
    sample_rate_hz : int
        Sample rate.
    seed : int
        Seeds the noise.
    noise_snr_db : float, optional
        White-noise SNR (signal power measured over ``music_region``).
    mp3_kbps : int, optional
        MP3 round-trip bit rate.
    music_region : tuple of int, optional
        Sample range of the music.

    Returns
    -------
    numpy.ndarray
        Float32 signal, peak at most -1 dBFS.
    """
    y = normalize(y)
    if noise_snr_db is not None:
        y = normalize(add_noise(y, noise_snr_db, np.random.default_rng([seed, 202]), music_region))
    if mp3_kbps is not None:
        y = mp3_roundtrip(y, sample_rate_hz, mp3_kbps)
        top = float(np.max(np.abs(y)))
        if top > 0.999:
            y = normalize(y)
    return y
