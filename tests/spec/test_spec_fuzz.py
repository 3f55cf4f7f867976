"""Property-based: malformed job specs of many kinds all give one line and exit code 2, never a
traceback, and never start Ray."""

from __future__ import annotations

import copy
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autopipe.cli import main

GOOD = {
    "name": "fuzz",
    "dataset": {"task": "sort", "n_train": 100},
    "space": {"sft": {"lr": {"low": 1e-4, "high": 1e-3}, "steps": 20}, "rl": {"steps": 5}},
    "budget": {"max_trials": 3, "max_concurrent": 1, "early_stop_fraction": 0.5},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
    "search": {"algorithm": "random"},
}
SECTIONS = ["dataset", "budget", "resources", "search", "model", "eval", "tracking", "stopping"]
NUMERIC = [
    ("budget", "max_trials"),
    ("budget", "max_concurrent"),
    ("budget", "early_stop_fraction"),
    ("resources", "workers_per_trial"),
    ("resources", "cpus_per_worker"),
    ("dataset", "n_train"),
]
OUT_OF_RANGE = [
    ("budget", "max_trials", [0, -1, -(10**9)]),
    ("budget", "early_stop_fraction", [0.0, 1.5, -0.1]),
    ("budget", "max_concurrent", [0, -3]),
    ("resources", "workers_per_trial", [0, -2]),
    ("dataset", "n_train", [0, 7, -5]),
    ("budget", "cost_cap_s", [0, -1.0]),
    ("resources", "deepspeed", [4, -1, 7]),
]
ident = st.text(string.ascii_lowercase + "_", min_size=3, max_size=12)
bad_value = st.one_of(
    st.text(min_size=1, max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(ident, st.integers(), max_size=2),
    st.booleans(),
)


@st.composite
def malformed(draw) -> bytes:
    kind = draw(
        st.sampled_from(
            [
                "unknown_key",
                "wrong_type",
                "range",
                "missing",
                "toplevel",
                "bytes",
                "alias",
                "big",
                "space_entry",
            ]
        )
    )
    spec = copy.deepcopy(GOOD)
    if kind == "unknown_key":
        sec = draw(st.sampled_from(SECTIONS + [None]))
        key = draw(
            ident.filter(
                lambda k: (
                    k
                    not in {
                        "name",
                        "dataset",
                        "space",
                        "budget",
                        "resources",
                        "search",
                        "tracking",
                        "history",
                        "eval",
                        "model",
                        "stopping",
                        "storage",
                        "seed",
                        "task",
                        "path",
                    }
                )
            )
        )
        (spec if sec is None else spec.setdefault(sec, {}))[key] = draw(st.integers())
    elif kind == "wrong_type":
        sec, key = draw(st.sampled_from(NUMERIC))
        v = draw(
            bad_value.filter(lambda v: not (isinstance(v, bool) is False and isinstance(v, int)))
        )
        spec[sec][key] = v
    elif kind == "range":
        sec, key, vals = draw(st.sampled_from(OUT_OF_RANGE))
        spec.setdefault(sec, {})[key] = draw(st.sampled_from(vals))
    elif kind == "missing":
        del spec[draw(st.sampled_from(["name", "dataset"]))]
    elif kind == "toplevel":
        return yaml.safe_dump(
            draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.text(max_size=5)))
        ).encode()
    elif kind == "bytes":
        good = yaml.safe_dump(spec).encode()
        i = draw(st.integers(0, len(good)))
        return (
            good[:i]
            + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\x80abc"]))
            + good[i:]
        )
    elif kind == "alias":
        n = draw(st.integers(2, 9))
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [{', '.join(['*a' + str(i - 1)] * 9)}]" for i in range(1, n)]
        return ("\n".join(lines) + "\nname: bomb\ndataset: {task: sort}\n").encode()
    elif kind == "big":
        return yaml.safe_dump(spec).encode() + b"#" * (1_000_001 + draw(st.integers(0, 1000)))
    else:  # a space entry that is no number, range, grid or choice
        spec["space"]["sft"]["lr"] = draw(
            st.one_of(
                st.dictionaries(
                    ident.filter(lambda k: k not in ("low", "high", "log", "values", "choices")),
                    st.integers(),
                    min_size=1,
                    max_size=2,
                ),
                st.just({"low": -1.0, "high": 1e-3}),
                st.just({"values": []}),
                st.just({"low": 1e-3, "high": 1e-5}),
                st.lists(st.integers(), min_size=1, max_size=2),
            )
        )
    return yaml.safe_dump(spec).encode()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=malformed())
def test_malformed_specs(tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes) -> None:
    p = tmp_path / "fuzz.yaml"
    p.write_bytes(data)
    for cmd in ("validate", "tune"):
        code = main([cmd, str(p)])
        err = capsys.readouterr().err.strip()
        assert code == 2, (cmd, data[:200], err)
        assert err.startswith("autopipe: error: ") and "\n" not in err, err
        assert "Traceback" not in err
    import ray

    assert not ray.is_initialized()  # nothing was started
