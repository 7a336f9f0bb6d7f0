"""One self-contained HTML report of a catalog (``mirflow report``).

The report is a single file that opens offline in any browser: the static
plots are matplotlib PNGs inlined as ``data:`` URIs, the interactive ones (the
Camelot wheel and the embedding maps) are inline SVG whose points carry a
``<title>``, which browsers show on hover, so no script and no network are
needed. Every value taken from the catalog goes through :func:`html.escape`
(file names may hold ``<``, ``&`` and quotes), and every section says so when
it has no data rather than disappearing.

Examples
--------
>>> from mirflow.query.report import build_report       # doctest: +SKIP
>>> build_report("demo/catalog")                         # doctest: +SKIP
PosixPath('.../demo/catalog/report.html')
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mirflow._version import __version__
from mirflow.catalog.layout import Catalog
from mirflow.labels import all_keys, parse_key
from mirflow.query import connect

__all__ = ["Report", "build_report", "camelot_counts", "extractor_seconds", "render_report"]

log = logging.getLogger(__name__)

#: Relative tolerance for calling ``tempo_alt_bpm`` double or half of ``tempo_bpm``:
#: the 4 % of tempo Accuracy1 in mir_eval / MIREX.
HALF_DOUBLE_TOLERANCE = 0.04
#: A track's metrical level is called ambiguous when the other level is at least this
#: share as confident as the chosen one (a reading aid, not a measured threshold).
AMBIGUOUS_ALT_SHARE = 0.5
#: Rows listed in the "least certain tempo" and "errors" tables before "N more" is said.
LIST_ROWS = 12
#: The ``tracks`` column that says why values are empty: a list of "EXTRACTOR: reason"
#: (null in rows written before mirflow recorded reasons, and absent in older catalogs).
REASON_COLUMN = "empty_reasons"
#: Keys of an extractor's lineage entry that may hold its wall time in seconds.
SECONDS_KEYS = ("seconds", "elapsed_s", "elapsed_seconds", "wall_seconds", "time_s")

_TRACK_COLUMNS = (
    "track_id", "path", "duration_s", "analysis_seconds", "analyzed_at", "pipeline", "pipeline_version",
    "mirflow_version", "is_silent", "loudness_integrated_lufs", "tempo_bpm", "tempo_confidence",
    "tempo_alt_bpm", "tempo_alt_confidence", "key", "key_mode", "key_camelot",
)
#: Which extractor produces each value the "empty values" section counts.
_VALUE_EXTRACTOR = {"tempo_bpm": "rhythm", "key": "key", "chords": "chords", "beats": "rhythm"}
_BLUE, _ORANGE, _GREEN, _RED, _GREY, _PURPLE = "#3b6ea8", "#d08a2e", "#4a8a4a", "#b04a4a", "#9a9a9a", "#6a4a8a"


# --------------------------------------------------------------------------- public helpers
def camelot_counts(keys: Iterable[str | None]) -> tuple[dict[str, int], int]:
    """Count keys per Camelot code.

    Parameters
    ----------
    keys : iterable of str or None
        Key labels in any spelling :func:`mirflow.labels.parse_key` reads
        (``'A minor'``, ``'A:minor'``, ``'8A'``, …).

    Returns
    -------
    counts : dict
        All 24 codes, ``'1A'`` … ``'12B'``, to their number of keys (0 included).
    unknown : int
        Keys that are null, "no key" (``'X'``, ``'N'``) or unparseable.

    Examples
    --------
    >>> counts, unknown = camelot_counts(["A minor", "C:major", "8A", None])
    >>> counts["8A"], counts["8B"], unknown
    (2, 1, 1)
    """
    counts = {f"{n}{letter}": 0 for n in range(1, 13) for letter in "AB"}
    unknown = 0
    for label in keys:
        if label is None or (isinstance(label, float) and math.isnan(label)):
            unknown += 1
            continue
        try:
            key = parse_key(str(label))
        except ValueError:
            key = None
        if key is None:
            unknown += 1
        else:
            counts[key.camelot] += 1
    return counts, unknown


def extractor_seconds(lineage: str | Mapping[str, Any]) -> dict[str, float]:
    """Per-extractor wall seconds recorded in a ``tracks.lineage`` JSON, if any.

    Two forms are read: a top-level ``{"extractor_seconds": {name: s}}`` and a
    seconds entry (any of :data:`SECONDS_KEYS`) in an extractor's own record.
    An extractor that appears twice (embeddings of two models) is labelled
    ``name (model)``. Empty when the lineage records no timing (mirflow's
    default pipeline records none yet).

    Examples
    --------
    >>> extractor_seconds('{"extractors": [{"name": "key", "seconds": 1.5}]}')
    {'key': 1.5}
    >>> extractor_seconds('{"extractors": [{"name": "key"}]}')
    {}
    """
    if isinstance(lineage, str):
        try:
            lineage = json.loads(lineage)
        except json.JSONDecodeError:
            return {}
    if not isinstance(lineage, Mapping):
        return {}
    out: dict[str, float] = {}
    top = lineage.get("extractor_seconds")
    if isinstance(top, Mapping):
        out.update({str(k): float(v) for k, v in top.items() if _is_number(v)})
    extractors = [e for e in lineage.get("extractors") or [] if isinstance(e, Mapping)]
    names = Counter(str(e.get("name")) for e in extractors)
    for entry in extractors:
        seconds = next((entry[k] for k in SECONDS_KEYS if _is_number(entry.get(k))), None)
        if seconds is None:
            continue
        name = str(entry.get("name"))
        if names[name] > 1:
            model = (entry.get("params") or {}).get("model") or (entry.get("params") or {}).get("model_name")
            name = f"{name} ({model})" if model else name
        out[name] = out.get(name, 0.0) + float(seconds)
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------- report
@dataclass
class Report:
    """What :func:`build_report` wrote.

    Attributes
    ----------
    path : Path
        The HTML file.
    figures : list of str
        Names of the plots in it (``data-figure`` attributes), in page order.
    empty_sections : list of str
        Sections that had no data to plot (each says so on the page).
    """

    path: Path
    figures: list[str] = field(default_factory=list)
    empty_sections: list[str] = field(default_factory=list)


@dataclass
class _Page:
    sections: list[tuple[str, str, str, bool]] = field(default_factory=list)  # (anchor, title, body, half width)
    figures: list[str] = field(default_factory=list)
    empty_sections: list[str] = field(default_factory=list)
    n_svg: int = 0

    def add(self, anchor: str, title: str, body: str, *, empty: bool = False, half: bool = False) -> None:
        self.sections.append((anchor, title, body, half))
        if empty:
            self.empty_sections.append(anchor)

    def figure(self, name: str, content: str, caption: str) -> str:
        self.figures.append(name)
        return (f'<figure class="plot" data-figure="{_e(name)}">{content}'
                f"<figcaption>{caption}</figcaption></figure>")


def build_report(catalog: str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None,
                 max_points: int = 5000, top_n: int = 20) -> Report:
    """Write the HTML report of ``catalog``.

    Parameters
    ----------
    catalog : path
        The catalog folder.
    out : path, optional
        The HTML file to write (default ``CATALOG/report.html``).
    max_points : int
        Most tracks drawn in one embedding map; larger catalogs show a
        random sample of this size (seeded, and the page says so).
    top_n : int
        Chord labels and tags shown in their bar charts.

    Returns
    -------
    Report
    """
    if out is None:
        out = Catalog(catalog).local_root("writing the report beside the catalog (give --out)") / "report.html"
    path = Path(out)
    text, page = _render(catalog, max_points=max_points, top_n=top_n)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    log.info("wrote %s (%d figures)", path, len(page.figures))
    return Report(path=path, figures=page.figures, empty_sections=page.empty_sections)


def render_report(catalog: str | os.PathLike[str], *, max_points: int = 5000, top_n: int = 20) -> str:
    """The report of ``catalog`` as an HTML string (see :func:`build_report`)."""
    return _render(catalog, max_points=max_points, top_n=top_n)[0]


def _render(catalog: str | os.PathLike[str], *, max_points: int, top_n: int) -> tuple[str, _Page]:
    if max_points < 3:
        raise ValueError(f"max_points must be at least 3, got {max_points}")
    if top_n < 1:
        raise ValueError(f"top_n must be positive, got {top_n}")
    cat = Catalog(catalog)
    root = cat.root
    con = connect(cat)
    tracks = _tracks(con)
    page = _Page()
    _overview(page, con, tracks)
    _errors(page, con)
    _tempo(page, tracks)
    _key(page, tracks)
    _loudness(page, tracks)
    _duration(page, tracks)
    _chords(page, con, top_n)
    _tags(page, con, top_n)
    _embeddings(page, con, tracks, max_points)
    _timing(page, con, tracks)
    _empty_values(page, con, tracks)
    return _html(root, page), page


# --------------------------------------------------------------------------- data
def _columns(con, table: str) -> list[str]:
    return [d[0] for d in con.execute(f"select * from {table} limit 0").description]


def _tracks(con) -> pd.DataFrame:
    """The tracks columns the report uses (absent ones as nulls), one row per track a path holds now."""
    present = set(_columns(con, "tracks"))
    wanted = [c for c in _TRACK_COLUMNS if c in present]
    select = ", ".join([f'"{c}"' for c in wanted]
                       + (["md5(lineage) as lineage_md5"] if "lineage" in present else [])
                       + ([f'"{REASON_COLUMN}"'] if REASON_COLUMN in present else []))
    df = con.execute(f"select {select} from current_tracks").df() if select else pd.DataFrame()
    for c in (*_TRACK_COLUMNS, REASON_COLUMN):
        if c not in df:
            df[c] = pd.Series([None] * len(df), dtype=object)
    df[REASON_COLUMN] = [list(v) if isinstance(v, (list, tuple, np.ndarray)) else None for v in df[REASON_COLUMN]]
    return df


def _notna(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").dropna()


# --------------------------------------------------------------------------- sections
def _overview(page: _Page, con, tracks: pd.DataFrame) -> None:
    n_tracks = len(tracks)
    n_files, n_file_tracks = con.execute("select count(*), count(distinct track_id) from files").fetchone()
    dup_tracks = con.execute("select count(*) from (select track_id from files group by track_id "
                         "having count(*) > 1)").fetchone()[0]
    n_errors = con.execute("select count(*) from errors").fetchone()[0]
    durations = _notna(tracks["duration_s"])
    seconds = _notna(tracks["analysis_seconds"])
    rows = [
        ("tracks (unique contents analyzed)", _int(n_tracks)),
        ("files (input paths seen)", _int(n_files)),
        ("duplicate paths (same bytes as another path, analyzed once)",
         f"{_int(n_files - n_file_tracks)} (in {_int(dup_tracks)} tracks)"),
        ("errors (inputs that could not be analyzed)", _int(n_errors)),
        ("audio hours", f"{durations.sum() / 3600:.2f} h" + (
            f" ({_int(n_tracks - len(durations))} tracks without a duration)" if len(durations) < n_tracks else "")),
        ("analysis time (sum over tracks, worker wall time)", _duration_text(seconds.sum()) if len(seconds) else "–"),
    ]
    if n_tracks:
        pipes = tracks.groupby(["pipeline", "pipeline_version"], dropna=False).size()
        rows.append(("pipelines", "; ".join(f"{_e(p)} ({_e(v)}): {_int(n)}" for (p, v), n in pipes.items())))
        versions = tracks["mirflow_version"].value_counts(dropna=False)
        rows.append(("mirflow versions", "; ".join(f"{_e(v)}: {_int(n)}" for v, n in versions.items())))
        when = pd.to_datetime(tracks["analyzed_at"], utc=True).dropna()
        if len(when):
            rows.append(("analyzed", f"{_e(when.min().strftime('%Y-%m-%d %H:%M'))} – "
                                     f"{_e(when.max().strftime('%Y-%m-%d %H:%M'))} UTC"))
    body = _kv_table("overview-table", rows)
    if not n_tracks:
        body += '<p class="empty">No tracks in the catalog yet: the sections below have no data.</p>'
    page.add("overview", "Catalog", body, empty=not n_tracks, half=True)


def _errors(page: _Page, con) -> None:
    n = con.execute("select count(*) from errors").fetchone()[0]
    if not n:
        page.add("errors", "Errors", '<p class="ok">No errors: every input the catalog saw was analyzed.</p>',
                 half=True)
        return
    groups = con.execute(
        "select stage, error_type, count(*) n, arg_min(path, path) example_path, "
        "arg_min(message, path) example_message from errors group by stage, error_type "
        "order by n desc, stage, error_type").fetchall()
    rows = "".join(
        f'<tr><td>{_e(stage)}</td><td>{_e(etype)}</td><td class="num">{_int(count)}</td>'
        f'<td class="path">{_e(path)}</td><td>{_e(message)}</td></tr>'
        for stage, etype, count, path, message in groups)
    body = (f"<p>{_int(n)} inputs could not be analyzed. By stage (where it failed) and error type "
            "(exception class), with one example each:</p>"
            '<table id="errors-by-stage"><thead><tr><th>stage</th><th>error type</th><th>count</th>'
            f"<th>example path</th><th>example message</th></tr></thead><tbody>{rows}</tbody></table>"
            f'<p class="hint">All of them: <code>mirflow query CATALOG "select stage, error_type, path, '
            f'message from errors order by stage"</code></p>')
    page.add("errors", "Errors", body)


def _tempo_relation(tempo: float, alt: float) -> str:
    if not (np.isfinite(tempo) and np.isfinite(alt)) or tempo <= 0:
        return "none"
    ratio = alt / tempo
    if abs(ratio - 2.0) <= 2.0 * HALF_DOUBLE_TOLERANCE:
        return "≈ 2×"
    if abs(ratio - 0.5) <= 0.5 * HALF_DOUBLE_TOLERANCE:
        return "≈ ½×"
    if abs(ratio - 1.5) <= 1.5 * HALF_DOUBLE_TOLERANCE:
        return "≈ 3/2×"  # the rhythm ensemble moved a 3:2 grid (two eighths of 6/8) to the notated beat
    return "other ratio"


#: Where tempo_alt_bpm lies relative to tempo_bpm, and its colour in the tempo plot.
_RELATION_COLOURS = {"≈ 2×": _BLUE, "≈ ½×": _ORANGE, "≈ 3/2×": _GREEN, "other ratio": _PURPLE, "none": _GREY}


def _tempo(page: _Page, tracks: pd.DataFrame) -> None:
    t = tracks.assign(tempo_bpm=pd.to_numeric(tracks["tempo_bpm"], errors="coerce"),
                      tempo_alt_bpm=pd.to_numeric(tracks["tempo_alt_bpm"], errors="coerce"),
                      tempo_confidence=pd.to_numeric(tracks["tempo_confidence"], errors="coerce"),
                      tempo_alt_confidence=pd.to_numeric(tracks["tempo_alt_confidence"], errors="coerce"))
    t = t[t["tempo_bpm"].notna()]
    n_missing = len(tracks) - len(t)
    if t.empty:
        page.add("tempo", "Tempo", _no_data(f"No track has a tempo ({_int(n_missing)} tracks without one)."),
                 empty=True)
        return
    t = t.assign(relation=[_tempo_relation(a, b) for a, b in zip(t["tempo_bpm"], t["tempo_alt_bpm"], strict=True)])
    lo = 5 * math.floor(min(t["tempo_bpm"].min(), t["tempo_alt_bpm"].min(skipna=True) if t["tempo_alt_bpm"].notna().any() else np.inf) / 5)
    hi = 5 * math.ceil(max(t["tempo_bpm"].max(), t["tempo_alt_bpm"].max(skipna=True) if t["tempo_alt_bpm"].notna().any() else -np.inf) / 5)
    bins = np.arange(lo, max(hi, lo + 5) + 5, 5)
    fig, ax = _axes(6.6, 3.8)
    order = [r for r in _RELATION_COLOURS if (t["relation"] == r).any()]
    ax.hist([t.loc[t["relation"] == r, "tempo_bpm"] for r in order], bins=bins, stacked=True,
            color=[_RELATION_COLOURS[r] for r in order],
            label=[f"tempo_bpm; alternative {r} ({_int((t['relation'] == r).sum())})" for r in order])
    alts = t["tempo_alt_bpm"].dropna()
    if len(alts):
        ax.hist(alts, bins=bins, histtype="step", color="#222222", linestyle="--", linewidth=1.2,
                label=f"tempo_alt_bpm, the other metrical level ({_int(len(alts))})")
    ax.set_xlabel("tempo (BPM, 5-BPM bins)")
    ax.set_ylabel("tracks")
    ax.set_title("Tempo: chosen level (bars) and the other level (dashed)")
    ax.legend(fontsize=7, loc="upper right")
    _integer_y(ax)
    caption = ("Bars: the chosen tempo, coloured by where the other metrical level lies (≈ 2×: tempo_alt_bpm "
               f"within {100 * HALF_DOUBLE_TOLERANCE:g} % of double tempo_bpm, the tolerance of tempo Accuracy1; "
               "≈ ½×: of half; ≈ 3/2×: a 3:2 grid moved to the notated beat); dashed: the other level's tempo.")
    figure = page.figure("tempo", _png(fig, "tempo histogram"), caption)
    body = ""
    rel_rows = []
    for r in _RELATION_COLOURS:
        sel = t[t["relation"] == r]
        if sel.empty:
            continue
        rel_rows.append((_swatch(_RELATION_COLOURS[r]) + _e(r), _int(len(sel)),
                         _num(sel["tempo_confidence"].median(), 2), _num(sel["tempo_alt_confidence"].median(), 2)))
    body += _table("tempo-relations", ["tempo_alt_bpm / tempo_bpm", "tracks", "median confidence",
                                       "median alt confidence"], rel_rows)
    ambiguous = t[t["tempo_alt_confidence"] >= AMBIGUOUS_ALT_SHARE * t["tempo_confidence"]]
    body += (f"<p>{_int(len(ambiguous))} of {_int(len(t))} tracks have an ambiguous metrical level "
             f"(the other level at least {AMBIGUOUS_ALT_SHARE:g}× as confident as the chosen one)"
             + (f"; {_int(n_missing)} tracks have no tempo (see <a href=\"#empty\">empty values</a>)" if n_missing else "")
             + ".</p>")
    least = t.sort_values(["tempo_confidence", "path"], na_position="first").head(LIST_ROWS)
    rows = [(f'<span class="file" title="{_e(p)}">{_e(_basename(p))}</span>', _num(b, 1), _num(c, 2),
             _num(ab, 1), _num(ac, 2), _e(r))
            for p, b, c, ab, ac, r in zip(least["path"], least["tempo_bpm"], least["tempo_confidence"],
                                          least["tempo_alt_bpm"], least["tempo_alt_confidence"], least["relation"],
                                          strict=True)]
    body += (f"<p>The {_int(len(least))} least certain tempi (lowest tempo_confidence) of {_int(len(t))}:</p>"
             + _table("tempo-least-certain", ["file", "BPM", "confidence", "alt BPM",
                                              "alt confidence", "alt / BPM"], rows))
    if len(t) > len(least):
        body += ('<p class="hint">All of them: <code>mirflow query CATALOG "select path, tempo_bpm, '
                 'tempo_confidence, tempo_alt_bpm, tempo_alt_confidence from current_tracks order by tempo_confidence"'
                 "</code></p>")
    page.add("tempo", "Tempo", f'<div class="flex">{figure}<div>{body}</div></div>')


def _key(page: _Page, tracks: pd.DataFrame) -> None:
    keys = tracks["key"].where(tracks["key"].notna(), tracks["key_camelot"])
    counts, unknown = camelot_counts(keys.tolist())
    total = sum(counts.values())
    if not total:
        page.add("key", "Key and mode", _no_data(f"No track has a key ({_int(unknown)} tracks without one)."),
                 empty=True)
        return
    body = '<div class="flex">' + page.figure("camelot", _camelot_svg(counts, unknown, page),
                       f"Camelot wheel: outer ring B (major), inner ring A (minor), laid out like a clock face; "
                       f"fifths are neighbours. {_int(total)} tracks with a key, {_int(unknown)} without. "
                       "Hover a sector for its key.")
    modes = tracks["key_mode"].where(tracks["key_mode"].notna(), None)
    mode_counts = {"major": int((modes == "major").sum()), "minor": int((modes == "minor").sum())}
    mode_counts["no key"] = len(tracks) - mode_counts["major"] - mode_counts["minor"]
    fig, ax = _axes(4.8, 3.0)
    bars = ax.bar(list(mode_counts), list(mode_counts.values()), color=[_BLUE, _ORANGE, _GREY])
    ax.bar_label(bars, labels=[_int(v) for v in mode_counts.values()], fontsize=8)
    ax.set_xlabel("mode")
    ax.set_ylabel("tracks")
    ax.set_title("Mode")
    ax.margins(y=0.12)
    _integer_y(ax)
    body += page.figure("mode", _png(fig, "mode bar chart"),
                        "Major and minor tracks (key_mode); 'no key' counts tracks whose key is null.") + "</div>"
    page.add("key", "Key and mode", body)


def _loudness(page: _Page, tracks: pd.DataFrame) -> None:
    lufs = _notna(tracks["loudness_integrated_lufs"])
    silent = int(tracks["is_silent"].fillna(False).astype(bool).sum())
    note = f"{_int(len(tracks) - len(lufs))} tracks have no loudness ({_int(silent)} of them silent)."
    if lufs.empty:
        page.add("loudness", "Loudness", _no_data("No track has an integrated loudness. " + note), empty=True, half=True)
        return
    fig, ax = _axes(6.2, 3.1)
    ax.hist(lufs, bins=np.arange(math.floor(lufs.min()), math.ceil(lufs.max()) + 1.0, 1.0), color=_GREEN)
    # A reference line people know: the level several streaming services normalise to.
    ax.axvline(-14, color="#222222", linestyle=":", linewidth=1, label="−14 LUFS (a common streaming target)")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_xlabel("integrated loudness (LUFS, EBU R128; 1-LU bins)")
    ax.set_ylabel("tracks")
    ax.set_title("Loudness")
    _integer_y(ax)
    body = page.figure("loudness", _png(fig, "loudness histogram"),
                       f"Median {lufs.median():.1f} LUFS over {_int(len(lufs))} tracks. " + note)
    page.add("loudness", "Loudness", body, half=True)


def _duration(page: _Page, tracks: pd.DataFrame) -> None:
    durations = _notna(tracks["duration_s"])
    if durations.empty:
        page.add("duration", "Duration", _no_data("No track has a duration."), empty=True, half=True)
        return
    minutes = durations.median() > 120
    values = durations / 60 if minutes else durations
    fig, ax = _axes(6.2, 3.1)
    ax.hist(values, bins=min(40, max(5, int(np.sqrt(len(values))) * 2)), color=_PURPLE)
    ax.set_xlabel("duration (minutes)" if minutes else "duration (s)")
    ax.set_ylabel("tracks")
    ax.set_title("Duration")
    _integer_y(ax)
    body = page.figure("duration", _png(fig, "duration histogram"),
                       f"{_int(len(durations))} tracks, median {_duration_text(durations.median())}, "
                       f"shortest {_duration_text(durations.min())}, longest {_duration_text(durations.max())}.")
    page.add("duration", "Duration", body, half=True)


def _chords(page: _Page, con, top_n: int) -> None:
    vocab = con.execute("select label, sum(end_s - start_s) as label_seconds, count(distinct track_id) n_tracks "
                    "from chords group by label order by label_seconds desc, label").df()
    if vocab.empty:
        page.add("chords", "Chord vocabulary", _no_data("The chords table is empty."), empty=True, half=True)
        return
    total = float(vocab["label_seconds"].sum())
    top = vocab.head(top_n)
    rest = vocab.iloc[len(top):]
    minutes = total > 600
    scale, unit = (60.0, "minutes") if minutes else (1.0, "s")
    fig, ax = _axes(6.2, 0.9 + 0.24 * len(top))
    labels = [_mpl("N (no chord)" if lab == "N" else lab) for lab in top["label"]]
    colours = [_GREY if lab == "N" else _BLUE for lab in top["label"]]
    ax.barh(range(len(top)), top["label_seconds"] / scale, color=colours)
    ax.set_yticks(range(len(top)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"total duration ({unit})")
    ax.set_ylabel("chord label (Harte)")
    ax.set_title(f"Chord vocabulary: top {len(top)} of {len(vocab)} labels by total duration")
    caption = (f"{_int(len(vocab))} distinct labels over {_duration_text(total)} of chord segments; "
               f"the top {_int(len(top))} cover {100 * top['label_seconds'].sum() / total:.1f} %.")
    if len(rest):
        caption += f" Not drawn: {_int(len(rest))} more labels ({_duration_text(rest['label_seconds'].sum())})."
    page.add("chords", "Chord vocabulary", page.figure("chords", _png(fig, "chord vocabulary"), caption), half=True)


def _tags(page: _Page, con, top_n: int) -> None:
    per_model = con.execute("select model, count(distinct track_id) n_tracks, count(distinct tag) n_tags "
                        "from tags group by model order by model").fetchall()
    if not per_model:
        page.add("tags", "Tags", _no_data("The tags table is empty (no tagging model in the pipeline)."),
                 empty=True, half=True)
        return
    body = ""
    for model, n_tracks, n_tags in per_model:
        top = con.execute("select tag, avg(probability) p from tags where model = ? group by tag "
                      "order by p desc, tag limit ?", [model, top_n]).fetchall()
        fig, ax = _axes(6.2, 0.9 + 0.24 * len(top))
        ax.barh(range(len(top)), [p for _, p in top], color=_ORANGE)
        ax.set_yticks(range(len(top)), [_mpl(tag) for tag, _ in top], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, max(0.05, max(p for _, p in top) * 1.1))
        ax.set_xlabel("mean probability over tracks")
        ax.set_ylabel("tag")
        ax.set_title(_mpl(f"Top {len(top)} of {n_tags} tags of {model} ({n_tracks} tracks)"))
        body += page.figure(f"tags-{model}", _png(fig, f"tags of {model}"),
                            f"Model <code>{_e(model)}</code>: tags ranked by their mean probability over "
                            f"{_int(n_tracks)} tracks (tags are not exclusive); {_int(n_tags - len(top))} "
                            "tags with lower means not drawn.")
    page.add("tags", "Tags", body, half=True)


def _embeddings(page: _Page, con, tracks: pd.DataFrame, max_points: int) -> None:
    models = [m for (m,) in con.execute("select distinct model from embeddings order by model").fetchall()]
    if not models:
        page.add("embeddings", "Embedding map", _no_data("The embeddings table is empty."), empty=True)
        return
    from sklearn.decomposition import PCA

    info = tracks[["track_id", "path", "key", "key_camelot", "tempo_bpm"]].drop_duplicates("track_id")
    body = ""
    for model in models:
        n_all = con.execute("select count(*) from embeddings where model = ?", [model]).fetchone()[0]
        if n_all < 3:
            body += (f'<p class="empty">Model <code>{_e(model)}</code>: {_int(n_all)} embeddings, too few '
                     "for a map (3 needed).</p>")
            continue
        # Sample in DuckDB, so a catalog of millions never holds all its vectors in memory.
        sample = f" using sample reservoir({int(max_points)} rows) repeatable (0)" if n_all > max_points else ""
        emb = con.execute("select * from (select track_id, embedding from embeddings where model = ?)"
                          f"{sample} order by track_id", [model]).df()
        x = np.stack(emb["embedding"].to_numpy()).astype(np.float64)
        pca = PCA(n_components=2, random_state=0)
        xy = pca.fit_transform(x)
        var = pca.explained_variance_ratio_
        labels = emb[["track_id"]].merge(info, on="track_id", how="left")
        keys = [_parse_key_safe(k if isinstance(k, str) else c) for k, c in zip(labels["key"], labels["key_camelot"], strict=True)]
        tempo = pd.to_numeric(labels["tempo_bpm"], errors="coerce").to_numpy()
        titles = [_point_title(p, k, b) for p, k, b in zip(labels["path"], keys, tempo, strict=True)]
        axis = (f"PC1 ({100 * var[0]:.0f} % of variance)", f"PC2 ({100 * var[1]:.0f} % of variance)")
        sample = (f" A random sample of {_int(len(emb))} of {_int(n_all)} tracks is drawn (--max-points)."
                  if len(emb) < n_all else "")
        key_colours = [_key_colour(k) for k in keys]
        present = sorted({k.camelot for k in keys if k is not None}, key=_camelot_sort)
        legend = [(code, _key_colour(_code_key(code))) for code in present]
        if any(k is None for k in keys):
            legend.append(("no key", _GREY))
        svg_key = _scatter_svg(page, xy, key_colours, titles, xlabel=axis[0], ylabel=axis[1],
                               title=f"{model}: coloured by key", legend=legend)
        body += page.figure(f"embedding-{model}-key", svg_key,
                            f"<code>{_e(model)}</code> embeddings, 2-D PCA, coloured by key (Camelot colours as "
                            f"on the wheel). Hover a point for its file.{sample}")
        colours, scale = _tempo_colours(tempo)
        svg_tempo = _scatter_svg(page, xy, colours, titles, xlabel=axis[0], ylabel=axis[1],
                                 title=f"{model}: coloured by tempo", colourbar=scale)
        body += page.figure(f"embedding-{model}-tempo", svg_tempo,
                            f"The same map coloured by tempo_bpm (grey: no tempo). Hover a point for its file.{sample}")
    page.add("embeddings", "Embedding map", f'<div class="pair">{body}</div>')


def _timing(page: _Page, con, tracks: pd.DataFrame) -> None:
    seconds = _notna(tracks["analysis_seconds"])
    if seconds.empty:
        page.add("timing", "Analysis time", _no_data("No track records its analysis time."), empty=True, half=True)
        return
    lineages = con.execute("select lineage, count(*) n from tracks group by lineage").fetchall()
    per_extractor: dict[str, list[float]] = {}
    for lineage, n in lineages:
        for name, s in extractor_seconds(lineage or "").items():
            per_extractor.setdefault(name, []).extend([s] * int(n))
    durations = pd.to_numeric(tracks["duration_s"], errors="coerce")
    speed = (durations / pd.to_numeric(tracks["analysis_seconds"], errors="coerce")).dropna()
    speed_text = (f" Median speed {speed.median():.1f}× real time (audio seconds per analysis second)."
                  if len(speed) else "")
    if per_extractor:
        names = sorted(per_extractor, key=lambda k: -float(np.sum(per_extractor[k])))
        fig, ax = _axes(6.2, 0.9 + 0.35 * len(names))
        ax.boxplot([per_extractor[k] for k in names], vert=False, tick_labels=[_mpl(k) for k in names])
        ax.invert_yaxis()
        ax.set_xlabel("seconds per track")
        ax.set_ylabel("extractor")
        ax.set_title("Time per extractor (from tracks.lineage)")
        totals = "; ".join(f"{_e(k)} {_duration_text(float(np.sum(per_extractor[k])))}" for k in names)
        body = page.figure("timing", _png(fig, "time per extractor"),
                           f"Per-extractor wall time per track, as recorded in tracks.lineage. Totals: {totals}."
                           + speed_text)
    else:
        fig, ax = _axes(6.2, 3.1)
        ax.hist(seconds, bins=min(40, max(5, int(np.sqrt(len(seconds))) * 2)), color=_RED)
        ax.set_xlabel("analysis_seconds (decode + all extractors, s per track)")
        ax.set_ylabel("tracks")
        ax.set_title("Analysis time per track")
        _integer_y(ax)
        body = page.figure("timing", _png(fig, "analysis time histogram"),
                           "Per-extractor timing is not recorded (tracks.lineage holds no seconds per extractor), "
                           f"so this is the whole per-track time: median {_duration_text(seconds.median())}, "
                           f"total {_duration_text(seconds.sum())} over {_int(len(seconds))} tracks." + speed_text)
    page.add("timing", "Analysis time", body, half=True)


def _empty_values(page: _Page, con, tracks: pd.DataFrame) -> None:
    n = len(tracks)
    if not n:
        page.add("empty", "Empty values", _no_data("No tracks, so no values to count."), empty=True, half=True)
        return
    has_rows = {}
    for table in ("chords", "beats"):
        where = " where label <> 'N'" if table == "chords" else ""
        ids = {t for (t,) in con.execute(f"select distinct track_id from {table}{where}").fetchall()}
        has_rows[table] = tracks["track_id"].isin(ids)
    empty = {
        "tempo_bpm": tracks["tempo_bpm"].isna(),
        "key": tracks["key"].isna(),
        "chords": ~has_rows["chords"],
        "beats": ~has_rows["beats"],
    }
    what = {"tempo_bpm": "tempo_bpm is null", "key": "key is null",
            "chords": "no chords row other than N (no chord)", "beats": "no beats rows"}
    in_pipeline = _extractors_per_track(con, tracks)
    silent = tracks["is_silent"].fillna(False).astype(bool).tolist()
    recorded = tracks[REASON_COLUMN].tolist()
    rows = []
    for value, mask in empty.items():
        extractor = _VALUE_EXTRACTOR[value]
        ran = in_pipeline[extractor].tolist()
        why: Counter[str] = Counter()
        for i in np.flatnonzero(mask.to_numpy()):
            why.update(_why_empty(extractor, recorded[i], ran=ran[i], silent=silent[i]))
        count = int(mask.sum())
        text = "<br>".join(f"{_e(r)} ({_int(c)})" for r, c in sorted(why.items(), key=lambda rc: (-rc[1], rc[0])))
        rows.append((f"<code>{value}</code>", _e(what[value]), _int(count), f"{100 * count / n:.1f} %", text or "–"))
    n_recorded = sum(r is not None for r in recorded)
    if n_recorded == n:
        intro = ("<p>Reasons as the extractors recorded them in <code>tracks.empty_reasons</code> "
                 "(<em>extractor: reason</em>; a track may give several).</p>")
    else:
        intro = ("<p>" + (f"{_int(n - n_recorded)} of {_int(n)} tracks were analyzed before mirflow recorded "
                          "<code>tracks.empty_reasons</code>; for them " if n_recorded else
                          "This catalog records no <code>tracks.empty_reasons</code>, so ")
                 + "the known reasons are derived: the extractor was not in the track's pipeline (tracks.lineage), "
                 "or the track is silent (<code>is_silent</code>); the rest is <em>reason not recorded</em>.</p>")
    body = intro + _table("empty-values", ["value", "empty when", "empty", f"of {_int(n)} tracks", "why"], rows)
    every = Counter(r for reasons in recorded if reasons for r in reasons)
    if every:
        body += ("<p>Every recorded reason, over all tracks and extractors:</p>"
                 + _table("empty-reasons", ["extractor: reason", "tracks"],
                          [(_e(r), _int(c)) for r, c in sorted(every.items(), key=lambda rc: (-rc[1], rc[0]))]))
    page.add("empty", "Empty values", body, half=True)


def _why_empty(extractor: str, recorded: list[str] | None, *, ran: bool, silent: bool) -> list[str]:
    """Why one track's value from ``extractor`` is empty, as labels to count."""
    if not ran:
        return [f"extractor {extractor} not in the pipeline"]
    if recorded is not None:
        prefix = f"{extractor}: "
        mine = [str(r) for r in recorded if str(r).startswith(prefix)]
        return mine or [f"{extractor}: reason not recorded"]
    return ["silent (is_silent)"] if silent else ["reason not recorded"]


