"""Configuration encoding shared by every model: config -> unit -> config round trips for every
parameter type, and the columnar encoder agreeing with the per-config one."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from autopipe.history.data import configs_to_frame, frame_to_configs
from autopipe.space import INACTIVE, Condition, Param, Space

PARAMS = [
    Param("lr", "float", low=1e-5, high=1e-1, log=True),
    Param("dropout", "float", low=0.0, high=0.5),
    Param("layers", "int", low=1, high=12),
    Param("width", "int", low=16, high=4096, log=True),
    Param("alpha", "float", values=(1e-8, 1e-6, 1e-4, 1e-2, 1.0), log=True),
    Param("batch", "int", values=(8, 16, 32, 64), log=True),
    Param("depth", "int", values=(1, 2, 3)),
    Param("algo", "categorical", choices=("sft", "dpo", "grpo")),
    Param("beta", "float", low=0.01, high=1.0, log=True, condition=Condition("algo", ("dpo",))),
    Param("shuffle", "categorical", choices=(True, False)),
]


def space() -> Space:
    return Space(list(PARAMS))


@pytest.mark.parametrize("p", [p for p in PARAMS if p.is_finite], ids=lambda p: p.name)
def test_grid_values_round_trip_exactly(p: Param) -> None:
    for v in p.grid():
        # every grid value, choice or integer maps to the unit interval and back to itself
        u = p.to_unit(v)
        assert 0.0 <= u <= 1.0
        assert p.from_unit(u) == v


@pytest.mark.parametrize(
    "p", [p for p in PARAMS if not p.is_categorical and p.values is None], ids=lambda p: p.name
)
def test_range_values_round_trip(p: Param) -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        v = p.sample(rng)
        back = p.from_unit(p.to_unit(v))
        if p.type == "int":
            assert back == v  # integers snap back exactly
        else:
            assert back == pytest.approx(v, rel=1e-9)


def test_log_scale_is_natural_scale() -> None:
    p = PARAMS[0]
    # the geometric midpoint of [1e-5, 1e-1] sits at the middle of the unit interval
    assert p.to_unit(1e-3) == pytest.approx(0.5)
    assert p.from_unit(0.25) == pytest.approx(1e-4)


def test_space_round_trip_with_conditionals() -> None:
    s = space()
    rng = np.random.default_rng(1)
    for cfg in s.sample_many(40, rng):
        back = s.from_unit(s.to_unit(cfg))
        assert set(back) == set(cfg)  # inactive conditional params stay absent
        for k, v in cfg.items():
            if isinstance(v, float):
                assert back[k] == pytest.approx(v, rel=1e-9)
            else:
                assert back[k] == v
        decoded = s.decode(s.encode([cfg]))[0]
        assert decoded.keys() == cfg.keys()


def test_conditional_parameter_encoded_inactive() -> None:
    s = space()
    cfg = {
        "lr": 1e-3,
        "dropout": 0.1,
        "layers": 2,
        "width": 64,
        "alpha": 1e-4,
        "batch": 16,
        "depth": 2,
        "algo": "sft",
        "shuffle": True,
    }
    x = s.encode([cfg])[0]
    names = s.feature_names()
    assert x[names.index("beta")] == INACTIVE  # DPO-only knob on an SFT config
    assert x[names.index("algo=sft")] == 1.0 and x[names.index("algo=dpo")] == 0.0
    x2 = s.encode([{**cfg, "algo": "dpo", "beta": 0.1}])[0]
    assert x2[names.index("beta")] == pytest.approx(0.5)  # geometric middle of [0.01, 1]


def test_encode_columns_matches_encode() -> None:
    s = space()
    configs = s.sample_many(300, np.random.default_rng(2))
    frame = configs_to_frame(s, configs)
    X_cols = s.encode_columns({n: frame[n].to_numpy() for n in s.names})
    np.testing.assert_array_equal(X_cols, s.encode(configs))
    # frame -> configs drops inactive (missing) values again
    assert frame_to_configs(s, frame) == [s.complete(c) for c in configs]


def test_encode_columns_rejects_unknown_choice() -> None:
    s = Space([Param("opt", "categorical", choices=("adam", "sgd"))])
    with pytest.raises(Exception, match="opt must be one of"):
        s.encode_columns({"opt": np.array(["adamw"], dtype=object)})


def test_missing_value_frame_is_nan_or_none() -> None:
    s = space()
    frame = configs_to_frame(s, [{"algo": "sft"}])
    assert math.isnan(frame["beta"].iloc[0]) and frame["shuffle"].iloc[0] is None
    assert isinstance(frame, pd.DataFrame)
