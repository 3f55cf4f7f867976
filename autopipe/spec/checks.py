"""Every check of a job's input that needs neither Ray, MLflow nor a fitted model: the files and
folders the spec names (:mod:`.paths`) and the searcher's options, declared and checked by each
search core (:mod:`autopipe.search`). ``autopipe validate`` runs exactly these, and ``autopipe
tune`` runs them before it starts anything."""

from __future__ import annotations

from typing import Any

from autopipe.spec.paths import check_paths
from autopipe.spec.schema import JobSpec


def check_search(spec: JobSpec, space: Any = None) -> None:
    """``search.options`` checked by the core they are for; a core that is cheap to build
    (random, grid, design) is built once, so a grid over a continuous space, a design without
    configs or a candidate outside the space fails here. Model-based cores need the prior to be
    built: their option values are range-checked only."""
    from autopipe import search

    algo = spec.search.algorithm
    search.check_options(algo, spec.search.options)
    if search.is_cheap(algo):
        space = spec.to_space() if space is None else space
        search.build_core(
            algo,
            space,
            seed=spec.search.seed,
            options=spec.search.options,
            budget=spec.budget.max_trials,
        )


def preflight(spec: JobSpec, space: Any = None, address: str | None = None) -> Any:
    """The files and folders the spec names, the searcher, and the dataset as trials will read
    it (:mod:`.data`); returns the dataset's report. With an ``address`` (an existing cluster)
    the model and storage paths are left to the cluster's nodes (and so is the tokenizer of a
    model folder that exists only there)."""
    from autopipe.spec.data import check_dataset

    check_paths(spec, local=address is None)
    check_search(spec, space)
    if address is not None and spec.model.path and not spec.resolve(spec.model.path).exists():
        return check_dataset(spec, tokenizer=_NoTokenizer())
    return check_dataset(spec)


class _NoTokenizer:
    """Lengths unknown here (the model folder is on the cluster's nodes): everything fits."""

    def __call__(self, texts: list[str], add_special_tokens: bool = True) -> dict[str, Any]:
        return {"input_ids": [[] for _ in texts]}