def _extractors_per_track(con, tracks: pd.DataFrame) -> dict[str, pd.Series]:
    """Per extractor name, whether each track's pipeline ran it (from the lineage JSON)."""
    names = set(_VALUE_EXTRACTOR.values())
    if "lineage_md5" not in tracks:
        return {name: pd.Series(True, index=tracks.index) for name in names}
    ran: dict[str, set[str]] = {}
    for digest, lineage in con.execute("select md5(lineage), any_value(lineage) from tracks group by 1").fetchall():
        try:
            entries = json.loads(lineage).get("extractors") or []
        except (TypeError, ValueError, AttributeError):
            entries = None
        # An unreadable lineage says nothing: assume the extractor ran, so the
        # empty value stays "reason not recorded" rather than a guess.
        ran[digest] = names if entries is None else {str(e.get("name")) for e in entries if isinstance(e, Mapping)}
    return {name: tracks["lineage_md5"].map(lambda d, name=name: name in ran.get(d, names)).astype(bool)
            for name in names}


# --------------------------------------------------------------------------- SVG
def _parse_key_safe(label: Any):
    """:func:`mirflow.labels.parse_key`, with ``None`` for nulls and unparseable labels."""
    if not isinstance(label, str):
        return None
    try:
        return parse_key(label)
    except ValueError:
        return None


