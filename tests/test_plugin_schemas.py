"""Plugins own their schemas: a schema search path, tracks fragments, and a plugin run end to end.

tests/example_plugin ships an extractor with its YAML next to it: one new
``tracks`` column (a fragment) and one new long table. It is run through a
real ``analyze`` on a LocalCluster, whose workers import it through
``MIRFLOW_PLUGINS``, and read back with DuckDB.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TESTS_DIR, tone_mix, write_audio

from mirflow.catalog import (
    SCHEMA_PATH_ENV,
    load_schemas,
    register_schema_dir,
    schema_dirs,
    table_schema,
)
from mirflow.catalog import schema as schema_module
from mirflow.errors import SchemaError
from mirflow.extractors import registry

PLUGIN = "example_plugin"
PLUGIN_DIR = TESTS_DIR / PLUGIN / "schemas"


@pytest.fixture(scope="module")
def plugin():
    """Import the example plugin as MIRFLOW_PLUGINS would; undo every registration afterwards.

    The registries are replaced by copies for the module's tests, so the
    rest of the suite sees mirflow's own schemas and extractors only.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "_registered", dict(registry._registered))
        mp.setattr(registry, "_plugins_loaded", False)
        mp.setattr(schema_module, "_registered_dirs", list(schema_module._registered_dirs))
        mp.setenv("MIRFLOW_PLUGINS", PLUGIN)
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))
        mp.delitem(sys.modules, PLUGIN, raising=False)
        cls = registry.get("example_frame_levels")  # imports the plugin module
        yield cls
        sys.modules.pop(PLUGIN, None)
    assert "example_frame_levels" not in load_schemas()


def test_plugin_schemas_join_the_search_path(plugin):
    assert PLUGIN_DIR.resolve() in schema_dirs()
    frames = table_schema("example_frame_levels")
    assert frames.names == ["track_id", "frame", "start_s", "rms_dbfs"]
    tracks = table_schema("tracks")
    assert tracks.names[-1] == "example_loudest_frame_s"
    assert tracks.column("example_loudest_frame_s").unit == "s"
    assert tracks.sources[-1].endswith("tracks.example_plugin.yaml")
    # The shipped columns are all still there, in order, before the plugin's.
    shipped = schema_module._load(schema_module.schemas_dir() / "tracks.yaml")
    assert tracks.names[: len(shipped.names)] == shipped.names


def test_example_plugin_keeps_the_extractor_contract(plugin):
    from mirflow.testing import check_extractor

    check_extractor(plugin())


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder


FRAGMENT = "table: tracks\ncolumns:\n  - {name: %s, type: float64, nullable: %s, description: x}\n"
TABLE = ("table: %s\nversion: 1\nprimary_key: [track_id]\ncolumns:\n"
         "  - {name: track_id, type: string, nullable: false, description: x}\n")


def test_clashes_name_both_files_and_undo_the_registration(tmp_path, monkeypatch):
    monkeypatch.setattr(schema_module, "_registered_dirs", list(schema_module._registered_dirs))
    before = schema_dirs()
    clash = _write(tmp_path / "a", "tracks.clash.yaml", FRAGMENT % ("tempo_bpm", "true"))
    with pytest.raises(SchemaError, match=r"tracks\.tempo_bpm is declared in both .*tracks\.yaml and .*tracks\.clash\.yaml"):
        register_schema_dir(clash)
    assert schema_dirs() == before and "tempo_bpm" in table_schema("tracks").names

    twice = _write(tmp_path / "b", "beats.yaml", TABLE % "beats")
    with pytest.raises(SchemaError, match=r"table 'beats' is declared in both .*schemas/beats\.yaml and .*b/beats\.yaml"):
        register_schema_dir(twice)

    two_plugins = _write(tmp_path / "c", "tracks.one.yaml", FRAGMENT % ("plugin_value", "true"))
    _write(tmp_path / "c", "tracks.two.yaml", FRAGMENT % ("plugin_value", "true"))
    with pytest.raises(SchemaError, match=r"declared in both .*tracks\.one\.yaml and .*tracks\.two\.yaml"):
        register_schema_dir(two_plugins)

    required = _write(tmp_path / "d", "tracks.req.yaml", FRAGMENT % ("plugin_value", "false"))
    with pytest.raises(SchemaError, match="must be nullable"):
        register_schema_dir(required)

    orphan = _write(tmp_path / "e", "nosuch.frag.yaml", FRAGMENT.replace("tracks", "nosuch") % ("v", "true"))
    with pytest.raises(SchemaError, match="no schema on the path declares"):
        register_schema_dir(orphan)

    with pytest.raises(SchemaError, match="does not exist"):
        register_schema_dir(tmp_path / "missing")
    assert schema_dirs() == before


