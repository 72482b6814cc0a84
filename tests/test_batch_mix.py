"""bench/batch_mix.py: the training stream's classes per batch, on shards written in path
order (one class per shard) and in vaegan-prep's shuffled order."""

from __future__ import annotations

import json

import data_prep.shards
from bench.batch_mix import main, mix
from data_prep.cli import main as prep_main
from tests.data_helpers import class_folders


def test_path_order_gives_batches_of_one_class_shuffled_order_mixes(tmp_path, monkeypatch,
                                                                      capsys):
    src = tmp_path / "src"
    class_folders(src, {c: 16 for c in "abcd"})
    args = ["--size", "16", "--classes", "--shard-size", "16", "--no-progress"]
    assert prep_main(["shard", str(src), str(tmp_path / "mixed"), *args]) == 0
    monkeypatch.setattr(data_prep.shards, "SHUFFLED_KINDS", ())  # as vaegan-prep once did
    assert prep_main(["shard", str(src), str(tmp_path / "path"), *args]) == 0
    monkeypatch.undo()
    m = json.loads((tmp_path / "path" / "manifest.json").read_text())
    del m["settings"]["order"]  # what an older vaegan-prep wrote
    (tmp_path / "path" / "manifest.json").write_text(json.dumps(m))

    path = mix(str(tmp_path / "path"), "train", 8, 4, 0)
    mixed = mix(str(tmp_path / "mixed"), "train", 8, 4, 0)
    assert path["order"].startswith("path") and mixed["order"] == "shuffled (seed 0)"
    assert path["batches"] == mixed["batches"] == 8
    assert abs(path["independent"] - 4 * (1 - 0.75 ** 8)) < 1e-9
    assert path["mean"] < 1.6 < 2.5 < mixed["mean"], (path, mixed)

    monkeypatch.setattr("bench.common.RESULTS", tmp_path / "results")
    assert main([str(tmp_path / "mixed"), "--batch", "8", "--buffer", "4"]) == 0
    assert "shuffled (seed 0)" in (tmp_path / "results" / "batch_mix.md").read_text()
    assert main([str(tmp_path / "nothing")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
