"""Property-based: malformed run tables of many kinds (broken space.json, missing/corrupt/not
parquet files, wrong column types, unknown task ids, duplicate run ids, fractions outside (0, 1],
...) each give one :class:`DataError` line naming the file, never a traceback; through the CLI,
exit code 2 and one line on stderr. No pickle is ever read."""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from autopipe.errors import DataError
from autopipe.history import read_run_table

REPO = Path(__file__).resolve().parents[2]
SPACE: dict[str, Any] = {
    "format": "autopipe-run-table/1",
    "name": "toy",
    "objective": {"column": "loss", "metric": "val_loss", "mode": "min"},
    "cost": {"column": "secs", "unit": "seconds"},
    "params": [
        {"name": "lr", "type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        {"name": "depth", "type": "int", "values": [1, 2, 3]},
        {"name": "opt", "type": "categorical", "choices": ["adam", "sgd"]},
        {
            "name": "momentum",
            "type": "float",
            "low": 0.0,
            "high": 0.99,
            "condition": {"param": "opt", "values": ["sgd"]},
        },
    ],
}
FILES = ("space.json", "tasks.parquet", "runs.parquet", "curves.parquet")


def tables() -> dict[str, pd.DataFrame]:
    return {
        "tasks": pd.DataFrame({"task": ["a", "b"], "group": ["g1", "g2"], "meta_n": [1.0, 2.0]}),
        "runs": pd.DataFrame(
            {
                "run_id": ["r0", "r1", "r2", "r3"],
                "task": ["a", "a", "b", "b"],
                "seed": [0, 1, 0, 1],
                "lr": [1e-3, 1e-2, 1e-3, 1e-2],
                "depth": [1, 2, 3, 2],
                "opt": ["adam", "sgd", "sgd", "adam"],
                "momentum": [np.nan, 0.9, 0.5, np.nan],
                "loss": [0.5, 0.7, 0.2, 0.4],
                "secs": [10.0, 11.0, 3.0, 20.0],
                "status": ["ok", "ok", "failed", "ok"],
            }
        ),
        "curves": pd.DataFrame(
            {
                "run_id": ["r0", "r0", "r2"],
                "fraction": [0.5, 1.0, 0.25],
                "train_loss": [1.0, 0.6, 0.9],
            }
        ),
    }


def write(root: Path, space: Any = None, frames: dict[str, pd.DataFrame] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "space.json").write_text(json.dumps(SPACE if space is None else space))
    for name, df in (frames or tables()).items():
        df.to_parquet(root / f"{name}.parquet", index=False)
    (root / "README.md").write_text("toy\n")
    return root


class Boom:
    """Unpickling this writes a marker file: proof that a pickle was read."""

    marker = ""

    def __reduce__(self) -> Any:
        return (Path.write_text, (Path(self.marker), "unpickled"))


# ------------------------------------------------------------------------------ the mutations
Mutation = Callable[[Path], None]  # breaks a valid table folder in place
ident = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True),
    st.text(max_size=6),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(ident, st.integers(), max_size=2),
)


def _space(fn: Callable[[dict[str, Any]], Any]) -> Mutation:
    def m(root: Path) -> None:
        d = copy.deepcopy(SPACE)
        out = fn(d)
        (root / "space.json").write_text(json.dumps(d if out is None else out, allow_nan=True))

    return m


def _frame(name: str, fn: Callable[[pd.DataFrame], pd.DataFrame | None]) -> Mutation:
    def m(root: Path) -> None:
        df = tables()[name]
        out = fn(df)
        (df if out is None else out).to_parquet(root / f"{name}.parquet", index=False)

    return m


def _bytes(file: str, data: bytes) -> Mutation:
    def m(root: Path) -> None:
        (root / file).write_bytes(data)

    return m


def _param(i: int, key: str, value: Any) -> Mutation:
    def fn(d: dict[str, Any]) -> None:
        d["params"][i][key] = value

    return _space(fn)