def _camelot_sort(code: str) -> tuple[int, str]:
    return int(code[:-1]), code[-1]


def _code_key(code: str):
    return parse_key(code)


def _key_colour(key) -> str:
    # One hue per wheel position (neighbours on the wheel get neighbouring hues);
    # minor (A, inner ring) lighter than major (B, outer ring).
    if key is None:
        return _GREY
    hue = (key.camelot_number - 1) * 30
    return f"hsl({hue},70%,{62 if key.mode == 'minor' else 40}%)"


def _camelot_svg(counts: Mapping[str, int], unknown: int, page: _Page) -> str:
    names = {k.camelot: k.mir_eval for k in all_keys()}
    size, c = 460, 230
    rings = {"B": (140, 205), "A": (78, 140)}
    peak = max(counts.values()) or 1
    parts = [f'<svg class="wheel" width="{size}" height="{size}" viewBox="0 0 {size} {size}" role="img" '
             'aria-label="Camelot wheel of key counts">']
    for number in range(1, 13):
        a0, a1 = math.radians(number * 30 - 15), math.radians(number * 30 + 15)
        for letter, (r0, r1) in rings.items():
            code = f"{number}{letter}"
            n = counts.get(code, 0)
            key = parse_key(code)
            fill = _key_colour(key) if n else "#f2f2f2"
            opacity = 0.25 + 0.75 * n / peak if n else 1.0
            d = (f"M{_pt(c, r1, a0)} A{r1},{r1} 0 0 1 {_pt(c, r1, a1)} L{_pt(c, r0, a1)} "
                 f"A{r0},{r0} 0 0 0 {_pt(c, r0, a0)} Z")
            tracks_word = "track" if n == 1 else "tracks"
            parts.append(f'<path class="sector" data-code="{code}" data-count="{n}" d="{d}" fill="{fill}" '
                         f'fill-opacity="{opacity:.2f}" stroke="#ffffff" stroke-width="1.5">'
                         f"<title>{code} = {_e(names[code])}: {_int(n)} {tracks_word}</title></path>")
            mid = (r0 + r1) / 2
            x, y = _xy(c, mid, (a0 + a1) / 2)
            weight = "bold" if n else "normal"
            parts.append(f'<text x="{x:.1f}" y="{y - 3:.1f}" text-anchor="middle" font-size="11" '
                         f'font-weight="{weight}" fill="#222">{code}</text>'
                         f'<text x="{x:.1f}" y="{y + 10:.1f}" text-anchor="middle" font-size="11" '
                         f'fill="#222">{_int(n)}</text>')
    parts.append(f'<text x="{c}" y="{c - 8}" text-anchor="middle" font-size="13">{_int(sum(counts.values()))} '
                 "with a key</text>"
                 f'<text x="{c}" y="{c + 10}" text-anchor="middle" font-size="12" fill="#666">{_int(unknown)} without'
                 "</text>"
                 f'<text x="{c}" y="{size - 4}" text-anchor="middle" font-size="11" fill="#444">outer ring: B = major · '
                 "inner ring: A = minor</text></svg>")
    page.n_svg += 1
    return "".join(parts)


