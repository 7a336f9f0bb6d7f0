"""`mirflow report`: one self-contained HTML file, checked as text and as rendered by headless Chromium."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import io
import json
import re
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mirflow.catalog.layout import Catalog, path_key
from mirflow.catalog.schema import conform
from mirflow.cli import report_cmd
from mirflow.errors import ConfigError
from mirflow.query import connect, read_table
from mirflow.query.report import build_report, camelot_counts, extractor_seconds

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                    "(apt-get install -y chromium); the rendering checks need a browser")
#: A file name that would run script, break an attribute and start an entity if it were not escaped;
#: the onerror handler logs to the console, which the Chromium check would see.
HOSTILE_NAME = "a<img src=x onerror=console.error('INJECTED')>&amp;\"q\"'<b>.wav"


# --------------------------------------------------------------------------- helpers
class _Tables(HTMLParser):
    """Cell texts of every <table id=...>, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table = dict(attrs).get("id")
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tables_of(text: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(text)
    return parser.tables


def figures_of(text: str) -> dict[str, str]:
    found = re.findall(r'<figure class="plot" data-figure="([^"]+)">(.*?)</figure>', text, flags=re.S)
    return {html.unescape(name): body for name, body in found}


def expected_figures(catalog: Path) -> set[str]:
    """The plots the catalog has data for, derived from its tables (not from the report code)."""
    tracks = read_table(catalog, "tracks")
    names = set()
    for column, figs in (("tempo_bpm", ["tempo"]), ("key", ["camelot", "mode"]),
                         ("loudness_integrated_lufs", ["loudness"]), ("duration_s", ["duration"]),
                         ("analysis_seconds", ["timing"])):
        if tracks[column].notna().any():
            names.update(figs)
    if len(read_table(catalog, "chords")):
        names.add("chords")
    con = connect(catalog)
    names.update(f"tags-{m}" for (m,) in con.execute("select distinct model from tags").fetchall())
    # read_table cannot concatenate embedding partitions of different sizes: count them in SQL.
    counts = con.execute("select model, count(*) from embeddings group by model").fetchall()
    names.update(f"embedding-{m}-{c}" for m, n in counts if n >= 3 for c in ("key", "tempo"))
    return names


def check_self_contained(text: str) -> None:
    assert "http://" not in text and "https://" not in text
    assert not re.search(r'(src|href)\s*=\s*["\']?//', text)
    assert not re.search(r"<(script|link|iframe|object|embed)\b", text, flags=re.I)
    assert "url(" not in text.replace('url(#', "")  # only in-document gradient references


def check_figures(text: str, expected: set[str]) -> dict[str, str]:
    figures = figures_of(text)
    assert set(figures) == expected
    n_svg = n_img = 0
    for name, body in figures.items():
        svgs, imgs = body.count("<svg"), body.count("<img")
        assert svgs + imgs == 1, f"figure {name} holds {svgs} svg and {imgs} img"
        n_svg += svgs
        n_img += imgs
        for data in re.findall(r'src="data:image/png;base64,([^"]+)"', body):
            image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
            image.verify()  # a truncated or corrupt PNG raises here
            assert image.format == "PNG" and image.size[0] >= 300 and image.size[1] >= 150
    # No plot outside a figure, none left out of one.
    assert text.count("<svg") == n_svg and text.count("<img") == n_img
    return figures


def render(page: Path, tmp: Path) -> tuple[np.ndarray, str]:
    """Screenshot ``page`` in headless Chromium; return the pixels and the console log lines."""
    shot = tmp / f"{page.stem}.png"
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp / 'chromium-profile'}",  # never another process's profile lock
         f"--screenshot={shot}", "--window-size=1400,4000", "--enable-logging=stderr", "--v=0",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines()
               if ":CONSOLE" in line or "Uncaught" in line or "Failed to load resource" in line]
    return np.asarray(Image.open(shot).convert("RGB")), "\n".join(console)


def check_not_blank(pixels: np.ndarray) -> None:
    non_white = (pixels < 245).any(axis=2)
    assert non_white.mean() > 0.08, f"only {non_white.mean():.1%} of the page is drawn"
    colours = np.unique(pixels[::2, ::2].reshape(-1, 3), axis=0)
    assert len(colours) > 500, f"only {len(colours)} distinct colours: plots did not render"
    # Drawn all the way down, not just a header above an empty page.
    assert non_white[3000:].mean() > 0.02


# --------------------------------------------------------------------------- units
def test_camelot_counts_follow_the_wheel():
    # 8A = A minor and 8B = C major define the wheel; each step adds a fifth.
    counts, unknown = camelot_counts(["A minor", "A:minor", "8A", "C major", "G major", "E minor",
                                      None, "X", "not a key"])
    assert unknown == 3
    assert counts["8A"] == 3 and counts["8B"] == 1
    assert counts["9B"] == 1 and counts["9A"] == 1  # G major and its relative minor, one fifth up
    assert sum(counts.values()) == 6 and len(counts) == 24