@st.composite
def space_mutations(draw: st.DrawFn) -> Mutation:
    kind = draw(
        st.sampled_from(
            [
                "missing", "invalid_json", "non_utf8", "toplevel", "unknown_key", "format",
                "objective", "mode", "cost", "params", "param_entry", "param_type", "low_high",
                "values", "choices", "log", "condition", "dup_names", "constants",
                "objective_column", "cost_column", "directory",
            ]
        )
    )  # fmt: skip
    note(f"space.json: {kind}")
    good = json.dumps(SPACE)
    if kind == "missing":
        return lambda root: (root / "space.json").unlink()
    if kind == "directory":

        def as_dir(root: Path) -> None:
            (root / "space.json").unlink()
            (root / "space.json").mkdir()

        return as_dir
    if kind == "invalid_json":
        cut = draw(st.integers(0, len(good) - 1))
        return _bytes("space.json", good[:cut].encode() + draw(st.sampled_from([b"", b"{", b",]"])))
    if kind == "non_utf8":
        i = draw(st.integers(0, len(good)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\x80"]))
        return _bytes("space.json", good[:i].encode() + bad + good[i:].encode())
    if kind == "toplevel":
        v = draw(
            st.one_of(
                st.lists(st.integers(), max_size=3), st.integers(), st.text(max_size=5), st.none()
            )
        )
        return _space(lambda d: [v])
    if kind == "unknown_key":
        key = draw(ident.filter(lambda k: k not in SPACE and k != "constants"))
        return _space(lambda d: d.__setitem__(key, 1))
    if kind == "format":
        v = draw(junk.filter(lambda v: v != "autopipe-run-table/1"))
        return _space(lambda d: d.__setitem__("format", v))
    if kind == "objective":
        v = draw(st.one_of(junk, st.fixed_dictionaries({"column": junk})))
        return _space(lambda d: d.__setitem__("objective", v))
    if kind == "mode":
        v = draw(junk.filter(lambda v: v not in ("max", "min")))
        return _space(lambda d: d["objective"].__setitem__("mode", v))
    if kind == "cost":
        v = draw(
            st.one_of(
                junk,
                st.fixed_dictionaries({"column": junk.filter(lambda v: not isinstance(v, str))}),
            )
        )
        return _space(lambda d: d.__setitem__("cost", v))
    if kind == "params":
        v = draw(st.one_of(st.just([]), junk.filter(lambda v: not isinstance(v, list) or not v)))
        return _space(lambda d: d.__setitem__("params", v))
    if kind == "param_entry":
        v = draw(
            st.one_of(
                junk.filter(lambda v: not isinstance(v, dict)),
                st.just({"type": "float"}),
                st.just({"name": 3, "type": "int", "low": 1, "high": 2}),
                st.just({"name": "lr", "type": "float", "low": 0.1, "high": 0.2, "bogus": 1}),
            )
        )
        return _space(lambda d: d["params"].__setitem__(0, v))
    if kind == "param_type":
        v = draw(junk.filter(lambda v: v not in ("float", "int", "categorical")))
        return _param(0, "type", v)
    if kind == "low_high":
        i = draw(st.sampled_from([0, 3]))
        lo, hi = draw(
            st.sampled_from(
                [
                    (1.0, 0.5),
                    (0.5, 0.5),
                    ("a", 1.0),
                    (None, 1.0),
                    (0.0, [1]),
                    (float("nan"), 1.0),
                    (0.0, float("inf")),
                    (True, 2.0),
                ]
            )
        )

        def fn(d: dict[str, Any]) -> None:
            d["params"][i]["low"], d["params"][i]["high"] = lo, hi

        return _space(fn)
    if kind == "values":
        v = draw(st.sampled_from([[], 3, "abc", [1, "x"], [None], {"a": 1}, [3, 2, 1, 1]]))
        return _param(1, "values", v)
    if kind == "choices":
        v = draw(st.sampled_from([[], 3, None, {"a": 1}, [["x"]], ["adam", "adam"]]))
        return _param(2, "choices", v) if v is not None else _param(2, "choices", 0)
    if kind == "log":
        return _space(lambda d: d["params"][3].update({"log": True, "low": 0.0}))
    if kind == "condition":
        v = draw(
            st.sampled_from(
                [
                    3,
                    "opt",
                    {"param": "opt"},
                    {"param": "nope", "values": ["sgd"]},
                    {"param": "opt", "values": 5},
                    {"param": "momentum", "values": [1.0]},
                    {"param": ["opt"], "values": ["sgd"]},
                ]
            )
        )
        return _param(3, "condition", v)
    if kind == "dup_names":
        return _space(lambda d: d["params"].append(copy.deepcopy(d["params"][0])))
    if kind == "constants":
        v = draw(
            st.one_of(
                st.lists(st.integers(), min_size=1, max_size=3),
                st.text(min_size=1, max_size=4),
                st.integers(1, 9),
                st.just(True),
            )
        )
        return _space(lambda d: d.__setitem__("constants", v))
    if kind == "objective_column":  # names a column runs.parquet does not have
        col = draw(ident.filter(lambda c: c not in tables()["runs"].columns))
        return _space(lambda d: d["objective"].__setitem__("column", col))
    col = draw(ident.filter(lambda c: c not in tables()["runs"].columns))
    return _space(lambda d: d["cost"].__setitem__("column", col))


@st.composite
def parquet_mutations(draw: st.DrawFn) -> Mutation:
    name = draw(st.sampled_from(["tasks", "runs", "curves"]))
    file = f"{name}.parquet"
    kind = draw(
        st.sampled_from(
            ["missing", "truncated", "garbage", "pickle", "csv", "directory", "drop_column",
             "wrong_type", "nulls", "duplicate", "empty", "dup_column_names", "unknown_ref",
             "values"]
        )
    )  # fmt: skip
    note(f"{file}: {kind}")
    cols = list(tables()[name].columns)
    if kind == "missing":
        if name == "curves":  # curves are optional: a missing curves file is legal
            name, file = "runs", "runs.parquet"
        return lambda root: (root / file).unlink()
    if kind == "truncated":
        frac = draw(st.floats(0.0, 0.95))

        def trunc(root: Path) -> None:
            data = (root / file).read_bytes()
            (root / file).write_bytes(data[: int(len(data) * frac)])

        return trunc
    if kind == "garbage":
        return _bytes(file, draw(st.binary(min_size=0, max_size=64)))
    if kind == "pickle":

        def pickled(root: Path) -> None:
            Boom.marker = str(root / "UNPICKLED")
            (root / file).write_bytes(pickle.dumps([tables()[name], Boom()]))

        return pickled
    if kind == "csv":
        return lambda root: (root / file).write_text(tables()[name].to_csv(index=False))
    if kind == "directory":

        def as_dir(root: Path) -> None:
            (root / file).unlink()
            (root / file).mkdir()

        return as_dir
    if kind == "drop_column":
        required = {
            "tasks": ["task", "group"],
            "curves": ["run_id", "fraction"],
            "runs": [
                "run_id",
                "task",
                "seed",
                "lr",
                "depth",
                "opt",
                "momentum",
                "loss",
                "secs",
                "status",
            ],
        }
        col = draw(st.sampled_from(required[name]))
        return _frame(name, lambda df: df.drop(columns=[col]))
    if kind == "wrong_type":
        numeric = {
            "tasks": ["meta_n"],
            "curves": ["fraction", "train_loss"],
            "runs": ["seed", "lr", "depth", "loss", "secs"],
        }[name]
        col = draw(st.sampled_from(numeric))
        v = draw(st.sampled_from(["abc", "", "1,5", "nan?"]))

        def fn(df: pd.DataFrame) -> None:
            df[col] = df[col].astype(str)  # a text column where numbers belong
            df.loc[0, col] = v

        return _frame(name, fn)
    if kind == "nulls":
        col = "task" if name == "tasks" else "run_id"

        def fn(df: pd.DataFrame) -> None:
            df[col] = df[col].astype(object)
            df.loc[len(df) - 1, col] = None

        return _frame(name, fn)
    if kind == "duplicate":
        if name == "curves":  # duplicate curve rows are legal; duplicate runs are not
            name = "runs"
        col = "task" if name == "tasks" else "run_id"
        return _frame(name, lambda df: df.assign(**{col: [df[col].iloc[0]] * len(df)}))
    if kind == "empty":
        if name == "curves":
            name = "tasks"
        return _frame(name, lambda df: df.iloc[0:0])
    if kind == "dup_column_names":
        col = draw(st.sampled_from(cols))

        def dup(root: Path) -> None:
            t = pa.Table.from_pandas(tables()[name], preserve_index=False)
            t = t.append_column(col, t.column(col))
            pq.write_table(t, root / file)

        return dup
    if kind == "unknown_ref":
        if name == "tasks":
            name = "runs"
        ref = "task" if name == "runs" else "run_id"
        bad = draw(ident.filter(lambda s: s not in ("a", "b", "r0", "r1", "r2", "r3")))

        def fn(df: pd.DataFrame) -> None:
            df.loc[0, ref] = bad

        return _frame(name, fn)
    # bad values in valid columns
    if name == "curves":
        v = draw(st.sampled_from([0.0, -0.5, 1.5, float("nan"), float("inf"), -float("inf"), 2.0]))

        def fn(df: pd.DataFrame) -> None:
            df.loc[1, "fraction"] = v

        return _frame("curves", fn)
    if name == "tasks":
        return _frame("tasks", lambda df: df.assign(meta_n=[[1.0], [2.0]]))
    col, v = draw(st.sampled_from([
        ("lr", 10.0), ("lr", -1.0), ("lr", float("nan")), ("lr", float("inf")), ("depth", 7),
        ("depth", 1.5), ("opt", "rmsprop"), ("opt", None), ("seed", 0.5), ("seed", float("nan")),
        ("secs", -1.0), ("status", "weird"), ("status", None), ("momentum", 5.0),
    ]))  # fmt: skip

    def fn(df: pd.DataFrame) -> None:
        if isinstance(v, float):
            df[col] = df[col].astype(float)
        if v is None or isinstance(v, str):
            df[col] = df[col].astype(object)
        df.loc[1, col] = v  # row 1 has opt=sgd, so its momentum is active

    return _frame("runs", fn)


def _collide(root: Path) -> None:
    # A column named like the internal objective ("y") beside the objective column.
    runs = tables()["runs"]
    runs["y"] = 1.0
    runs.to_parquet(root / "runs.parquet", index=False)


mutations = st.one_of(space_mutations(), parquet_mutations(), st.just(_collide))


@pytest.fixture(scope="module")
def no_pickle() -> dict[str, list[str]]:
    """Records every global a pickle would load while the flag is on (audit event)."""
    seen: dict[str, Any] = {"on": False, "events": []}

    def hook(event: str, args: Any) -> None:
        if seen["on"] and event == "pickle.find_class":
            seen["events"].append(f"{args[0]}.{args[1]}")

    sys.addaudithook(hook)
    return seen


def read(root: Path, seen: dict[str, Any]) -> Any:
    seen["on"] = True
    try:
        return read_run_table(root)
    finally:
        seen["on"] = False


def test_the_valid_table_reads(tmp_path: Path, no_pickle: dict[str, Any]) -> None:
    root = write(tmp_path / "t")
    (root / "README.md").write_bytes(b"caf\xe9 \xff\n")  # README is documentation, never parsed
    h = read(root, no_pickle)
    assert len(h.runs) == 4 and h.curves is not None
    assert no_pickle["events"] == []


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mutation=mutations)
def test_malformed_tables_give_one_line_errors(
    mutation: Mutation, no_pickle: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = write(Path(d) / "t")
        mutation(root)
        with pytest.raises(DataError) as e:
            read(root, no_pickle)
        msg = str(e.value)
        assert "\n" not in msg and msg.strip() == msg and len(msg) < 1200
        assert any(f in msg for f in FILES), msg  # names the file at fault
        assert not (root / "UNPICKLED").exists()
    assert no_pickle["events"] == []  # no pickle is ever read, whatever the file holds


def test_errors_name_the_field(tmp_path: Path, no_pickle: dict[str, Any]) -> None:
    cases: list[tuple[Mutation, list[str]]] = [
        (_param(0, "type", "complex"), ["space.json", "lr", "complex"]),
        (
            _space(lambda d: d["objective"].__setitem__("mode", "maximize")),
            ["objective.mode", "maximize"],
        ),
        (
            _space(lambda d: d["objective"].__setitem__("column", "acc")),
            ["runs.parquet", "'acc'", "missing"],
        ),
        (_space(lambda d: d.__setitem__("constants", [1])), ["space.json", "constants"]),
        (_param(1, "values", 3), ["space.json", "depth", "values"]),
        (
            _frame("runs", lambda df: df.assign(run_id=["r0"] * 4)),
            ["runs.parquet", "run_id", "unique"],
        ),
        (
            _frame("runs", lambda df: df.assign(task=["a", "a", "zz", "b"])),
            ["runs.parquet", "task", "'zz'"],
        ),
        (
            _frame("curves", lambda df: df.assign(fraction=[0.5, 1.5, 0.2])),
            ["curves.parquet", "fraction", "(0, 1]"],
        ),
        (_bytes("runs.parquet", b"PAR1 not really"), ["runs.parquet", "parquet"]),
        (_collide, ["runs.parquet", "'y'"]),
    ]
    for i, (mutation, words) in enumerate(cases):
        root = write(tmp_path / f"t{i}")
        mutation(root)
        with pytest.raises(DataError) as e:
            read(root, no_pickle)
        for w in words:
            assert w in str(e.value), (i, str(e.value))


def test_cli_gives_exit_2_and_one_line(tmp_path: Path) -> None:
    cases: list[Mutation] = [
        lambda root: (root / "space.json").unlink(),
        _bytes("space.json", b'{"format": \xff}'),
        _space(lambda d: d["params"][0].__setitem__("low", 1.0)),  # low > high
        _param(2, "choices", []),
        _bytes("tasks.parquet", b"\x80\x04not a parquet"),
        _frame("runs", lambda df: df.drop(columns=["seed"])),
        _frame("runs", lambda df: df.assign(lr=["x", "y", "z", "w"])),
        _frame("runs", lambda df: df.assign(run_id=["r0", "r0", "r2", "r3"])),
        _frame("curves", lambda df: df.assign(fraction=[0.0, 1.0, 0.2])),
        _space(lambda d: d.__setitem__("format", "autopipe-run-table/2")),
    ]
    for i, mutation in enumerate(cases):
        root = write(tmp_path / f"t{i}")
        mutation(root)
        r = subprocess.run(
            [sys.executable, "-m", "autopipe", "history", "show", str(root)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        err = r.stderr.strip()
        assert r.returncode == 2, (i, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and len(err.splitlines()) == 1, (i, r.stderr)
        assert err.startswith("autopipe: error: ") and str(root) in err, (i, err)
