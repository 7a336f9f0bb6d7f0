"""Harmonic relations between keys and the tempo/key rule of a harmonic-mixing query.

Keys are parsed with :func:`mirflow.labels.parse_key` (any spelling) and
compared as :class:`mirflow.labels.Key`; the Camelot arithmetic below is the
wheel's own: one step clockwise (+1, same letter) is a fifth up, the other
letter on the same number is the relative major/minor.

Examples
--------
>>> key_relation("A minor", "C major"), key_relation("C major", "G major"), key_relation("C major", "C minor")
('relative', 'dominant', 'parallel')
>>> mix_compatible_keys("8A")
['A minor', 'E minor', 'D minor', 'C major']
>>> tempo_compatible(128.0, 124.0), tempo_compatible(128.0, 64.5), tempo_compatible(128.0, 110.0)
(True, True, False)
"""

from __future__ import annotations

import math

from mirflow.labels import Key, parse_key

__all__ = [
    "KEY_RELATIONS",
    "MIX_TEMPO_TOLERANCE",
    "MIX_TEMPO_FACTORS",
    "key_relation",
    "mix_compatible_keys",
    "tempo_compatible",
    "tempo_ranges",
]

#: Values of the ``key_relation`` column of :func:`mirflow.index.similar`, from the query's key to the
#: neighbour's: ``dominant`` = the neighbour's tonic a fifth above (Camelot +1), ``subdominant`` = a fifth
#: below (Camelot −1), ``relative`` = relative major/minor (same Camelot number), ``parallel`` = same tonic,
#: other mode; ``other`` = anything else.
KEY_RELATIONS: tuple[str, ...] = ("same", "relative", "dominant", "subdominant", "parallel", "other")

#: A neighbour's tempo is mix-compatible within ±6 % of the query's tempo: the range a DJ deck's
#: ±6 % pitch fader covers (Technics SL-1200 default range), so two such tracks can be beat-matched.
MIX_TEMPO_TOLERANCE = 0.06

#: Metrical levels counted as the same tempo for mixing: the query tempo itself, half and double.
#: Half/double are included because a 70 BPM and a 140 BPM track share every other beat (DJs mix
#: half-time tracks this way) and because tempo estimators often disagree on the metrical level.
MIX_TEMPO_FACTORS: tuple[float, ...] = (1.0, 0.5, 2.0)


def _key(label: str | Key | None) -> Key | None:
    if label is None or isinstance(label, Key):
        return label
    if isinstance(label, float) and math.isnan(label):
        return None
    return parse_key(label)


def key_relation(query: str | Key | None, other: str | Key | None) -> str | None:
    """The harmonic relation of ``other``'s key to ``query``'s key.

    Parameters
    ----------
    query, other : str, Key or None
        Keys in any spelling :func:`mirflow.labels.parse_key` reads.

    Returns
    -------
    str or None
        One of :data:`KEY_RELATIONS`; ``None`` when either key is missing.
    """
    q, o = _key(query), _key(other)
    if q is None or o is None:
        return None
    if q == o:
        return "same"
    if o == q.relative:
        return "relative"
    if o.mode == q.mode and o.tonic == (q.tonic + 7) % 12:
        return "dominant"
    if o.mode == q.mode and o.tonic == (q.tonic + 5) % 12:
        return "subdominant"
    if o.tonic == q.tonic:
        return "parallel"
    return "other"


def mix_compatible_keys(query: str | Key) -> list[str]:
    """Keys (mir_eval spelling) that mix harmonically with ``query``: the Camelot rule.

    Same code, ±1 on the number with the same letter, or the same number with
    the other letter — i.e. the relations ``same``, ``dominant``,
    ``subdominant`` and ``relative`` of :func:`key_relation`.
    """
    q = _key(query)
    if q is None:
        raise ValueError("a harmonic-mixing query needs a key")
    number, letter = q.camelot_number, q.camelot[-1]
    codes = [q.camelot, f"{number % 12 + 1}{letter}", f"{(number - 2) % 12 + 1}{letter}",
             f"{number}{'A' if letter == 'B' else 'B'}"]
    return [parse_key(code).mir_eval for code in codes]


def tempo_ranges(query_tempo_bpm: float) -> list[tuple[float, float]]:
    """``[(low, high), …]`` BPM ranges that are mix-compatible with ``query_tempo_bpm`` (inclusive)."""
    if not (query_tempo_bpm > 0 and math.isfinite(query_tempo_bpm)):
        raise ValueError(f"a harmonic-mixing query needs a positive tempo, got {query_tempo_bpm!r}")
    return [(f * query_tempo_bpm * (1 - MIX_TEMPO_TOLERANCE), f * query_tempo_bpm * (1 + MIX_TEMPO_TOLERANCE))
            for f in MIX_TEMPO_FACTORS]


def tempo_compatible(query_tempo_bpm: float, other_tempo_bpm: float | None) -> bool:
    """Whether ``other_tempo_bpm`` lies in one of :func:`tempo_ranges` of the query."""
    if other_tempo_bpm is None or not math.isfinite(other_tempo_bpm):
        return False
    return any(lo <= other_tempo_bpm <= hi for lo, hi in tempo_ranges(query_tempo_bpm))