def _xy(c: float, r: float, angle: float) -> tuple[float, float]:
    # Clockwise from 12 o'clock, as on the Camelot wheel.
    return c + r * math.sin(angle), c - r * math.cos(angle)


def _pt(c: float, r: float, angle: float) -> str:
    x, y = _xy(c, r, angle)
    return f"{x:.2f},{y:.2f}"


def _point_title(path: Any, key, tempo: float) -> str:
    parts = [_basename(path) if isinstance(path, str) else "(track not in tracks)"]
    parts.append(f"{key.mir_eval} ({key.camelot})" if key is not None else "no key")
    parts.append(f"{tempo:.1f} BPM" if np.isfinite(tempo) else "no tempo")
    text = " · ".join(parts)
    if isinstance(path, str):
        text += f"\n{path}"
    return text


def _tempo_colours(tempo: np.ndarray) -> tuple[list[str], tuple[float, float, list[str]] | None]:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    finite = tempo[np.isfinite(tempo)]
    if not len(finite):
        return [_GREY] * len(tempo), None
    lo, hi = float(finite.min()), float(finite.max())
    cmap = colormaps["viridis"]
    span = hi - lo if hi > lo else 1.0
    colours = [to_hex(cmap((b - lo) / span)) if np.isfinite(b) else _GREY for b in tempo]
    stops = [to_hex(cmap(i / 8)) for i in range(9)]
    return colours, (lo, hi, stops)