def test_environment_variable_adds_folders(tmp_path, monkeypatch):
    one = _write(tmp_path / "one", "plugin_one.yaml", TABLE % "plugin_one")
    two = _write(tmp_path / "two", "tracks.two.yaml", FRAGMENT % ("plugin_two_value", "true"))
    assert "plugin_one" not in load_schemas()
    monkeypatch.setenv(SCHEMA_PATH_ENV, os.pathsep.join([str(one), "", str(two)]))
    assert "plugin_one" in load_schemas()
    assert "plugin_two_value" in table_schema("tracks").names
    monkeypatch.delenv(SCHEMA_PATH_ENV)  # the cache is keyed on the path: nothing to invalidate by hand
    assert "plugin_one" not in load_schemas()
    assert "plugin_two_value" not in table_schema("tracks").names


def test_a_reading_process_sees_plugin_schemas_through_mirflow_plugins():
    # A process that only reads a catalog (mirflow query, a notebook) imports
    # the plugins named in MIRFLOW_PLUGINS when it first needs the schemas.
    env = {**os.environ, "MIRFLOW_PLUGINS": PLUGIN,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))}
    code = ("from mirflow.catalog import table_schema; "
            "print(table_schema('example_frame_levels').names, table_schema('tracks').names[-1])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120)
    assert "'rms_dbfs']" in out.stdout and "example_loudest_frame_s" in out.stdout


PIPELINE = """
name: plugin_e2e
version: 1
runtime: {timeout_s: 120, retries: 1}
extractors:
  - metadata
  - name: example_frame_levels
    params: {frame_s: 0.5}
"""


@pytest.mark.slow
def test_plugin_through_analyze_on_a_local_cluster(plugin, tmp_path):
    from mirflow.frontend import Frontend
    from mirflow.pipeline.runner import ClusterOptions, analyze
    from mirflow.query import connect, read_table

    ramp = tone_mix(3.0, seed=1) * np.linspace(0.1, 1.0, 3 * 22050, dtype=np.float32)  # loudest at the end
    files = [write_audio(tmp_path / "in" / "ramp.wav", ramp),
             write_audio(tmp_path / "in" / "tone.wav", tone_mix(2.2, seed=2)),
             write_audio(tmp_path / "in" / "silent.wav", np.zeros(22050 * 2, dtype=np.float32))]
    pipeline = tmp_path / "plugin.yaml"
    pipeline.write_text(PIPELINE)
    catalog = tmp_path / "catalog"
    summary, _ = analyze(files, catalog, pipeline=str(pipeline),
                         cluster=ClusterOptions(workers=2, dashboard=False, worker_lifetime=None))
    assert summary.failed == 0 and summary.analyzed == 3, summary.failures

    con = connect(catalog)
    rows = con.execute("select path, example_loudest_frame_s, empty_reasons, duration_s from tracks").fetchall()
    frames = read_table(catalog, "example_frame_levels")
    paths = dict(con.execute("select path, track_id from tracks").fetchall())
    assert sorted(Path(p).name for p, *_ in rows) == ["ramp.wav", "silent.wav", "tone.wav"]
    ex = plugin(frame_s=0.5)
    for path, loudest, reasons, duration in rows:
        # What the workers wrote is what the extractor gives in this process.
        expected = ex.extract(Frontend.from_file(path))
        assert loudest == expected.columns["example_loudest_frame_s"]
        mine = frames[frames.track_id == paths[path]].sort_values("frame")
        assert mine.frame.tolist() == list(range(int(duration // 0.5)))
        assert mine.frame.tolist() == expected.tables["example_frame_levels"]["frame"]
        got = mine.rms_dbfs.astype(object).where(mine.rms_dbfs.notna(), None).tolist()
        want = expected.tables["example_frame_levels"]["rms_dbfs"]
        assert [g is None for g in got] == [w is None for w in want]
        np.testing.assert_allclose([g for g in got if g is not None], [w for w in want if w is not None], rtol=1e-6)
        if Path(path).name == "silent.wav":
            assert loudest is None and list(reasons) == ["example_frame_levels: silent"]
        else:
            assert loudest is not None and not reasons
    ramp_loudest = next(v for p, v, *_ in rows if p.endswith("ramp.wav"))
    assert ramp_loudest == 2.5  # the last whole frame of a rising ramp
    assert con.execute("select count(*) from example_frame_levels").fetchone()[0] == len(frames)
