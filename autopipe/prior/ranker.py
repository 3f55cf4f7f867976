"""The dataset-conditioned ranking prior: an ensemble of XGBoost pairwise rankers (``rank:pairwise``,
one query group per task, so pairs are only formed within a dataset) over the configuration
encoding of :mod:`autopipe.space` plus filtered dataset meta-features. Scores are z-normalized
within the scored set. Saved as XGBoost UBJSON model files plus a JSON sidecar; never pickled.

Notation: ``X_cfg`` is ``(n, space.n_features)`` configuration features, ``m`` the ``(n_meta,)``
kept meta-features of one task, ``y_max`` the direction-aware objective (larger is better).
This module fits and scores; evaluation lives in :mod:`autopipe.prior.evaluate`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from autopipe.errors import DataError
from autopipe.history.data import META_PREFIX, History, configs_to_frame
from autopipe.history.metafeatures import FeatureFilter, select_meta_features
from autopipe.history.saved import read_sidecar, save_boosters
from autopipe.space import Space

FORMAT = "autopipe-prior/1"
SIDECAR = "prior.json"
COST_MODEL = "cost.ubj"


@dataclass
class RankerConfig:
    """Hyperparameters of the prior; the defaults are the ones benchmarked in
    ``benchmarks/PRIOR.md`` (hpobench and hpolib LODO)."""

    max_configs_per_task: int = 600  # NOTE: as in the AutoPipe paper; sampled evenly over y
    n_models: int = 3  # ensemble members, one seed each
    n_label_bins: int = 32  # integer relevance labels: within-task quantile bins of y
    use_meta: bool = True
    n_estimators: int = 300
    max_depth: int = 6
    learning_rate: float = 0.05
    subsample: float = 0.8
    # NOTE: 1.0 because column subsampling often drops the one informative meta-feature
    # (tests/prior synthetic table: held-out Spearman 0.76 at 0.8, 0.88 at 1.0).
    colsample_bytree: float = 1.0
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    pair_method: str = "mean"  # lambdarank_pair_method: pairs sampled across the whole list
    pairs_per_sample: int = 8
    n_jobs: int = 2
    seed: int = 0
    filter_min_variance: float = 1e-3
    filter_max_abs_corr: float = 0.95
    filter_max_missing: float = 0.5
    # A cost model beside the ranker (:meth:`RankingPrior.log_cost_features`): each
    # configuration's log cost relative to its task's mean log cost, for cost-aware search
    # (``search.options.cost_weight``). Fitted when the history has positive finite costs.
    fit_cost: bool = True
    cost_estimators: int = 200

    def ranker_params(self, seed: int) -> dict[str, Any]:
        """Keyword arguments of ``xgboost.XGBRanker`` (the same booster as :meth:`xgb_params`)."""
        p = self.xgb_params(seed)
        return {
            "objective": p["objective"],
            "eval_metric": p["eval_metric"],
            "tree_method": p["tree_method"],
            "n_estimators": self.n_estimators,
            "max_depth": p["max_depth"],
            "learning_rate": p["eta"],
            "subsample": p["subsample"],
            "colsample_bytree": p["colsample_bytree"],
            "min_child_weight": p["min_child_weight"],
            "reg_lambda": p["lambda"],
            "lambdarank_pair_method": p["lambdarank_pair_method"],
            "lambdarank_num_pair_per_sample": p["lambdarank_num_pair_per_sample"],
            "n_jobs": p["nthread"],
            "random_state": seed,
            "verbosity": 0,
            "missing": np.nan,
        }

    def xgb_params(self, seed: int) -> dict[str, Any]:
        return {
            "objective": "rank:pairwise",
            "eval_metric": "ndcg@10",
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "lambda": self.reg_lambda,
            "lambdarank_pair_method": self.pair_method,
            "lambdarank_num_pair_per_sample": self.pairs_per_sample,
            "nthread": self.n_jobs,
            "seed": seed,
            "verbosity": 0,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RankerConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def even_subsample(y_max: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``k`` rows sampled evenly over the ranking of ``y_max``: sort, cut into
    ``k`` equal strata and draw one row per stratum (all rows when there are at most ``k``)."""
    n = len(y_max)
    if n <= k:
        return np.arange(n)
    order = np.argsort(y_max, kind="stable")
    edges = np.linspace(0, n, k + 1)
    lo = np.floor(edges[:-1]).astype(np.int64)
    hi = np.maximum(np.floor(edges[1:]).astype(np.int64), lo + 1)
    pick = lo + np.floor(rng.random(k) * (hi - lo)).astype(np.int64)
    return np.sort(order[np.minimum(pick, n - 1)])


def relevance_labels(y_max: np.ndarray, n_bins: int) -> np.ndarray:
    """Integer relevance in ``0..n_bins-1``: the within-task percentile of ``y_max`` (ties share
    a label), binned."""
    n = len(y_max)
    if n < 2:
        return np.zeros(n)
    pct = (rankdata(y_max, method="average") - 1) / (n - 1)
    return np.minimum(np.floor(pct * n_bins), n_bins - 1)