def test_camelot_counts_match_the_catalog_column(downstream_catalog):
    catalog, _ = downstream_catalog
    tracks = read_table(catalog, "tracks")
    counts, unknown = camelot_counts(tracks["key"])
    stored = Counter(tracks["key_camelot"].dropna())
    assert {c: n for c, n in counts.items() if n} == dict(stored)
    assert unknown == tracks["key"].isna().sum()


def test_extractor_seconds_forms():
    lineage = {"extractors": [{"name": "rhythm", "seconds": 2.5},
                              {"name": "embeddings", "params": {"model": "musicnn"}, "elapsed_s": 1.0},
                              {"name": "embeddings", "params": {"model": "descriptor"}, "elapsed_s": 0.25},
                              {"name": "key"}]}
    assert extractor_seconds(json.dumps(lineage)) == {"rhythm": 2.5, "embeddings (musicnn)": 1.0,
                                                      "embeddings (descriptor)": 0.25}
    assert extractor_seconds({"extractor_seconds": {"key": 3, "bad": "x"}}) == {"key": 3.0}
    assert extractor_seconds("not json") == {} and extractor_seconds({"extractors": [{"name": "key"}]}) == {}


# --------------------------------------------------------------------------- the fixture catalog
@pytest.mark.slow
def test_report_of_the_analyzed_catalog(downstream_catalog, tmp_path):
    catalog, _ = downstream_catalog
    report = build_report(catalog)
    assert report.path == Catalog(catalog).root / "report.html"
    text = report.path.read_text(encoding="utf-8")
    check_self_contained(text)
    figures = check_figures(text, expected_figures(catalog))
    assert set(report.figures) == set(figures)

    tracks = read_table(catalog, "tracks")
    overview = dict((row[0], row[1]) for row in tables_of(text)["overview-table"])
    assert overview["tracks (unique contents analyzed)"] == str(len(tracks))
    assert overview["files (input paths seen)"] == str(len(read_table(catalog, "files")))
    assert overview["audio hours"].startswith(f"{tracks['duration_s'].sum() / 3600:.2f} h")
    # The wheel shows every track with a key in its Camelot sector, zeros included.
    sectors = {code: int(n) for code, n in re.findall(r'data-code="(\w+)" data-count="(\d+)"', text)}
    assert len(sectors) == 24
    assert {c: n for c, n in sectors.items() if n} == dict(Counter(tracks["key_camelot"].dropna()))
    # Hover shows the file: one <title> per point naming its file, per map.
    for model, n in connect(catalog).execute("select model, count(*) from embeddings group by model").fetchall():
        svg = figures[f"embedding-{model}-key"]
        titles = re.findall(r"<circle [^>]*><title>([^<]*)</title>", svg)
        assert len(titles) == n
        assert {t.split(" · ")[0] for t in titles} == {Path(p).name for p in tracks["path"]}
    # Half/double hints agree with the stored tempi.
    relations = {row[0]: int(row[1]) for row in tables_of(text)["tempo-relations"][1:]}
    ratio = tracks["tempo_alt_bpm"] / tracks["tempo_bpm"]
    assert relations.get("≈ 2×", 0) == int(((ratio - 2).abs() <= 0.08).sum())
    assert relations.get("≈ ½×", 0) == int(((ratio - 0.5).abs() <= 0.02).sum())
    assert relations.get("≈ 3/2×", 0) == int(((ratio - 1.5).abs() <= 0.06).sum())
    assert sum(relations.values()) == tracks["tempo_bpm"].notna().sum()
    # Empty values: one row per value, counts as integers.
    empty = {row[0]: row for row in tables_of(text)["empty-values"][1:]}
    assert set(empty) == {"tempo_bpm", "key", "chords", "beats"}
    assert empty["tempo_bpm"][2] == str(tracks["tempo_bpm"].isna().sum())
    assert "Per-extractor timing is not recorded" in text  # the default pipeline's lineage has no seconds

    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed: rendering not checked")
    pixels, console = render(report.path, tmp_path)
    assert console == "", console
    check_not_blank(pixels)