def _scatter_svg(page: _Page, xy: np.ndarray, colours: list[str], titles: list[str], *, xlabel: str, ylabel: str,
                 title: str, legend: list[tuple[str, str]] | None = None,
                 colourbar: tuple[float, float, list[str]] | None = None) -> str:
    from matplotlib.ticker import MaxNLocator

    width, height = 560, 440
    left, right, top, bottom = 58, 96, 30, 48
    pw, ph = width - left - right, height - top - bottom
    xs, ys = xy[:, 0], xy[:, 1]

    def limits(v):
        lo, hi = float(v.min()), float(v.max())
        pad = (hi - lo) * 0.05 or 1.0
        return lo - pad, hi + pad

    (x0, x1), (y0, y1) = limits(xs), limits(ys)

    def sx(v):
        return left + (v - x0) / (x1 - x0) * pw

    def sy(v):
        return top + ph - (v - y0) / (y1 - y0) * ph

    uid = f"s{page.n_svg}"
    page.n_svg += 1
    out = [f'<svg class="scatter" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{_e(title)}">',
           f'<text x="{left + pw / 2}" y="18" text-anchor="middle" font-size="13">{_e(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fbfbfb" stroke="#888"/>']
    for t in MaxNLocator(nbins=6).tick_values(x0, x1):
        if x0 <= t <= x1:
            out.append(f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#888"/>'
                       f'<text x="{sx(t):.1f}" y="{top + ph + 16}" text-anchor="middle" font-size="10">{t:g}</text>')
    for t in MaxNLocator(nbins=6).tick_values(y0, y1):
        if y0 <= t <= y1:
            out.append(f'<line x1="{left - 4}" x2="{left}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#888"/>'
                       f'<text x="{left - 6}" y="{sy(t) + 3:.1f}" text-anchor="end" font-size="10">{t:g}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 10}" text-anchor="middle" font-size="11">{_e(xlabel)}</text>'
               f'<text transform="translate(14,{top + ph / 2}) rotate(-90)" text-anchor="middle" font-size="11">'
               f"{_e(ylabel)}</text>")
    # Smaller points as the map fills up, so dense regions stay readable.
    radius = 5 if len(xy) <= 500 else 3.5 if len(xy) <= 2000 else 2.5
    for (px, py), colour, text in zip(xy, colours, titles, strict=True):
        out.append(f'<circle cx="{sx(px):.1f}" cy="{sy(py):.1f}" r="{radius:g}" fill="{colour}" stroke="#333" '
                   f'stroke-width="0.6"><title>{_e(text)}</title></circle>')
    lx = left + pw + 12
    if legend:
        shown = legend[:24]
        for i, (label, colour) in enumerate(shown):
            y = top + 8 + i * 15
            out.append(f'<circle cx="{lx + 5}" cy="{y}" r="5" fill="{colour}" stroke="#333" stroke-width="0.6"/>'
                       f'<text x="{lx + 14}" y="{y + 4}" font-size="10">{_e(label)}</text>')
        if len(legend) > len(shown):
            out.append(f'<text x="{lx}" y="{top + 8 + len(shown) * 15 + 4}" font-size="10">+{len(legend) - len(shown)} more</text>')
    if colourbar:
        lo, hi, stops = colourbar
        out.append(f'<defs><linearGradient id="{uid}-grad" x1="0" y1="1" x2="0" y2="0">'
                   + "".join(f'<stop offset="{i / (len(stops) - 1):.3f}" stop-color="{s}"/>' for i, s in enumerate(stops))
                   + "</linearGradient></defs>"
                   f'<rect x="{lx}" y="{top + 20}" width="14" height="{ph - 40}" fill="url(#{uid}-grad)" stroke="#888"/>'
                   f'<text x="{lx + 18}" y="{top + 24}" font-size="10">{hi:.0f}</text>'
                   f'<text x="{lx + 18}" y="{top + ph - 20}" font-size="10">{lo:.0f}</text>'
                   f'<text x="{lx}" y="{top + 12}" font-size="10">BPM</text>')
    out.append("</svg>")
    return "".join(out)


