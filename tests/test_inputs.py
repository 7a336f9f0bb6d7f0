from __future__ import annotations

import pandas as pd
import pytest

from mirflow.errors import ConfigError
from mirflow.pipeline.inputs import expand_inputs


def test_expand_files_dirs_globs_manifests(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for rel in ("a/1.wav", "a/deep/2.FLAC", "a/notes.txt", "b.mp3", "a/x.ogg"):
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "a" / "album.mp3").mkdir()  # a directory named like audio is still listed
    got = expand_inputs([tmp_path / "a"])
    assert [p.split("/a/")[-1] for p in got] == ["album.mp3", "1.wav", "x.ogg", "deep/2.FLAC"]
    assert expand_inputs([str(tmp_path / "*.mp3")]) == [str(tmp_path / "b.mp3")]
    lst = tmp_path / "list.txt"
    lst.write_text("# comment\nb.mp3\n\na/1.wav\n")
    assert expand_inputs([lst]) == [str(tmp_path / "b.mp3"), str(tmp_path / "a/1.wav")]
    csv = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(tmp_path / "b.mp3")], "genre": ["x"]}).to_csv(csv, index=False)
    assert expand_inputs([csv, tmp_path / "b.mp3"]) == [str(tmp_path / "b.mp3")]  # de-duplicated
    assert len(expand_inputs([tmp_path / "a"], limit=2)) == 2


def test_missing_input_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        expand_inputs([tmp_path / "nope.wav"])
    with pytest.raises(ConfigError, match="matches nothing"):
        expand_inputs([str(tmp_path / "*.wav")])
    bad = tmp_path / "m.csv"
    pd.DataFrame({"file": ["x"]}).to_csv(bad, index=False)
    with pytest.raises(ConfigError, match="no 'path' column"):
        expand_inputs([bad])
