"""Bad flags of the history, prior, predictor and bench commands are one-line errors naming the
flag, raised before any work starts (an output path that cannot be written used to fail with a
traceback after the fit, and `history export` overwrote any folder, its own source included)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from autopipe.cli.app import build_parser
from autopipe.cli.paths import check_out_dir, check_out_file
from autopipe.errors import DataError
from tests.fixtures.histories import write_toy


def _parser() -> argparse.ArgumentParser:
    return build_parser()


def _run(*argv: str) -> int:
    args = _parser().parse_args(list(argv))
    return args.func(args)


def test_output_path_checks(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    # a file where a folder is expected, and a folder where a file is expected
    with pytest.raises(DataError, match=r"^--out .*afile is a file, expected a folder$"):
        check_out_dir(afile, "--out")
    with pytest.raises(DataError, match=r"^--csv .* is a folder, expected a file path$"):
        check_out_file(tmp_path, "--csv")
    # a path under a file names the file that is in the way
    with pytest.raises(DataError, match=r"^--out .*afile/x/y: .*afile is a file, expected a"):
        check_out_file(afile / "x" / "y", "--out")
    # a new path under a writable folder, an empty folder and no path at all pass
    check_out_file(tmp_path / "new" / "t.md", "--out")
    check_out_dir(tmp_path / "new" / "dir", "--out", empty=True)
    check_out_file(None, "--out")
    # a non-empty folder is refused when it must be empty, unless forced
    with pytest.raises(DataError, match=r"is not empty; expected a new or empty folder"):
        check_out_dir(tmp_path, "--out", empty=True)
    check_out_dir(tmp_path, "--out", empty=True, force=True)


def test_commands_check_flags_before_working(tmp_path: Path) -> None:
    table = write_toy(tmp_path / "t", with_curves=True)
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (["prior", "fit", "--history", str(table), "--out", str(afile)], r"^--out .* is a file"),
        (["prior", "fit", "--history", str(table), "--out", "p", "--seed", "-1"], r"^--seed must"),
        (
            ["prior", "evaluate", "--history", str(table), "--lodo", "--random-draws", "0"],
            r"^--random-draws must be >= 1, but got 0$",
        ),
        (
            ["prior", "evaluate", "--history", str(table), "--lodo", "--csv", str(afile / "x.csv")],
            r"^--csv .*afile is a file, expected a folder there$",
        ),
        (
            ["predictor", "fit", "--history", str(table), "--fraction", "0.5", "--out", str(afile)],
            r"^--out .* is a file",
        ),
        (
            ["predictor", "evaluate", "--history", str(table), "--out", str(tmp_path)],
            r"^--out .* is a folder, expected a file path$",
        ),
        (["predictor", "evaluate", "--history", str(table), "--seed", "-2"], r"^--seed must"),
        (["bench", "--data", str(table), "--out", str(afile)], r"^--out .* is a file"),
        (["bench", "--data", str(afile)], r"^--data .* is a file, expected a run table folder$"),
        (["history", "show", str(afile)], r"is a file, expected a run table folder$"),
        (["history", "generate", "--dry-run", "--n-train", "3"], r"^--n-train must be >= 8"),
        (
            ["history", "generate", "--dry-run", "--configs-per-task", "0"],
            r"^--configs-per-task must be >= 1",
        ),
        (["history", "generate", "--dry-run", "--seed", "-1"], r"^--seed must be >= 0"),
        (["history", "generate", "--dry-run", "--experiment", " "], r"^--experiment must name"),
        (["history", "generate", "--dry-run", "--prefix=-x"], r"^--prefix must match"),
        (
            ["prior", "evaluate", "--history", str(table), "--prior", str(tmp_path / "none")],
            r"^--prior .*none: no such folder; expected one written by `autopipe prior fit",
        ),
        (
            ["prior", "evaluate", "--history", str(table), "--prior", str(tmp_path)],
            r"^--prior .*: .*prior\.json: prior sidecar is missing$",
        ),
        (
            ["predictor", "fit", "--history", str(table), "--fraction", "0.5", "--out", "p"]
            + ["--prior", str(afile)],
            r"^--prior .*afile: no such folder",
        ),
    ]
    for argv, pattern in cases:
        with pytest.raises(DataError, match=pattern):
            _run(*argv)


def test_export_refuses_its_source_and_non_empty_folders(tmp_path: Path) -> None:
    table = write_toy(tmp_path / "t")
    (table / "README.md").write_text("hand-written\n")
    # exporting a run table onto itself would replace its hand-written README
    with pytest.raises(DataError, match=r"^--out .* is the --from run table; expected another"):
        _run("history", "export", "--from", str(table), "--out", str(table))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me\n")
    with pytest.raises(DataError, match=r"is not empty; expected a new or empty folder"):
        _run("history", "export", "--from", str(table), "--out", str(other))
    assert (other / "notes.txt").read_text() == "keep me\n"  # untouched
    # a new folder works, and --force replaces the run table files in a used one
    assert _run("history", "export", "--from", str(table), "--out", str(tmp_path / "new")) == 0
    assert _run("history", "export", "--from", str(table), "--out", str(other), "--force") == 0
    assert (other / "runs.parquet").is_file() and (other / "notes.txt").is_file()
    assert (table / "README.md").read_text() == "hand-written\n"
    shutil.rmtree(other)
