"""An archive streamed to a CSV (boneage predict ... --output CSV): rows in input order, a killed run resumed
without redoing or losing rows, a manifest with per-file sexes, and torchrun ranks sharing the files."""

import csv
import json
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from boneage.api.archive import COLUMNS, read_manifest
from boneage.cli import main
from boneage.data import hand_phantom
from boneage.errors import InvalidInputError


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    for k in range(7):
        Image.fromarray(hand_phantom(30 + 25 * k, "M", 64, np.random.default_rng(k))).save(root / f"img{k}.png")
    (root / "img9.png").write_bytes(b"not a png")  # sorted last: one image that cannot be read
    return root


def _rows(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def _predict(*argv):
    return main(["predict", *map(str, argv)])


def test_a_folder_is_streamed_in_order_with_the_bone_ages_predict_prints(folder, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out.csv"
    assert _predict(folder, "--sex", "F", "--model", tiny_model_dir, "--no-hand-check", "--output", out,
                    "--batch-size", "3") == 2  # one image could not be read
    captured = capsys.readouterr()
    assert "7 assessed, 1 rejected, 0 already there" in captured.out and "error column" in captured.err
    rows = _rows(out)
    assert tuple(rows[0]) == COLUMNS and [r["file"] for r in rows] == [str(p) for p in sorted(folder.iterdir())]
    assert [r["status"] for r in rows] == ["ok"] * 7 + ["rejected"] and "img9.png" in rows[-1]["error"]
    assert _predict(*sorted(folder.glob("img[0-6].png")), "--sex", "F", "--model", tiny_model_dir, "--no-hand-check",
                    "--json") == 0
    printed = [item["bone_age_months"] for item in json.loads(capsys.readouterr().out)]
    np.testing.assert_allclose([float(r["bone_age_months"]) for r in rows[:7]], printed, atol=0.006)
    assert all(r["sex"] == "F" and r["sex_source"] == "argument" for r in rows[:7])


def test_an_interrupted_run_resumes_without_redoing_or_losing_rows(folder, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out.csv"
    common = [folder, "--sex", "M", "--model", tiny_model_dir, "--no-hand-check", "--output", out]
    _predict(*common)
    full = out.read_text()
    lines = full.splitlines(keepends=True)
    marked = lines[1].rstrip("\n").split(",")
    marked[5] = "111.11"  # a row of the first run, changed: a resumed run must keep it, not redo it
    out.write_text(lines[0] + ",".join(marked) + "\n" + lines[2] + lines[3][: len(lines[3]) // 2])  # torn 3rd row
    capsys.readouterr()
    assert _predict(*common) == 2  # an existing output is refused without --resume ...
    assert "--resume continues it" in capsys.readouterr().err and out.read_text().endswith(lines[3][: len(lines[3]) // 2])
    _predict(*common, "--resume")
    assert "5 assessed, 1 rejected, 2 already there" in capsys.readouterr().out
    rows = _rows(out)
    assert len(rows) == 8 and len({r["file"] for r in rows}) == 8
    assert rows[0]["bone_age_months"] == "111.11"  # kept, not recomputed
    assert sorted(out.read_text().splitlines()[2:]) == sorted(full.splitlines()[2:])  # every other row as a full run


def test_a_manifest_gives_each_file_its_sex(folder, tiny_model_dir, tmp_path, capsys):
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,sex\narchive/img0.png,F\narchive/img1.png,M\n" + f"{folder / 'img2.png'},F\n")
    assert read_manifest(manifest)[1] == (str(tmp_path / "archive" / "img1.png"), "M")
    out = tmp_path / "out.csv"
    assert _predict("--manifest", manifest, "--model", tiny_model_dir, "--no-hand-check", "--output", out) == 0
    assert [r["sex"] for r in _rows(out)] == ["F", "M", "F"]
    (tmp_path / "bad.csv").write_text("name,sex\nx.png,F\n")
    with pytest.raises(InvalidInputError, match="'path'"):
        read_manifest(tmp_path / "bad.csv")
    assert _predict("--manifest", manifest, "--model", tiny_model_dir) == 2  # a manifest needs --output
    assert "--manifest goes with --output" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_ranks_share_the_files_and_rank_0_merges_them(folder, tiny_model_dir, tmp_path):
    out = tmp_path / "out.csv"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "-m", "boneage", "predict", str(folder), "--sex", "F", "--model",
               str(tiny_model_dir), "--no-hand-check", "--output", str(out), "--threads", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "error column" in result.stderr  # img9 cannot be read (on one rank)
    rows = _rows(out)
    assert [r["file"] for r in rows] == [str(p) for p in sorted(folder.iterdir())]  # merged in the input order
    assert not list(tmp_path.glob("out.csv.rank*"))  # the parts are gone
    single = tmp_path / "single.csv"
    _predict(folder, "--sex", "F", "--model", tiny_model_dir, "--no-hand-check", "--output", single)
    assert [r["bone_age_months"] for r in _rows(single)] == [r["bone_age_months"] for r in rows]