def zscore(s: np.ndarray) -> np.ndarray:
    sd = float(s.std())
    return (s - s.mean()) / sd if sd > 0 else np.zeros_like(s, dtype=float)


@dataclass
class RankingPrior:
    """A fitted prior. ``score(meta, configs)`` -> z-scores, larger is better."""

    space: Space
    meta_filter: FeatureFilter
    boosters: list[Any]
    config: RankerConfig = field(default_factory=RankerConfig)
    objective: str = "objective"
    mode: str = "max"
    training: dict[str, Any] = field(default_factory=dict)
    # XGBoost booster of the relative log cost (see :meth:`log_cost_features`), or None
    cost_model: Any = None

    # ----------------------------------------------------------------- fit
    @classmethod
    def fit(
        cls,
        history: History,
        config: RankerConfig | None = None,
        tasks: Sequence[str] | None = None,
    ) -> RankingPrior:
        """Fit on ``tasks`` of ``history`` (default: all). Configurations whose runs all failed
        (NaN ``y``) are left out; tasks with fewer than 2 usable configurations are skipped."""
        import xgboost as xgb

        config = config or RankerConfig()
        tasks = list(tasks) if tasks is not None else history.task_ids
        if config.use_meta and history.meta_columns:
            meta_table = history.tasks.set_index("task").loc[tasks, history.meta_columns]
            meta_table.columns = [c[len(META_PREFIX) :] for c in meta_table.columns]
            meta_filter = select_meta_features(
                meta_table,
                min_variance=config.filter_min_variance,
                max_abs_corr=config.filter_max_abs_corr,
                max_missing=config.filter_max_missing,
            )
        else:
            meta_filter = FeatureFilter([], {})
        per_task = []
        for t in tasks:
            ct = history.config_table(t)
            ct = ct.loc[np.isfinite(ct["y_max"].to_numpy(dtype=float))]
            if len(ct) < 2:
                continue
            X = history.encode(ct)
            m = meta_filter.apply(history.meta_features(t))
            per_task.append(
                (t, X, m, ct["y_max"].to_numpy(dtype=float), ct["cost"].to_numpy(dtype=float))
            )
        if not per_task:
            raise DataError(
                f"{history.where}: no task has 2 or more configurations with a finite objective to rank"
            )

        boosters = []
        n_rows = 0
        cost_model, cost_rows = _fit_cost_model(per_task, config) if config.fit_cost else (None, 0)
        for k in range(config.n_models):
            seed = config.seed + k
            rng = np.random.default_rng([config.seed, k])
            Xs, labels, qid = [], [], []
            for q, (_, X, m, y, _) in enumerate(per_task):
                idx = even_subsample(y, config.max_configs_per_task, rng)
                Xs.append(_join(X[idx], m))
                labels.append(relevance_labels(y[idx], config.n_label_bins))
                qid.append(np.full(len(idx), q, dtype=np.int64))
            X_train = np.vstack(Xs)
            n_rows = len(X_train)
            # XGBRanker (pairs only within a query group = a task); the fitted booster is kept.
            ranker = xgb.XGBRanker(**config.ranker_params(seed))
            ranker.fit(X_train, np.concatenate(labels), qid=np.concatenate(qid))
            boosters.append(ranker.get_booster())
        return cls(
            space=history.space,
            meta_filter=meta_filter,
            boosters=boosters,
            config=config,
            objective=history.objective,
            mode=history.mode,
            training={
                "history": history.where,
                "tasks": [t for t, *_ in per_task],
                "rows_per_model": n_rows,
                "cost_rows": cost_rows,
            },
            cost_model=cost_model,
        )

    # ----------------------------------------------------------------- score
    @property
    def feature_names(self) -> list[str]:
        return self.space.feature_names() + [META_PREFIX + k for k in self.meta_filter.kept]

    def score(
        self, meta: Mapping[str, float] | None, configs: pd.DataFrame | Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        """Z-scores ``(n,)`` of ``configs`` (a frame with one column per parameter, or dicts) on
        a task with meta-features ``meta`` (names without prefix; missing ones are NaN)."""
        frame = (
            configs if isinstance(configs, pd.DataFrame) else configs_to_frame(self.space, configs)
        )
        missing = [n for n in self.space.names if n not in frame.columns]
        if missing:
            raise DataError(f"configs miss parameter columns {missing}")
        X = self.space.encode_columns({n: frame[n].to_numpy() for n in self.space.names})
        return self.score_features(meta, X)

    def score_features(self, meta: Mapping[str, float] | None, X_cfg: np.ndarray) -> np.ndarray:
        """Z-scores of already-encoded configurations ``X_cfg``."""
        import xgboost as xgb

        if X_cfg.shape[1] != self.space.n_features:
            raise DataError(
                f"X_cfg must have {self.space.n_features} columns, but got {X_cfg.shape[1]}"
            )
        if len(X_cfg) == 0:
            return np.zeros(0)
        d = xgb.DMatrix(_join(X_cfg, self.meta_filter.apply(meta or {})), missing=np.nan)
        s = np.mean([zscore(b.predict(d).astype(float)) for b in self.boosters], axis=0)
        return zscore(s)

    def log_cost_features(
        self, meta: Mapping[str, float] | None, X_cfg: np.ndarray
    ) -> np.ndarray | None:
        """Predicted log cost of encoded configurations ``X_cfg`` relative to the task's mean log
        cost (0: a typical configuration; +1: e times as costly), or ``None`` without a cost
        model (no costs in the history, or a prior saved before cost models)."""
        import xgboost as xgb

        if self.cost_model is None:
            return None
        if len(X_cfg) == 0:
            return np.zeros(0)
        d = xgb.DMatrix(_join(X_cfg, self.meta_filter.apply(meta or {})), missing=np.nan)
        return self.cost_model.predict(d).astype(float)

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write ``path/prior.json`` and ``path/model_<k>.ubj`` (a folder, created)."""
        root = Path(path)
        models = save_boosters(root, self.boosters)
        sidecar = {
            "format": FORMAT,
            "space": self.space.to_json(),
            "feature_names": self.feature_names,
            "meta_filter": self.meta_filter.to_json(),
            "normalization": "per model z-score within the scored set, averaged, z-scored again",
            "objective": self.objective,
            "mode": self.mode,
            "config": asdict(self.config),
            "models": models,
            "training": self.training,
        }
        if self.cost_model is not None:
            self.cost_model.save_model(str(root / COST_MODEL))
            sidecar["cost_model"] = COST_MODEL
        (root / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
        return root

    @classmethod
    def load(cls, path: str | Path) -> RankingPrior:
        root = Path(path)
        d = read_sidecar(root, SIDECAR, FORMAT, "prior")
        space = Space.from_json(d["space"])
        meta_filter = FeatureFilter.from_json(d["meta_filter"])
        want = space.n_features + len(meta_filter.kept)
        boosters = [_load_booster(root, str(name), want, "model") for name in d["models"]]
        cost_model = None
        if d.get("cost_model") is not None:
            cost_model = _load_booster(root, str(d["cost_model"]), want, "cost model")
        return cls(
            space=space,
            meta_filter=meta_filter,
            boosters=boosters,
            config=RankerConfig.from_json(d.get("config", {})),
            objective=str(d.get("objective", "objective")),
            mode=str(d.get("mode", "max")),
            training=dict(d.get("training", {})),
            cost_model=cost_model,
        )


def _load_booster(root: Path, name: str, want: int, what: str) -> Any:
    """An XGBoost booster the sidecar names, checked to exist and to have ``want`` features."""
    import xgboost as xgb

    if not (root / name).is_file():
        kind = "model file" if what == "model" else what
        raise DataError(f"{root / name}: {kind} named in {SIDECAR} is missing")
    b = xgb.Booster()
    b.load_model(str(root / name))
    if b.num_features() != want:
        raise DataError(
            f"{root / name}: {what} has {b.num_features()} features, but the sidecar names {want}"
        )
    return b


def _fit_cost_model(per_task: list[tuple[Any, ...]], config: RankerConfig) -> tuple[Any, int]:
    """An XGBoost regressor of ``log(cost) - mean log(cost)`` within each task on the ranker's
    inputs, over at most ``max_configs_per_task`` random configurations per task with a positive
    finite cost; ``(None, 0)`` when no task has 2 or more such configurations or all
    configurations of a task cost the same."""
    import xgboost as xgb

    rng = np.random.default_rng([config.seed, 4099])
    Xs, ys = [], []
    for _, X, m, _, cost in per_task:
        ok = np.flatnonzero(np.isfinite(cost) & (cost > 0))
        if len(ok) < 2:
            continue
        idx = rng.choice(ok, size=min(len(ok), config.max_configs_per_task), replace=False)
        lc = np.log(cost[ok])
        Xs.append(_join(X[idx], m))
        ys.append(np.log(cost[idx]) - lc.mean())
    if not Xs:
        return None, 0
    X_train, y_train = np.vstack(Xs), np.concatenate(ys)
    if np.ptp(y_train) < 1e-9:
        return None, 0  # every configuration costs the same: nothing to tell apart
    reg = xgb.XGBRegressor(
        objective="reg:squarederror",
        tree_method="hist",
        n_estimators=config.cost_estimators,
        max_depth=config.max_depth,
        learning_rate=0.1,
        subsample=config.subsample,
        n_jobs=config.n_jobs,
        random_state=config.seed,
        verbosity=0,
        missing=np.nan,
    )
    reg.fit(X_train, y_train)
    return reg.get_booster(), len(X_train)


def _join(X_cfg: np.ndarray, m: np.ndarray) -> np.ndarray:
    if m.size == 0:
        return np.asarray(X_cfg, dtype=float)
    return np.hstack([X_cfg, np.broadcast_to(m, (len(X_cfg), m.size))])


__all__ = ["RankerConfig", "RankingPrior", "even_subsample", "relevance_labels", "zscore"]
