"""Search spaces: the one place that converts configurations between raw values, the unit cube
and model features.

Notation: a configuration ``config`` is a flat ``dict[str, value]`` keyed by parameter name
(dotted names such as ``sft.lr`` are just names here). ``u`` is a point in the unit cube, shape
``(d,)`` with one coordinate per parameter (categoricals use the index of their choice scaled to
[0, 1]); ``X`` is ``(n, p)`` model features (numeric parameters on their natural scale in [0, 1],
categoricals one-hot, a conditional parameter that is inactive encoded as -1 / all zeros).

This module does not sample from priors, fit models or know about Ray.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autopipe.errors import SpaceError

INACTIVE = -1.0  # feature value of a numeric parameter that does not apply to a configuration

PARAM_TYPES = ("float", "int", "categorical")


@dataclass(frozen=True)
class Condition:
    """A parameter is active only when ``param`` takes one of ``values``."""

    param: str
    values: tuple[Any, ...]

    def holds(self, config: Mapping[str, Any]) -> bool:
        return config.get(self.param) in self.values


@dataclass(frozen=True)
class Param:
    """One hyperparameter.

    A numeric parameter (``float``/``int``) has either a finite ``values`` grid in increasing order
    or a ``low``/``high`` range; ``log`` says whether its natural scale is logarithmic. A
    ``categorical`` has ``choices``. ``fixed`` parameters have one value and are not searched.
    """

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    values: tuple[float, ...] | None = None
    choices: tuple[Any, ...] | None = None
    log: bool = False
    condition: Condition | None = None

    def __post_init__(self) -> None:
        n = self.name
        if self.type not in PARAM_TYPES:
            raise SpaceError(f"{n}.type must be one of {list(PARAM_TYPES)}, but got {self.type!r}")
        if self.type == "categorical":
            if not self.choices:
                raise SpaceError(f"{n}.choices must be a non-empty list, but got {self.choices!r}")
            if len(set(map(repr, self.choices))) != len(self.choices):
                raise SpaceError(f"{n}.choices must be distinct, but got {list(self.choices)}")
            return
        if self.values is not None:
            if len(self.values) == 0:
                raise SpaceError(f"{n}.values must be a non-empty list, but got []")
            vals = [float(v) for v in self.values]
            if any(not math.isfinite(v) for v in vals):
                raise SpaceError(f"{n}.values must be finite numbers, but got {list(self.values)}")
            if any(b <= a for a, b in itertools.pairwise(vals)):
                raise SpaceError(
                    f"{n}.values must be strictly increasing, but got {list(self.values)}"
                )
            if self.log and vals[0] <= 0:
                raise SpaceError(f"{n}.values must be > 0 on a log scale, but got {vals[0]}")
            if self.type == "int" and any(v != int(v) for v in vals):
                raise SpaceError(f"{n}.values must be integers, but got {list(self.values)}")
            return
        if self.low is None or self.high is None:
            raise SpaceError(f"{n} needs either values or low and high, but got neither")
        lo, hi = float(self.low), float(self.high)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise SpaceError(f"{n}.low/high must be finite, but got {lo}, {hi}")
        if self.log and lo <= 0:
            raise SpaceError(f"{n}.low must be > 0 on a log scale, but got {self.low}")
        if hi < lo:
            raise SpaceError(f"{n}.high must be >= low ({self.low}), but got {self.high}")
        if self.type == "int" and math.floor(hi) < math.ceil(lo):
            raise SpaceError(f"{n} must contain an integer, but got [{self.low}, {self.high}]")

    # ----------------------------------------------------------------- properties
    @property
    def is_categorical(self) -> bool:
        return self.type == "categorical"

    @property
    def is_finite(self) -> bool:
        if self.is_categorical or self.values is not None:
            return True
        if self.type == "int":
            return True
        return self.low == self.high

    @property
    def n_features(self) -> int:
        return len(self.choices) if self.is_categorical else 1

    def grid(self) -> list[Any]:
        """All values of a finite parameter, in order."""
        if self.is_categorical:
            return list(self.choices)  # type: ignore[arg-type]
        if self.values is not None:
            return [self._cast(v) for v in self.values]
        if self.type == "int":
            return list(range(math.ceil(self.low), math.floor(self.high) + 1))  # type: ignore[arg-type]
        if self.low == self.high:
            return [float(self.low)]  # type: ignore[arg-type]
        raise SpaceError(f"{self.name} is a continuous range and has no grid")

    def n_values(self) -> float:
        return float(len(self.grid())) if self.is_finite else math.inf

    def _cast(self, v: float) -> Any:
        return int(round(v)) if self.type == "int" else float(v)

    # ----------------------------------------------------------------- raw <-> unit
    def _scale(self, v: float) -> float:
        return math.log(v) if self.log else float(v)

    def _unscale(self, s: float) -> float:
        return math.exp(s) if self.log else s

    def _bounds(self) -> tuple[float, float]:
        if self.values is not None:
            return float(self.values[0]), float(self.values[-1])
        return float(self.low), float(self.high)  # type: ignore[arg-type]

    def to_unit(self, value: Any) -> float:
        """Raw value -> [0, 1] on the natural scale (categoricals: index / (k - 1))."""
        if self.is_categorical:
            try:
                idx = list(self.choices).index(value)  # type: ignore[arg-type]
            except ValueError:
                raise SpaceError(
                    f"{self.name} must be one of {list(self.choices)}, but got {value!r}"
                ) from None
            k = len(self.choices)  # type: ignore[arg-type]
            return idx / (k - 1) if k > 1 else 0.5
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise SpaceError(f"{self.name} must be a number, but got {value!r}") from None
        if not math.isfinite(v):
            raise SpaceError(f"{self.name} must be finite, but got {value!r}")
        lo, hi = self._bounds()
        if self.log and v <= 0:
            raise SpaceError(f"{self.name} must be > 0 on a log scale, but got {value!r}")
        slo, shi = self._scale(lo), self._scale(hi)
        if shi == slo:
            return 0.5
        return float(np.clip((self._scale(v) - slo) / (shi - slo), 0.0, 1.0))

    def from_unit(self, u: float) -> Any:
        """[0, 1] -> raw value; snaps to the grid / choices / integers."""
        u = float(np.clip(u, 0.0, 1.0))
        if self.is_categorical:
            k = len(self.choices)  # type: ignore[arg-type]
            return self.choices[int(round(u * (k - 1)))] if k > 1 else self.choices[0]  # type: ignore[index]
        lo, hi = self._bounds()
        slo, shi = self._scale(lo), self._scale(hi)
        v = self._unscale(slo + u * (shi - slo))
        if self.values is not None:
            grid_s = np.array([self._scale(float(x)) for x in self.values])
            return self._cast(self.values[int(np.argmin(np.abs(grid_s - self._scale(v))))])
        if self.type == "int":
            return int(min(max(round(v), math.ceil(lo)), math.floor(hi)))
        return float(min(max(v, lo), hi))

    def sample(self, rng: np.random.Generator) -> Any:
        """Uniform on the natural scale (uniform over the grid for finite grids)."""
        if self.is_categorical or self.values is not None:
            g = self.grid()
            return g[int(rng.integers(len(g)))]
        if self.type == "int" and not self.log:
            return int(rng.integers(math.ceil(self.low), math.floor(self.high) + 1))  # type: ignore[arg-type]
        return self.from_unit(float(rng.random()))

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.is_categorical:
            d["choices"] = list(self.choices)  # type: ignore[arg-type]
        elif self.values is not None:
            d["values"] = [self._cast(v) for v in self.values]
            d["log"] = self.log
        else:
            d["low"], d["high"], d["log"] = self._cast(self.low), self._cast(self.high), self.log  # type: ignore[arg-type]
        if self.condition is not None:
            d["condition"] = {"param": self.condition.param, "values": list(self.condition.values)}
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "params") -> Param:
        if not isinstance(d, Mapping):
            raise SpaceError(f"{where} entries must be objects, but got {d!r}")
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise SpaceError(f"{where}[].name must be a non-empty string, but got {name!r}")
        allowed = {"name", "type", "low", "high", "values", "choices", "log", "condition"}
        unknown = set(d) - allowed
        if unknown:
            raise SpaceError(
                f"{where}.{name} has unknown keys {sorted(unknown)}; valid keys: {sorted(allowed)}"
            )
        cond = d.get("condition")
        condition = None
        if cond is not None:
            if not isinstance(cond, Mapping) or "param" not in cond or "values" not in cond:
                raise SpaceError(
                    f"{where}.{name}.condition must be {{param, values}}, but got {cond!r}"
                )
            condition = Condition(str(cond["param"]), tuple(cond["values"]))
        values = d.get("values")
        choices = d.get("choices")
        return cls(
            name=name,
            type=str(d.get("type")),
            low=d.get("low"),
            high=d.get("high"),
            values=tuple(values) if values is not None else None,
            choices=tuple(choices) if choices is not None else None,
            log=bool(d.get("log", False)),
            condition=condition,
        )


@dataclass
class Space:
    """An ordered set of parameters, plus constants passed through unchanged to every trial."""

    params: list[Param]
    constants: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise SpaceError(f"space has duplicate parameter names {sorted(dup)}")
        by_name = {p.name: p for p in self.params}
        for p in self.params:
            if p.condition is not None:
                parent = by_name.get(p.condition.param)
                if parent is None:
                    raise SpaceError(
                        f"{p.name}.condition.param must name a parameter of the space, "
                        f"but got {p.condition.param!r}"
                    )
        self._by_name = by_name

    # ----------------------------------------------------------------- basics
    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def __getitem__(self, name: str) -> Param:
        return self._by_name[name]

    def __len__(self) -> int:
        return len(self.params)

    @property
    def n_features(self) -> int:
        return sum(p.n_features for p in self.params)

    def feature_names(self) -> list[str]:
        out: list[str] = []
        for p in self.params:
            if p.is_categorical:
                out += [f"{p.name}={c}" for c in p.choices]  # type: ignore[union-attr]
            else:
                out.append(p.name)
        return out

    def is_active(self, p: Param, config: Mapping[str, Any]) -> bool:
        return p.condition is None or p.condition.holds(config)

    @property
    def is_finite(self) -> bool:
        return all(p.is_finite for p in self.params)

    def grid_size(self) -> float:
        """Number of distinct configurations (inactive parameters collapse); inf if continuous."""
        if not self.is_finite:
            return math.inf
        if not any(p.condition for p in self.params):
            return float(np.prod([p.n_values() for p in self.params]))
        return float(sum(1 for _ in self.iter_grid()))

    def iter_grid(self) -> Iterator[dict[str, Any]]:
        """Every configuration of a finite space (conditional parameters only where active)."""
        if not self.is_finite:
            raise SpaceError("the space has a continuous parameter and has no grid")
        free = [p for p in self.params if p.condition is None]
        cond = [p for p in self.params if p.condition is not None]
        for combo in itertools.product(*(p.grid() for p in free)):
            base = dict(zip((p.name for p in free), combo, strict=True))
            active = [p for p in cond if p.condition.holds(base)]  # type: ignore[union-attr]
            for sub in itertools.product(*(p.grid() for p in active)):
                cfg = dict(base)
                cfg.update(zip((p.name for p in active), sub, strict=True))
                yield self.complete(cfg)

    def complete(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Order keys as the space does and drop inactive parameters."""
        out = {p.name: config[p.name] for p in self.params if p.name in config}
        for p in self.params:
            if p.name in out and not self.is_active(p, out):
                del out[p.name]
        return out

    def validate(self, config: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
        """Check a configuration has every active parameter with a legal value; return it ordered."""
        out: dict[str, Any] = {}
        for p in self.params:
            if p.condition is not None and not p.condition.holds({**config, **out}):
                continue
            if p.name not in config:
                raise SpaceError(f"{where}.{p.name} is missing")
            v = config[p.name]
            if p.is_categorical:
                if v not in p.choices:  # type: ignore[operator]
                    raise SpaceError(
                        f"{where}.{p.name} must be one of {list(p.choices)}, but got {v!r}"
                    )
                out[p.name] = v
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise SpaceError(f"{where}.{p.name} must be a number, but got {v!r}")
            if not math.isfinite(float(v)):
                raise SpaceError(f"{where}.{p.name} must be finite, but got {v!r}")
            lo, hi = p._bounds()
            if not (lo - 1e-12 * abs(lo) <= float(v) <= hi + 1e-12 * abs(hi)):
                raise SpaceError(f"{where}.{p.name} must be in [{lo}, {hi}], but got {v!r}")
            out[p.name] = p._cast(v)
        return out

    # ----------------------------------------------------------------- sampling
    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        cfg: dict[str, Any] = {}
        for p in self.params:
            cfg[p.name] = p.sample(rng)
        return self.complete(cfg)

    def sample_many(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [self.sample(rng) for _ in range(n)]

    # ----------------------------------------------------------------- transforms
    def to_unit(self, config: Mapping[str, Any]) -> np.ndarray:
        """Configuration -> ``u`` of shape ``(d,)``; inactive parameters map to 0.5."""
        u = np.full(len(self.params), 0.5)
        for i, p in enumerate(self.params):
            if p.name in config and self.is_active(p, config):
                u[i] = p.to_unit(config[p.name])
        return u

    def from_unit(self, u: Sequence[float] | np.ndarray) -> dict[str, Any]:
        """``u`` of shape ``(d,)`` -> configuration (snapped to grids; inactive dropped)."""
        u = np.asarray(u, dtype=float)
        if u.shape != (len(self.params),):
            raise SpaceError(
                f"unit vector must have shape ({len(self.params)},), but got {u.shape}"
            )
        return self.complete({p.name: p.from_unit(u[i]) for i, p in enumerate(self.params)})

    def encode(self, configs: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """Configurations -> features ``X`` of shape ``(n, n_features)``.

        Numeric: unit-cube value on the natural scale, ``INACTIVE`` when the condition fails or
        the value is missing. Categorical: one-hot, all zeros when inactive.
        """
        rows = []
        for cfg in configs:
            row: list[float] = []
            for p in self.params:
                active = p.name in cfg and self.is_active(p, cfg) and _present(cfg[p.name])
                if p.is_categorical:
                    oh = [0.0] * len(p.choices)  # type: ignore[arg-type]
                    if active:
                        oh[list(p.choices).index(cfg[p.name])] = 1.0  # type: ignore[arg-type]
                    row += oh
                else:
                    row.append(p.to_unit(cfg[p.name]) if active else INACTIVE)
            rows.append(row)
        return np.asarray(rows, dtype=float).reshape(len(rows), self.n_features)

    def encode_columns(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> np.ndarray:
        """Columnar :meth:`encode`: ``columns[name]`` holds one value per configuration (``None``
        or NaN where the parameter is missing); same features, vectorized for large tables."""
        n = {
            len(np.asarray(columns[p.name], dtype=object)) for p in self.params if p.name in columns
        }
        if len(n) > 1:
            raise SpaceError(f"columns must have one length, but got lengths {sorted(n)}")
        n_rows = n.pop() if n else 0
        cols = {
            p.name: np.asarray(columns[p.name], dtype=object)
            if p.name in columns
            else np.full(n_rows, None, dtype=object)
            for p in self.params
        }
        present = {
            name: np.fromiter((_present(v) for v in c), bool, n_rows) for name, c in cols.items()
        }
        X = np.empty((n_rows, self.n_features))
        j = 0
        for p in self.params:
            active = present[p.name].copy()
            if p.condition is not None:
                values = p.condition.values
                parent = cols[p.condition.param]
                active &= np.fromiter((v in values for v in parent), bool, n_rows)
            if p.is_categorical:
                k = len(p.choices)  # type: ignore[arg-type]
                index = {c: i for i, c in enumerate(p.choices)}  # type: ignore[arg-type]
                block = np.zeros((n_rows, k))
                rows = np.flatnonzero(active)
                idx = np.empty(rows.size, dtype=np.int64)
                for r_i, r in enumerate(rows):
                    v = cols[p.name][r]
                    if v not in index:
                        raise SpaceError(
                            f"{p.name} must be one of {list(p.choices)}, but got {v!r}"
                        )
                    idx[r_i] = index[v]
                block[rows, idx] = 1.0
                X[:, j : j + k] = block
                j += k
                continue
            col = np.full(n_rows, INACTIVE)
            raw = cols[p.name][active]
            try:
                v = raw.astype(float)
            except (TypeError, ValueError):
                bad = next(x for x in raw if not isinstance(x, (int, float, np.number)))
                raise SpaceError(f"{p.name} must be a number, but got {bad!r}") from None
            if not np.all(np.isfinite(v)):
                raise SpaceError(f"{p.name} must be finite, but got {v[~np.isfinite(v)][0]!r}")
            if p.log and np.any(v <= 0):
                raise SpaceError(f"{p.name} must be > 0 on a log scale, but got {v[v <= 0][0]!r}")
            lo, hi = p._bounds()
            slo, shi = p._scale(lo), p._scale(hi)
            if shi == slo:
                col[active] = 0.5
            else:
                s = np.log(v) if p.log else v
                col[active] = np.clip((s - slo) / (shi - slo), 0.0, 1.0)
            X[:, j] = col
            j += 1
        return X

    def decode(self, X: np.ndarray) -> list[dict[str, Any]]:
        """Features -> configurations (inverse of :meth:`encode` up to grid snapping)."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        out = []
        for row in X:
            cfg: dict[str, Any] = {}
            j = 0
            for p in self.params:
                if p.is_categorical:
                    k = len(p.choices)  # type: ignore[arg-type]
                    block = row[j : j + k]
                    if block.max() > 0:
                        cfg[p.name] = p.choices[int(np.argmax(block))]  # type: ignore[index]
                    j += k
                else:
                    if row[j] != INACTIVE:
                        cfg[p.name] = p.from_unit(row[j])
                    j += 1
            out.append(self.complete(cfg))
        return out

    def config_key(self, config: Mapping[str, Any]) -> tuple:
        """A hashable identity of a configuration (floats rounded to 10 significant digits)."""
        c = self.complete(config)
        return tuple(
            (k, float(f"{v:.10g}") if isinstance(v, float) else v) for k, v in sorted(c.items())
        )

    # ----------------------------------------------------------------- json
    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"params": [p.to_json() for p in self.params]}
        if self.constants:
            d["constants"] = dict(self.constants)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "space") -> Space:
        params = d.get("params")
        if not isinstance(params, list) or not params:
            raise SpaceError(f"{where}.params must be a non-empty list, but got {params!r}")
        return cls(
            [Param.from_json(p, f"{where}.params") for p in params],
            dict(d.get("constants") or {}),
        )


def _present(v: Any) -> bool:
    if v is None:
        return False
    try:
        return not (isinstance(v, float) and math.isnan(v))
    except TypeError:
        return True