@pytest.mark.slow
def test_report_with_errors_silence_and_a_hostile_file_name(downstream_catalog, tmp_path):
    source, _ = downstream_catalog
    catalog = tmp_path / "catalog"
    shutil.copytree(source, catalog)
    cat = Catalog(catalog)
    now = dt.datetime.now(dt.timezone.utc)
    failures = [("/music/broken.mp3", "decode", "DecodeError", "no audio frames"),
                ("/music/also broken.mp3", "decode", "DecodeError", "truncated <frame> & more"),
                ("/music/odd.flac", "extract:key", "ExtractionError", "ValueError: boom")]
    for path, stage, error_type, message in failures:
        cat.write_part("errors", path_key(path), conform("errors", {
            "path": [path], "path_bytes": [None], "track_id": [None], "stage": [stage],
            "error_type": [error_type], "message": [message], "pipeline": ["default"],
            "pipeline_version": ["test"], "occurred_at": [now]}))
    # Two tracks become silent, with no tempo, key, chords or beats: one (with the hostile name) as rows
    # written before tracks.empty_reasons existed (null), one that records its reasons.
    silent_reasons = ["rhythm: silent", "key: silent", "chords: silent"]
    victims = read_table(catalog, "tracks")["track_id"].iloc[:2].tolist()
    for victim, name, reasons in zip(victims, [HOSTILE_NAME, "quiet.wav"], [None, silent_reasons], strict=True):
        row = pq.read_table(cat.part_path("tracks", victim)).to_pylist()[0]
        row.update(path=f"/music/{name}", is_silent=True, tempo_bpm=None, tempo_confidence=None,
                   tempo_alt_bpm=None, tempo_alt_confidence=None, key=None, key_mode=None, key_camelot=None,
                   loudness_integrated_lufs=None, empty_reasons=reasons)
        cat.write_part("tracks", victim, conform("tracks", {k: [v] for k, v in row.items()}))
        assert cat.remove_part("chords", victim) and cat.remove_part("beats", victim)

    report = build_report(catalog, out=tmp_path / "out" / "hostile.html")
    text = report.path.read_text(encoding="utf-8")
    check_self_contained(text)
    check_figures(text, expected_figures(catalog))
    assert HOSTILE_NAME not in text and "<img src=x" not in text and "<b>" not in text
    assert html.escape(HOSTILE_NAME, quote=True) in text  # shown, escaped, on hover in the embedding maps
    assert "truncated &lt;frame&gt; &amp; more" in text

    errors = tables_of(text)["errors-by-stage"][1:]
    shown = Counter({(r[0], r[1]): int(r[2]) for r in errors})
    assert shown == Counter((stage, etype) for _, stage, etype, _ in failures)
    overview = dict((r[0], r[1]) for r in tables_of(text)["overview-table"])
    assert overview["errors (inputs that could not be analyzed)"] == str(len(failures))
    empty = {row[0]: row for row in tables_of(text)["empty-values"][1:]}
    for value, extractor in (("tempo_bpm", "rhythm"), ("key", "key"), ("chords", "chords"), ("beats", "rhythm")):
        assert empty[value][2] == "2"
        assert set(empty[value][4].split("\n")) == {f"{extractor}: silent (1)", "silent (is_silent) (1)"}
    recorded = {row[0]: row[1] for row in tables_of(text)["empty-reasons"][1:]}
    assert recorded == dict.fromkeys(silent_reasons, "1")
    sectors = {code: int(n) for code, n in re.findall(r'data-code="(\w+)" data-count="(\d+)"', text)}
    assert sum(sectors.values()) == read_table(catalog, "tracks")["key"].notna().sum()

    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed: rendering not checked")
    pixels, console = render(report.path, tmp_path)
    assert "INJECTED" not in console
    assert console == "", console
    check_not_blank(pixels)


def test_report_of_an_empty_catalog_says_so(tmp_path):
    cat = Catalog(tmp_path / "empty")
    cat.open_for("default")
    report = build_report(cat.root, out=tmp_path / "empty.html")
    text = report.path.read_text(encoding="utf-8")
    check_self_contained(text)
    check_figures(text, set())
    assert report.figures == []
    # Every section is there, and each one without data says so.
    for anchor in ("overview", "errors", "tempo", "key", "loudness", "duration", "chords", "tags",
                   "embeddings", "timing", "empty"):
        assert f'<section id="{anchor}"' in text
    assert set(report.empty_sections) == {"overview", "tempo", "key", "loudness", "duration", "chords", "tags",
                                          "embeddings", "timing", "empty"}
    assert text.count('class="empty">No data:') == len(report.empty_sections) - 1  # overview words it itself


def test_cli_report(downstream_catalog, tmp_path, capsys):
    catalog, _ = downstream_catalog
    parser = argparse.ArgumentParser(prog="mirflow")
    report_cmd.register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "r.html"
    args = parser.parse_args(["report", str(catalog), "--out", str(out), "--top", "5", "--max-points", "10"])
    assert args.func(args) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert "the top 5 cover" in text
    n_tracks = len(read_table(catalog, "tracks"))
    assert f"A random sample of 10 of {n_tracks} tracks" in text
    for name, body in figures_of(text).items():
        if name.startswith("embedding-"):
            assert len(re.findall(r"<circle [^>]*><title>", body)) == 10
    for bad in (["--max-points", "2"], ["--top", "0"], ["--out", str(tmp_path)]):
        args = parser.parse_args(["report", str(catalog), *bad])
        with pytest.raises(ConfigError):
            args.func(args)