# --------------------------------------------------------------------------- matplotlib
def _axes(width: float, height: float):
    # The object-oriented API without pyplot: no global figure state and no
    # GUI backend, so the report can be built in any thread or server.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.subplots()


def _png(fig, alt: str) -> str:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _integer_y(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _mpl(text: Any) -> str:
    """Text for a matplotlib label: ``$`` would start mathtext (and can raise on a tag or file name)."""
    return str(text).replace("$", r"\$")


# --------------------------------------------------------------------------- HTML
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _int(value: Any) -> str:
    return f"{int(value):,d}"


def _num(value: Any, digits: int) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{v:.{digits}f}" if math.isfinite(v) else "–"


def _basename(path: Any) -> str:
    text = str(path)
    return text.rsplit("/", 1)[-1] or text


def _duration_text(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _swatch(colour: str) -> str:
    return f'<span class="swatch" style="background:{colour}"></span>'


def _no_data(text: str) -> str:
    return f'<p class="empty">No data: {text}</p>'


def _kv_table(table_id: str, rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table id="{table_id}" class="kv"><tbody>{body}</tbody></table>'


def _table(table_id: str, header: list[str], rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#222;background:#fff}
header{background:#243b55;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;font-size:13px;opacity:.85}
nav{padding:8px 32px;background:#eef2f6;font-size:13px;position:sticky;top:0}
nav a{margin-right:14px;color:#243b55;text-decoration:none}
main{padding:0 32px 40px;max-width:1320px;display:grid;grid-template-columns:repeat(2,minmax(0,1fr));column-gap:36px}
section.wide{grid-column:1/-1}
.flex{display:flex;flex-wrap:wrap;gap:8px 24px;align-items:flex-start}
.flex>div{flex:1 1 420px;min-width:0}
section{border-bottom:1px solid #e2e2e2;padding:8px 0 18px}
h2{font-size:18px;margin:16px 0 8px;color:#243b55}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #d8d8d8;padding:3px 8px;text-align:left;vertical-align:top}
thead th{background:#f3f5f8}
table.kv th{background:#f7f7f7;font-weight:normal;color:#444}
.file{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;white-space:nowrap}
.path{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;word-break:break-all}
figure{margin:10px 16px 10px 0;display:inline-block;vertical-align:top;max-width:100%}
figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555;max-width:600px;margin-top:4px}
.ok{color:#24602a;background:#eef8ee;padding:6px 10px;border-left:3px solid #4a8a4a}
.empty{color:#8a5a00;background:#fff8e6;padding:6px 10px;border-left:3px solid #e0a800}
.hint{font-size:12px;color:#666}
.swatch{display:inline-block;width:10px;height:10px;margin-right:6px;border:1px solid #555}
svg text{font-family:system-ui,"DejaVu Sans",sans-serif}
svg.scatter circle:hover{stroke:#000;stroke-width:2}
svg.wheel path.sector:hover{stroke:#000}
"""


def _html(root: Path, page: _Page) -> str:
    nav = "".join(f'<a href="#{anchor}">{_e(title)}</a>' for anchor, title, _, _ in page.sections)
    sections = "".join(f'<section id="{anchor}" class="{"half" if half else "wide"}"><h2>{_e(title)}</h2>{body}'
                       "</section>" for anchor, title, body, half in page.sections)
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><title>mirflow report: {_e(root.name)}</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{_CSS}</style></head><body>"
            f"<header><h1>mirflow report: {_e(root.name)}</h1>"
            f'<p>Catalog <span class="path">{_e(root)}</span> · generated {when} by mirflow {_e(__version__)} · '
            "one self-contained file, no network needed</p></header>"
            f"<nav>{nav}</nav><main>{sections}</main></body></html>\n")
