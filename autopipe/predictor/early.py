"""The early predictor: an ensemble of XGBoost regressors that maps a learning-curve prefix, the
configuration encoding and filtered dataset meta-features to the within-task z-scored final
objective, either as a residual over the prior's z-score (``residual``) or directly (``direct``).
Saved as XGBoost UBJSON files plus a JSON sidecar, never pickled; it does not evaluate itself
(:mod:`autopipe.predictor.evaluate`) nor import Ray.

Notation: ``z`` is the within-task z-score of the seed-averaged direction-aware final objective
``y_max`` (larger is better) over the distinct configurations of the training runs, by default
the rank-based one (normal scores, see :func:`within_task_z`);
``p`` is the prior's z-score of a configuration; the residual variant learns ``r = z - p`` and
predicts ``p + r_hat``, so a prefix that carries no information falls back to (a shrunk) ``p``.
``X`` is ``(n, n_features)``: prefix features, their peer ranks (below), configuration
features, kept meta-features and, for the residual variant, ``p`` itself. ``mean``/``var`` are
``(n,)`` ensemble mean and variance.

Peer ranks (``relative``): a prefix's raw values (an eval loss of 1.1) mean different things on
different tasks, while the target is a within-task rank. So each kept prefix feature is also given
as its normal score among the same feature of ``m`` peers, other trials of the same task that
reached the fraction: ``Phi^-1((mid-rank - 1/2) / (m + 1))``, NaN without peers, plus ``m``
itself. Live, the peers are the job's other trials (few at first, more later); in training each
run gets ``relative_copies`` rows with ``m`` drawn uniformly from ``0..relative_max_peers`` random
peers of its task, so the model sees every peer count it meets live and learns how far to trust
the ranks at each. LOTO on the first 156 runs of the post-training history (4 tasks), f = 0.5:
Spearman 0.843 with raw features only, 0.910 with peer ranks over the whole task; the last
observed eval loss gives 0.894.

Linear base (``linear_alpha``): each member's trees are boosted from a ridge regression on the
prefix features, their peer ranks and ``p`` (:class:`LinearBase`), so a task's trials are ordered
by the raw values' within-task differences even where the trees' thresholds, learned on other
tasks' loss levels, put them all in one leaf.

Bags (``bag_unit``): each member is fitted on the runs of a random 80 % of the training tasks, so
the members' spread and the out-of-bag error (the floor of the noise handed to the GP) are those
of a task the member has not seen, as a job's task is (:func:`member_bag`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autopipe import metrics
from autopipe.errors import DataError
from autopipe.history.data import META_PREFIX, History, configs_to_frame
from autopipe.history.metafeatures import FeatureFilter, select_meta_features
from autopipe.history.saved import read_sidecar, save_boosters
from autopipe.predictor.features import FRACTION_TOL, PrefixFeaturizer, as_float
from autopipe.predictor.linear import LinearBase
from autopipe.predictor.targets import (
    TARGETS,
    member_bag,
    peer_ranks,
    reached,
    run_targets,
    within_task_z,
)
from autopipe.space import Space

FORMAT = "autopipe-predictor/1"


SIDECAR = "predictor.json"


RESIDUAL = "residual"


DIRECT = "direct"


VARIANTS = (RESIDUAL, DIRECT)


BAG_UNITS = ("task", "run")  # what an ensemble member's bag samples, see member_bag


PRIOR_FEATURE = "prior_z"


REL_PREFIX = "rel:"


REL_COUNT = "rel:n_peers"


@dataclass
class PredictorConfig:
    """Hyperparameters of the predictor ensemble."""

    n_models: int = 5  # ensemble members, seeds seed..seed+4
    n_estimators: int = 300
    max_depth: int = 4
    learning_rate: float = 0.05
    subsample: float = 0.8  # XGBoost row subsampling per tree
    bag_fraction: float = 0.8  # share of training tasks (or runs) each member sees; the rest: OOB
    # What a member's bag samples (member_bag): "task" - whole training tasks, so each member and
    # the OOB error (the GP's noise floor) meet tasks it was not fitted on, as a job's new task is;
    # "run" - runs regardless of task (what a single-task history always uses).
    # NOTE: tinypost LOTO at f = 0.5, seeds 0-4, Spearman residual / direct, task vs run bags:
    # 0.745 / 0.738 vs 0.739 / 0.741; noise ratio (MSE / predicted variance) at seed 0 0.89 / 0.92
    # vs 1.72 / 1.78 - run bags' OOB error understated a new task's error (benchmarks/README.md).
    bag_unit: str = "task"
    colsample_bytree: float = 0.8
    min_child_weight: float = 3.0
    reg_lambda: float = 1.0
    # Boosted members trained on overlapping rows disagree far less than they err, so the noise
    # handed to the GP is max(ensemble variance, floor) with floor = max(variance_floor, OOB MSE).
    variance_floor: float = 1e-2
    floor_from_oob: bool = True
    use_meta: bool = True
    # NOTE: 1 thread: on the shared 2-core machine of benchmarks/PREDICTOR.md, 2 OpenMP threads
    # made one scan_llm fit take 12-164 s instead of 1.7 s (spinning threads under contention).
    n_jobs: int = 1
    seed: int = 0
    # NOTE: "rank" (normal scores): scan_llm 5-fold, direct variant at f = 0.25, Spearman on runs
    # with a prefix 0.954 vs 0.863 with "standard" z-scores, whose squared error is dominated by
    # diverged runs (loss up to 5.1 against a median of 1.9, z down to -8).
    target: str = "rank"
    filter_min_variance: float = 1e-3
    filter_max_abs_corr: float = 0.95
    filter_max_missing: float = 0.5  # meta-features, across tasks (as the prior)
    # Prefix features are missing for every run without a checkpoint at or below f (72 % of
    # scan_llm runs at f = 0.25); only features missing on all but 1 % of the runs are dropped.
    prefix_max_missing: float = 0.99
    # Peer ranks of the prefix features (see the module docstring); old sidecars without the key
    # load with relative=False.
    relative: bool = True
    relative_max_peers: int = 16  # the most peers a training row is ranked among
    relative_copies: int = 3  # training rows per run, each with its own random peers
    # Linear base (LinearBase): each member's trees start from a ridge fit of the target on the
    # standardized prefix features, their peer ranks and the prior's z-score, penalty
    # linear_alpha * rows; None: trees only (old sidecars load with None).
    # NOTE: Spearman of the proxy, mean of seeds 0-2, residual / direct, linear base vs trees only:
    # tinypost LOTO at f = 0.5 0.740 / 0.743 vs 0.709 / 0.711; scan_llm 5-fold, runs with a prefix,
    # f = 0.25 0.928 / 0.940 vs 0.938 / 0.957, f = 0.1 (23 runs) 0.774 / 0.798 vs 0.710 / 0.702.
    # Unclipped variants on tinypost at seed 0 (benchmarks/README.md): penalties 0.001-1,
    # 0.734-0.748; a base on every column (configuration and meta-features too) at most 0.743;
    # demeaning within tasks did not help.
    linear_alpha: float | None = 0.01

    def validate(self) -> None:
        for name in ("n_models", "n_estimators", "max_depth", "n_jobs", "relative_copies"):
            if getattr(self, name) < 1:
                raise DataError(f"{name} must be >= 1, but got {getattr(self, name)}")
        for name in ("subsample", "bag_fraction", "colsample_bytree", "learning_rate"):
            v = getattr(self, name)
            if not (0.0 < v <= 1.0):
                raise DataError(f"{name} must be in (0, 1], but got {v}")
        if self.bag_unit not in BAG_UNITS:
            raise DataError(f"bag_unit must be one of {list(BAG_UNITS)}, but got {self.bag_unit!r}")
        if self.target not in TARGETS:
            raise DataError(f"target must be one of {list(TARGETS)}, but got {self.target!r}")
        if self.relative_max_peers < 1:
            raise DataError(f"relative_max_peers must be >= 1, but got {self.relative_max_peers}")
        if not (self.variance_floor > 0):
            raise DataError(f"variance_floor must be > 0, but got {self.variance_floor}")
        if self.linear_alpha is not None and not (self.linear_alpha > 0):
            raise DataError(f"linear_alpha must be > 0 or None, but got {self.linear_alpha}")

    def xgb_kwargs(self, seed: int) -> dict[str, Any]:
        return {
            "objective": "reg:squarederror",
            "tree_method": "hist",
            "n_estimators": self.n_estimators,
            "max_depth": self.max_depth,
            "learning_rate": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "reg_lambda": self.reg_lambda,
            "n_jobs": self.n_jobs,
            "random_state": seed,
            "missing": np.nan,
            "verbosity": 0,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PredictorConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


# --------------------------------------------------------------------------- model
@dataclass
class EarlyPredictor:
    """A fitted predictor of the z-scored final objective from a prefix at ``fraction``.

    Callers: the scheduler and the searcher call :meth:`predict_reports` once per trial report
    (any time after the trial has reported at or below ``fraction``; later reports are ignored so
    the features match the training prefixes); evaluation calls :meth:`predict_history`.
    """

    space: Space
    featurizer: PrefixFeaturizer
    variant: str
    prefix_kept: list[str]  # prefix feature names kept by the filter, in model order
    meta_filter: FeatureFilter
    members: list[Any]  # xgboost.XGBRegressor
    floor: float
    config: PredictorConfig = field(default_factory=PredictorConfig)
    objective: str = "objective"
    mode: str = "max"
    training: dict[str, Any] = field(default_factory=dict)
    linear: list[LinearBase] = field(default_factory=list)  # one per member, or none

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise DataError(f"variant must be one of {list(VARIANTS)}, but got {self.variant!r}")
        index = {n: i for i, n in enumerate(self.featurizer.names)}
        unknown = [n for n in self.prefix_kept if n not in index]
        if unknown:
            raise DataError(f"prefix_kept names unknown prefix features {unknown[:5]}")
        if self.linear and len(self.linear) != len(self.members):
            raise DataError(
                f"linear must have one base per member ({len(self.members)}), "
                f"but got {len(self.linear)}"
            )
        self._prefix_idx = np.array([index[n] for n in self.prefix_kept], dtype=np.int64)

    @property
    def fraction(self) -> float:
        return self.featurizer.fraction

    @property
    def signals(self) -> tuple[str, ...]:
        return self.featurizer.signals

    @property
    def relative(self) -> bool:
        return bool(self.config.relative)

    @property
    def relative_names(self) -> list[str]:
        if not self.relative:
            return []
        return [REL_PREFIX + n for n in self.prefix_kept] + [REL_COUNT]

    @property
    def feature_names(self) -> list[str]:
        names = list(self.prefix_kept) + self.relative_names + self.space.feature_names()
        names += [META_PREFIX + k for k in self.meta_filter.kept]
        return names + ([PRIOR_FEATURE] if self.variant == RESIDUAL else [])

    # ----------------------------------------------------------------- fit
    @classmethod
    def fit(
        cls,
        history: History,
        fraction: float,
        prior_z: np.ndarray | Mapping[str, float] | None = None,
        run_ids: Sequence[str] | None = None,
        config: PredictorConfig | None = None,
        signals: Sequence[str] | None = None,
    ) -> EarlyPredictor:
        """Fit on the runs ``run_ids`` of ``history`` (default: every run with a finite ``y``).

        With ``prior_z`` (the prior's z-score per run id, or per row of ``run_targets(history,
        run_ids)``) the residual variant is fitted, otherwise the direct one. ``signals``
        defaults to every curve signal of the history. Runs without a prefix keep NaN features.
        """
        from xgboost import XGBRegressor

        config = config or PredictorConfig()
        config.validate()
        if signals is None:
            history.require_curves("the early predictor needs")
            signals = history.curve_signals
        signals = tuple(signals)
        if not signals:
            raise DataError("signals must name at least one curve signal, but got none")
        featurizer = PrefixFeaturizer(signals, float(fraction))
        frame = run_targets(history, run_ids)
        if len(frame) < 4:
            raise DataError(
                f"{history.where}: the predictor needs 4 or more runs with a finite objective, "
                f"but got {len(frame)}"
            )
        z = within_task_z(frame, config.target)
        p = _align_prior(prior_z, frame)
        variant = RESIDUAL if p is not None else DIRECT
        target = z - p if p is not None else z

        P = featurizer.from_curves(history.curves, frame["run_id"].tolist())
        prefix_filter = select_meta_features(
            pd.DataFrame(P, columns=featurizer.names),
            min_variance=config.filter_min_variance,
            max_abs_corr=config.filter_max_abs_corr,
            max_missing=config.prefix_max_missing,
        )
        tasks = sorted(set(frame["task"]))
        meta_filter = _meta_filter(history, tasks, config)
        runs = history.runs.set_index(history.runs["run_id"].astype(str))
        X_cfg = history.encode(runs.loc[frame["run_id"], history.space.names])
        M = np.vstack([meta_filter.apply(history.meta_features(t)) for t in frame["task"]])
        model = cls(
            space=history.space,
            featurizer=featurizer,
            variant=variant,
            prefix_kept=list(prefix_filter.kept),
            meta_filter=meta_filter,
            members=[],
            floor=config.variance_floor,
            config=config,
            objective=history.objective,
            mode=history.mode,
        )
        n = len(frame)
        copies = config.relative_copies if config.relative else 1
        if config.relative:
            rng = np.random.default_rng([config.seed, 7919])
            is_peer = np.array(
                [
                    reached(fr, fraction)
                    for fr in _run_fractions(history.curves, frame["run_id"].tolist())
                ]
            )
            R = np.vstack(
                [
                    model._training_ranks(P, frame["task"].to_numpy(), is_peer, rng)
                    for _ in range(copies)
                ]
            )
        else:
            R = None
        X = model._assemble(
            np.tile(P, (copies, 1)),
            np.tile(X_cfg, (copies, 1)),
            np.tile(M, (copies, 1)),
            None if p is None else np.tile(p, copies),
            R,
        )
        target_rows = np.tile(target, copies)
        run_of_row = np.tile(np.arange(n), copies)
        lin_cols = np.arange(len(model.prefix_kept) + len(model.relative_names))
        if variant == RESIDUAL:  # the prior's z-score is the last column
            lin_cols = np.r_[lin_cols, X.shape[1] - 1]

        oob_sum = np.zeros(n)
        oob_cnt = np.zeros(n)
        for k in range(config.n_models):
            rng = np.random.default_rng([config.seed, k])
            bag = member_bag(frame["task"].to_numpy(), config.bag_fraction, config.bag_unit, rng)
            in_bag = np.isin(run_of_row, bag)
            m = XGBRegressor(**config.xgb_kwargs(config.seed + k))
            base = None
            if config.linear_alpha is not None:
                lin = LinearBase.fit(X[in_bag], target_rows[in_bag], config.linear_alpha, lin_cols)
                model.linear.append(lin)
                base = lin.predict(X[in_bag])
            m.fit(X[in_bag], target_rows[in_bag], base_margin=base)
            model.members.append(m)
            if not in_bag.all():
                # a held-out run's copies (different peers) all count toward its OOB prediction
                out_rows = np.flatnonzero(~in_bag)
                got = model._member_predict(k, X[out_rows])
                np.add.at(oob_sum, run_of_row[out_rows], got)
                np.add.at(oob_cnt, run_of_row[out_rows], 1)
        has = oob_cnt > 0
        oob_mse = (
            float(np.mean((oob_sum[has] / oob_cnt[has] - target[has]) ** 2))
            if has.any()
            else math.nan
        )
        if config.floor_from_oob and math.isfinite(oob_mse):
            model.floor = max(config.variance_floor, oob_mse)
        model.training = {
            "history": history.where,
            "tasks": tasks,
            "runs": n,
            "rows": int(len(X)),
            "runs_with_prefix": int(np.sum(P[:, -2] > 0)),
            "oob_mse": oob_mse,
            "prefix_dropped": dict(prefix_filter.dropped),
        }
        return model

    def _member_predict(self, k: int, X: np.ndarray) -> np.ndarray:
        """Member ``k``'s prediction on assembled rows ``X``: its trees on top of its linear base."""
        base = self.linear[k].predict(X) if self.linear else None
        return self.members[k].predict(X, base_margin=base).astype(float)

    def _training_ranks(
        self, P: np.ndarray, tasks: np.ndarray, is_peer: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """One set of peer ranks for every training run: ``m`` uniform in ``0..min(max peers,
        available)`` random other runs of its task that reached the fraction."""
        Pk = P[:, self._prefix_idx]
        R = np.empty((len(P), len(self.prefix_kept) + 1))
        for t in np.unique(tasks):
            idx = np.flatnonzero(tasks == t)
            pool_all = idx[is_peer[idx]]
            for i in idx:
                pool = pool_all[pool_all != i]
                m = int(rng.integers(0, min(self.config.relative_max_peers, len(pool)) + 1))
                peers = rng.choice(pool, size=m, replace=False) if m else pool[:0]
                R[i] = peer_ranks(Pk[i], Pk[peers])
        return R

    def _ranks_among(self, P: np.ndarray, Q: np.ndarray) -> np.ndarray:
        """Peer ranks ``(n, len(prefix_kept) + 1)`` of each row of ``P`` among all rows of
        ``Q`` (both full featurizer rows)."""
        Qk = Q[:, self._prefix_idx]
        return np.vstack([peer_ranks(row, Qk) for row in P[:, self._prefix_idx]]).reshape(
            len(P), len(self.prefix_kept) + 1
        )

    def _assemble(
        self,
        P: np.ndarray,
        X_cfg: np.ndarray,
        M: np.ndarray,
        p: np.ndarray | None,
        R: np.ndarray | None = None,
    ) -> np.ndarray:
        parts = [P[:, self._prefix_idx]]
        if self.relative:
            if R is None:  # no peers: NaN ranks, a peer count of 0
                R = np.full((len(P), len(self.prefix_kept) + 1), np.nan)
                R[:, -1] = 0.0
            parts.append(np.asarray(R, dtype=float).reshape(len(P), -1))
        parts += [np.asarray(X_cfg, dtype=float), M]
        if self.variant == RESIDUAL:
            if p is None:
                raise DataError("this predictor is the residual variant: prior_z must be given")
            parts.append(np.asarray(p, dtype=float).reshape(-1, 1))
        return np.hstack([np.asarray(a, dtype=float).reshape(len(P), -1) for a in parts])

    # ----------------------------------------------------------------- predict
    def predict_features(
        self,
        P: np.ndarray,
        X_cfg: np.ndarray,
        M: np.ndarray,
        prior_z: np.ndarray | None,
        R: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, var)`` of the z-scored final from prefix features ``P`` ``(n,
        featurizer.n_features)``, configuration features ``X_cfg``, kept meta-features ``M``
        ``(n, len(meta_filter.kept))``, for the residual variant ``prior_z`` ``(n,)``, and peer
        ranks ``R`` ``(n, len(prefix_kept) + 1)`` (default: no peers)."""
        if X_cfg.shape[1] != self.space.n_features:
            raise DataError(
                f"X_cfg must have {self.space.n_features} columns, but got {X_cfg.shape[1]}"
            )
        if len(P) == 0:
            return np.zeros(0), np.zeros(0)
        X = self._assemble(P, X_cfg, M, prior_z, R)
        preds = np.stack([self._member_predict(k, X) for k in range(len(self.members))])
        mean = preds.mean(axis=0)
        var = np.maximum(preds.var(axis=0, ddof=1) if len(preds) > 1 else 0.0, self.floor)
        if self.variant == RESIDUAL:
            mean = mean + np.asarray(prior_z, dtype=float)
        return mean, np.broadcast_to(var, mean.shape).astype(float)

    def predict_reports(
        self,
        reports: list[dict[str, float]],
        config: dict,
        meta: dict[str, float] | None,
        prior_z: float | None,
        peers: Sequence[list[dict[str, float]]] | None = None,
    ) -> tuple[float, float]:
        """(predicted z-scored final, variance) of one live trial from its ``reports`` (keys of
        :mod:`autopipe.metrics`, each with ``fraction``), its ``config``, the dataset ``meta``
        (names without ``meta_``), the prior's z-score (required by the residual variant,
        ignored by the direct one) and ``peers``, the report lists of the job's other trials
        (those that have not reached the fraction are left out)."""
        if self.variant == RESIDUAL and (prior_z is None or not math.isfinite(float(prior_z))):
            raise DataError(
                f"this predictor is the residual variant: prior_z must be a finite float, but got {prior_z!r}"
            )
        P = self.featurizer.from_reports(reports).reshape(1, -1)
        X_cfg = self.space.encode([config])
        M = self.meta_filter.apply(meta or {}).reshape(1, -1)
        p = np.array([float(prior_z)]) if self.variant == RESIDUAL else None  # type: ignore[arg-type]
        R = self._ranks_among(P, self._peer_rows(peers or [])) if self.relative else None
        mean, var = self.predict_features(P, X_cfg, M, p, R)
        return float(mean[0]), float(var[0])

    def _peer_rows(self, peers: Sequence[Sequence[Mapping[str, object]]]) -> np.ndarray:
        """Featurizer rows of the peers that reached the fraction, ``(m, n_features)``."""
        rows = []
        for reports in peers:
            fr = [r.get(metrics.FRACTION) for r in reports]
            fr_arr = np.array([as_float(v) for v in fr], dtype=float)
            if not reached(fr_arr, self.fraction):
                continue
            # a peer's malformed report costs that peer, never the trial being scored
            ok = [r for r, f in zip(reports, fr_arr, strict=True) if 0.0 < f <= 1.0]
            try:
                rows.append(self.featurizer.from_reports(ok))
            except DataError:
                continue
        return np.vstack(rows) if rows else np.empty((0, self.featurizer.n_features))

    def predict_batch(
        self,
        reports: Sequence[list[dict[str, float]]],
        configs: pd.DataFrame | Sequence[Mapping[str, Any]],
        metas: Sequence[Mapping[str, float] | None],
        prior_z: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_reports` over ``n`` trials at once: ``(mean, var)``, each ``(n,)``;
        each trial's peers are the other trials of the batch that reached the fraction."""
        frame = (
            configs if isinstance(configs, pd.DataFrame) else configs_to_frame(self.space, configs)
        )
        if not (len(reports) == len(frame) == len(metas)):
            raise DataError(
                f"reports, configs and metas must have one length, but got "
                f"{len(reports)}, {len(frame)} and {len(metas)}"
            )
        P = np.vstack([self.featurizer.from_reports(r) for r in reports]).reshape(
            len(reports), self.featurizer.n_features
        )
        X_cfg = self.space.encode_columns({n: frame[n].to_numpy() for n in self.space.names})
        M = np.vstack([self.meta_filter.apply(m or {}) for m in metas]).reshape(len(metas), -1)
        R = None
        if self.relative:
            R = np.vstack(
                [
                    self._ranks_among(
                        P[i : i + 1], self._peer_rows([*reports[:i], *reports[i + 1 :]])
                    )
                    for i in range(len(reports))
                ]
            ).reshape(len(reports), -1)
        return self.predict_features(P, X_cfg, M, prior_z, R)

    def predict_history(
        self,
        history: History,
        run_ids: Sequence[str] | None = None,
        prior_z: np.ndarray | Mapping[str, float] | None = None,
        n_peers: int | None = None,
    ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """Predict the runs of a history from their curves (default: every run with a finite
        ``y``). Each run's peers are ``n_peers`` (default ``relative_max_peers``) random other
        predicted runs of its task that reached the fraction, as in a job that has seen that
        many other trials. Returns ``run_targets(history, run_ids)`` and ``(mean, var)`` aligned
        with it."""
        frame = run_targets(history, run_ids)
        p = _align_prior(prior_z, frame)
        if self.variant == RESIDUAL and p is None:
            raise DataError("this predictor is the residual variant: prior_z must be given")
        P = self.featurizer.from_curves(history.curves, frame["run_id"].tolist())
        runs = history.runs.set_index(history.runs["run_id"].astype(str))
        X_cfg = history.encode(runs.loc[frame["run_id"], history.space.names])
        M = np.vstack(
            [self.meta_filter.apply(history.meta_features(t)) for t in frame["task"]]
        ).reshape(len(frame), -1)
        R = None
        if self.relative:
            k = self.config.relative_max_peers if n_peers is None else int(n_peers)
            if k < 0:
                raise DataError(f"n_peers must be >= 0, but got {k}")
            is_peer = np.array(
                [
                    reached(fr, self.fraction)
                    for fr in _run_fractions(history.curves, frame["run_id"].tolist())
                ]
            )
            rng = np.random.default_rng([self.config.seed, 104729])
            tasks = frame["task"].to_numpy()
            R = np.empty((len(frame), len(self.prefix_kept) + 1))
            for i in range(len(frame)):
                pool = np.flatnonzero((tasks == tasks[i]) & is_peer)
                pool = pool[pool != i]
                pick = rng.choice(pool, size=min(k, len(pool)), replace=False)
                R[i] = self._ranks_among(P[i : i + 1], P[pick])[0]
        mean, var = self.predict_features(P, X_cfg, M, p, R)
        return frame, mean, var

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write ``path/predictor.json`` and ``path/model_<k>.ubj`` (a folder, created)."""
        root = Path(path)
        models = save_boosters(root, self.members)
        sidecar = {
            "format": FORMAT,
            "variant": self.variant,
            "space": self.space.to_json(),
            "fraction": self.fraction,
            "fraction_tol": self.featurizer.tol,
            "signals": list(self.signals),
            "prefix_kept": list(self.prefix_kept),
            "meta_filter": self.meta_filter.to_json(),
            "feature_names": self.feature_names,
            "floor": self.floor,
            "target": f"within-task {self.config.target} z-score of the seed-averaged final "
            "objective, larger is better"
            + (", minus the prior's z-score" if self.variant == RESIDUAL else ""),
            "objective": self.objective,
            "mode": self.mode,
            "config": asdict(self.config),
            "models": models,
            "linear": [lin.to_json() for lin in self.linear],
            "training": _json_safe(self.training),
        }
        (root / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
        return root

    @classmethod
    def load(cls, path: str | Path) -> EarlyPredictor:
        from xgboost import XGBRegressor

        root = Path(path)
        d = read_sidecar(root, SIDECAR, FORMAT, "predictor")
        model = cls(
            space=Space.from_json(d["space"]),
            featurizer=PrefixFeaturizer(
                tuple(d["signals"]),
                float(d["fraction"]),
                float(d.get("fraction_tol", FRACTION_TOL)),
            ),
            variant=str(d["variant"]),
            prefix_kept=[str(n) for n in d["prefix_kept"]],
            meta_filter=FeatureFilter.from_json(d["meta_filter"]),
            members=[],
            floor=float(d["floor"]),
            config=PredictorConfig.from_json(
                {"relative": False, "linear_alpha": None, "bag_unit": "run", **d.get("config", {})}
            ),
            objective=str(d.get("objective", "objective")),
            mode=str(d.get("mode", "max")),
            training=dict(d.get("training", {})),
        )
        want = len(model.feature_names)
        for name in d["models"]:
            if not (root / name).is_file():
                raise DataError(f"{root / name}: model file named in {SIDECAR} is missing")
            m = XGBRegressor()
            m.load_model(str(root / name))
            got = m.get_booster().num_features()
            if got != want:
                raise DataError(
                    f"{root / name}: model has {got} features, but the sidecar names {want}"
                )
            model.members.append(m)
        if not model.members:
            raise DataError(
                f"{root / SIDECAR}: models must name at least one model file, but got none"
            )
        linear = d.get("linear") or []
        if linear and len(linear) != len(model.members):
            raise DataError(
                f"{root / SIDECAR}: linear must have one base per model ({len(model.members)}), "
                f"but got {len(linear)}"
            )
        for lin in linear:
            base = LinearBase.from_json(lin)
            if len(base.cols) and (base.cols.min() < 0 or base.cols.max() >= want):
                raise DataError(
                    f"{root / SIDECAR}: a linear base reads columns outside the {want} features"
                )
            model.linear.append(base)
        return model


def _run_fractions(curves: pd.DataFrame | None, run_ids: Sequence[str]) -> list[np.ndarray]:
    """Each run's reported fractions (empty without curves)."""
    if curves is None or len(curves) == 0:
        return [np.empty(0) for _ in run_ids]
    g = curves.groupby(curves["run_id"].astype(str))[metrics.FRACTION]
    by_run = {str(k): v.to_numpy(dtype=float) for k, v in g}
    return [by_run.get(str(r), np.empty(0)) for r in run_ids]


def _meta_filter(history: History, tasks: list[str], config: PredictorConfig) -> FeatureFilter:
    if not (config.use_meta and history.meta_columns):
        return FeatureFilter([], {})
    table = history.tasks.set_index(history.tasks["task"].astype(str)).loc[
        tasks, history.meta_columns
    ]
    table.columns = [c[len(META_PREFIX) :] for c in table.columns]
    return select_meta_features(
        table,
        min_variance=config.filter_min_variance,
        max_abs_corr=config.filter_max_abs_corr,
        max_missing=config.filter_max_missing,
    )


def _align_prior(
    prior_z: np.ndarray | Mapping[str, float] | None, frame: pd.DataFrame
) -> np.ndarray | None:
    if prior_z is None:
        return None
    if isinstance(prior_z, Mapping):
        missing = [r for r in frame["run_id"] if r not in prior_z]
        if missing:
            raise DataError(f"prior_z has no score for runs {missing[:5]}")
        p = np.array([float(prior_z[r]) for r in frame["run_id"]])
    else:
        p = np.asarray(prior_z, dtype=float).ravel()
        if len(p) != len(frame):
            raise DataError(f"prior_z must have one score per run ({len(frame)}), but got {len(p)}")
    if not np.all(np.isfinite(p)):
        raise DataError("prior_z must be finite, but got NaN or inf")
    return p


def _json_safe(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    return v


__all__ = [
    "DIRECT",
    "RESIDUAL",
    "VARIANTS",
    "EarlyPredictor",
    "PredictorConfig",
]
