"""Meta-features of text post-training datasets, known before any training: sizes, token-length
statistics, vocabulary and lexical diversity, answer formats, label entropy and similarity of the
evaluation split to the training split; a cache keyed by content hash; and the variance /
correlation filter that every meta-learner applies. Tokens are a whitespace + punctuation split,
not a model tokenizer; nothing here trains or loads a model.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import rankdata

from autopipe.errors import DataError

META_VERSION = 1  # bump when a feature's definition changes: it is part of the cache key
Record = Mapping[str, str]

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_CHOICE_ANSWER = re.compile(r"^\(?[A-Ha-h]\)?[.:]?$")
_NUMERIC_ANSWER = re.compile(r"^[-+]?\$?\d[\d,]*(\.\d+)?%?$")
_YESNO = {"yes", "no", "maybe", "true", "false"}
_OPTIONS_IN_PROMPT = re.compile(r"(^|\s)\(?[A-D][).:]\s", re.MULTILINE)
_TTR_WINDOW = 100  # NOTE: mean segmental TTR window; standard choice for short texts
_MAX_TFIDF_TRAIN = 2000  # docs used for the TF-IDF nearest-neighbour cosine (keeps it sub-second)
_MAX_TFIDF_EVAL = 500


# --------------------------------------------------------------------------- tokens
def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens."""
    return _TOKEN.findall(text.lower())


def _check(records: Sequence[Record], name: str) -> None:
    for i, r in enumerate(records):
        if (
            not isinstance(r, Mapping)
            or not isinstance(r.get("prompt"), str)
            or not isinstance(r.get("answer"), str)
        ):
            raise DataError(f"{name}[{i}] must be {{prompt: str, answer: str}}, but got {r!r:.80}")


# --------------------------------------------------------------------------- features
def text_meta_features(
    train: Sequence[Record], eval: Sequence[Record] | None = None, seed: int = 0
) -> dict[str, float]:
    """Meta-features of a dataset given as ``[{"prompt", "answer"}]`` train and eval records.

    ``seed`` drives the subsample of documents for the nearest-neighbour TF-IDF cosine. Overlap
    features are NaN without an eval split.
    """
    _check(train, "train")
    if not train:
        raise DataError("train must have at least one record, but got 0")
    eval = list(eval or [])
    _check(eval, "eval")
    rng = np.random.default_rng(seed)

    p_tok = [tokenize(r["prompt"]) for r in train]
    a_tok = [tokenize(r["answer"]) for r in train]
    f: dict[str, float] = {
        "n_train": float(len(train)),
        "n_eval": float(len(eval)),
        "log_n_train": math.log(len(train)),
    }
    f.update(_length_stats("prompt_tokens", [len(t) for t in p_tok]))
    f.update(_length_stats("answer_tokens", [len(t) for t in a_tok]))
    f["prompt_chars_mean"] = float(np.mean([len(r["prompt"]) for r in train]))
    f["answer_chars_mean"] = float(np.mean([len(r["answer"]) for r in train]))
    f["answer_prompt_ratio"] = f["answer_tokens_mean"] / max(f["prompt_tokens_mean"], 1.0)
    f.update(_lexical(p_tok, a_tok))
    f.update(_answer_format([r["answer"] for r in train], [r["prompt"] for r in train]))
    f.update(_overlap(train, eval, p_tok, rng))
    return f


def _length_stats(prefix: str, lengths: list[int]) -> dict[str, float]:
    x = np.asarray(lengths, dtype=float)
    sd = float(x.std())
    skew = float(np.mean((x - x.mean()) ** 3) / sd**3) if sd > 0 else 0.0
    return {
        f"{prefix}_mean": float(x.mean()),
        f"{prefix}_std": sd,
        f"{prefix}_median": float(np.median(x)),
        f"{prefix}_p10": float(np.percentile(x, 10)),
        f"{prefix}_p90": float(np.percentile(x, 90)),
        f"{prefix}_max": float(x.max()),
        f"{prefix}_skew": skew,
        f"{prefix}_cv": sd / float(x.mean()) if x.mean() > 0 else 0.0,
    }


def _lexical(p_tok: list[list[str]], a_tok: list[list[str]]) -> dict[str, float]:
    tokens = [t for doc in p_tok for t in doc] + [t for doc in a_tok for t in doc]
    n = len(tokens)
    counts = Counter(tokens)
    v = len(counts)
    if n == 0:
        return {k: 0.0 for k in _LEXICAL_NAMES}
    freq = np.fromiter(counts.values(), dtype=float)
    hapax = float(np.sum(freq == 1))
    # Yule's K: 1e4 * (sum f^2 - N) / N^2, a length-robust repetition measure
    yule = 1e4 * (float(np.sum(freq**2)) - n) / (n * n)
    windows = [tokens[i : i + _TTR_WINDOW] for i in range(0, n - _TTR_WINDOW + 1, _TTR_WINDOW)]
    msttr = float(np.mean([len(set(w)) / _TTR_WINDOW for w in windows])) if windows else v / n
    words = [t for t in tokens if t[0].isalnum() or t[0] == "_"]
    answer_vocab = {t for doc in a_tok for t in doc}
    return {
        "n_tokens": float(n),
        "vocab_size": float(v),
        "log_vocab_size": math.log(v),
        "type_token_ratio": v / n,
        "msttr": msttr,
        "hapax_ratio": hapax / v,
        "yule_k": yule,
        "entropy_unigram": float(-np.sum((freq / n) * np.log2(freq / n))),
        "mean_word_len": float(np.mean([len(t) for t in words])) if words else 0.0,
        "frac_numeric_tokens": sum(t.isdigit() for t in tokens) / n,
        "frac_punct_tokens": (n - len(words)) / n,
        "answer_vocab_size": float(len(answer_vocab)),
    }


_LEXICAL_NAMES = (
    "n_tokens",
    "vocab_size",
    "log_vocab_size",
    "type_token_ratio",
    "msttr",
    "hapax_ratio",
    "yule_k",
    "entropy_unigram",
    "mean_word_len",
    "frac_numeric_tokens",
    "frac_punct_tokens",
    "answer_vocab_size",
)


def _answer_format(answers: list[str], prompts: list[str]) -> dict[str, float]:
    norm = [a.strip().lower() for a in answers]
    n = len(norm)
    counts = Counter(norm)
    p = np.fromiter(counts.values(), dtype=float) / n
    entropy = float(-np.sum(p * np.log2(p)))
    k = len(counts)
    return {
        "answer_choice_frac": sum(bool(_CHOICE_ANSWER.match(a.strip())) for a in answers) / n,
        "answer_numeric_frac": sum(bool(_NUMERIC_ANSWER.match(a.replace(" ", ""))) for a in norm)
        / n,
        "answer_yesno_frac": sum(a.rstrip(".!") in _YESNO for a in norm) / n,
        "answer_single_token_frac": sum(len(tokenize(a)) <= 1 for a in norm) / n,
        "answer_unique_frac": k / n,
        "answer_n_classes": float(k),
        "label_entropy": entropy,
        "label_entropy_norm": entropy / math.log2(k) if k > 1 else 0.0,
        "answer_top_frac": float(p.max()),
        "prompt_options_frac": sum(bool(_OPTIONS_IN_PROMPT.search(q)) for q in prompts) / n,
        "prompt_question_frac": sum(q.rstrip().endswith("?") for q in prompts) / n,
    }


def _overlap(
    train: Sequence[Record],
    eval: Sequence[Record],
    p_tok: list[list[str]],
    rng: np.random.Generator,
) -> dict[str, float]:
    names = (
        "eval_train_tfidf_centroid_cos",
        "eval_train_tfidf_nn_cos_mean",
        "eval_train_tfidf_nn_cos_p90",
        "eval_train_vocab_jaccard",
        "eval_oov_rate",
        "eval_train_answer_jaccard",
        "eval_prompt_exact_overlap",
        "eval_train_length_ratio",
    )
    if not eval:
        return {k: math.nan for k in names}
    e_tok = [tokenize(r["prompt"]) for r in eval]
    tr_vocab = {t for d in p_tok for t in d}
    ev_vocab = {t for d in e_tok for t in d}
    ev_all = [t for d in e_tok for t in d]
    tr_ans = {r["answer"].strip().lower() for r in train}
    ev_ans = {r["answer"].strip().lower() for r in eval}
    tr_prompts = {r["prompt"].strip() for r in train}
    tr_idx = _subsample(len(p_tok), _MAX_TFIDF_TRAIN, rng)
    ev_idx = _subsample(len(e_tok), _MAX_TFIDF_EVAL, rng)
    a, b = tfidf([p_tok[i] for i in tr_idx], [e_tok[i] for i in ev_idx])
    ca, cb = np.asarray(a.mean(axis=0)).ravel(), np.asarray(b.mean(axis=0)).ravel()
    denom = float(np.linalg.norm(ca) * np.linalg.norm(cb))
    nn = np.asarray((b @ a.T).max(axis=1).todense()).ravel() if a.shape[0] else np.zeros(b.shape[0])
    tr_len = np.mean([len(t) for t in p_tok]) or 1.0
    return {
        "eval_train_tfidf_centroid_cos": float(ca @ cb / denom) if denom > 0 else 0.0,
        "eval_train_tfidf_nn_cos_mean": float(nn.mean()),
        "eval_train_tfidf_nn_cos_p90": float(np.percentile(nn, 90)),
        "eval_train_vocab_jaccard": _jaccard(tr_vocab, ev_vocab),
        "eval_oov_rate": sum(t not in tr_vocab for t in ev_all) / max(len(ev_all), 1),
        "eval_train_answer_jaccard": _jaccard(tr_ans, ev_ans),
        "eval_prompt_exact_overlap": sum(r["prompt"].strip() in tr_prompts for r in eval)
        / len(eval),
        "eval_train_length_ratio": float(np.mean([len(t) for t in e_tok]) / tr_len),
    }


def _subsample(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= k else np.sort(rng.choice(n, size=k, replace=False))


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def tfidf(
    docs_a: list[list[str]], docs_b: list[list[str]]
) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """L2-normalized TF-IDF rows of two document sets over their joint vocabulary; smooth IDF
    ``log((1 + N) / (1 + df)) + 1`` with ``N`` counting the documents of both sets."""
    docs = docs_a + docs_b
    vocab: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for i, d in enumerate(docs):
        for t, c in Counter(d).items():
            rows.append(i)
            cols.append(vocab.setdefault(t, len(vocab)))
            vals.append(float(c))
    m = sparse.csr_matrix((vals, (rows, cols)), shape=(len(docs), max(len(vocab), 1)))
    df = np.bincount(np.asarray(cols, dtype=np.int64), minlength=m.shape[1])
    idf = np.log((1 + len(docs)) / (1 + df)) + 1.0
    m = m @ sparse.diags(idf)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    m = sparse.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ m
    m = sparse.csr_matrix(m)
    return m[: len(docs_a)], m[len(docs_a) :]


# --------------------------------------------------------------------------- cache
def content_hash(train: Iterable[Record], eval: Iterable[Record] | None = None) -> str:
    """SHA-256 of the records' canonical JSON (and of the feature definitions' version)."""
    h = hashlib.sha256(f"autopipe-meta/{META_VERSION}\n".encode())
    for name, records in (("train", train), ("eval", eval or [])):
        h.update(f"[{name}]\n".encode())
        for r in records:
            h.update(json.dumps(dict(r), sort_keys=True, ensure_ascii=False).encode())
            h.update(b"\n")
    return h.hexdigest()


def cached_text_meta_features(
    train: Sequence[Record],
    eval: Sequence[Record] | None,
    cache_dir: str | Path,
    seed: int = 0,
) -> dict[str, float]:
    """:func:`text_meta_features`, computed once per content hash and kept as JSON in
    ``cache_dir/<hash>-s<seed>.json``."""
    key = content_hash(train, eval)
    file = Path(cache_dir) / f"{key}-s{seed}.json"
    if file.is_file():
        try:
            d = json.loads(file.read_text())
            return {str(k): float(v) if v is not None else math.nan for k, v in d.items()}
        except (json.JSONDecodeError, TypeError, ValueError):
            file.unlink()  # a torn write; recompute below
    f = text_meta_features(train, eval, seed=seed)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({k: (v if math.isfinite(v) else None) for k, v in f.items()}, sort_keys=True)
    )
    tmp.replace(file)
    return f


# --------------------------------------------------------------------------- filter
@dataclass
class FeatureFilter:
    """Meta-features kept by :func:`select_meta_features`, in order, and why others were dropped."""

    kept: list[str]
    dropped: dict[str, str] = field(default_factory=dict)

    def apply(self, meta: Mapping[str, float]) -> np.ndarray:
        """Values of the kept features (NaN where missing), shape ``(len(kept),)``."""
        return np.array([_finite_or_nan(meta.get(k)) for k in self.kept], dtype=float)

    def to_json(self) -> dict[str, Any]:
        return {"kept": list(self.kept), "dropped": dict(self.dropped)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FeatureFilter:
        return cls(
            [str(k) for k in d["kept"]], {str(k): str(v) for k, v in d.get("dropped", {}).items()}
        )


def _finite_or_nan(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def select_meta_features(
    table: pd.DataFrame,
    min_variance: float = 1e-3,
    max_abs_corr: float = 0.95,
    max_missing: float = 0.5,
) -> FeatureFilter:
    """Variance then correlation filter over ``table`` (one row per task, one column per
    meta-feature): drop columns missing on more than ``max_missing`` of the tasks, columns whose
    variance after min-max scaling is below ``min_variance`` (constant or nearly so), then walk the
    rest by decreasing scaled variance and keep a column only if its absolute Spearman correlation
    with every kept column is below ``max_abs_corr`` (pairwise-complete rows; fewer than 3 common
    rows count as uncorrelated)."""
    dropped: dict[str, str] = {}
    scaled: dict[str, np.ndarray] = {}
    var: dict[str, float] = {}
    n = len(table)
    for c in table.columns:
        x = pd.to_numeric(table[c], errors="coerce").to_numpy(dtype=float)
        x = np.where(np.isfinite(x), x, np.nan)
        ok = ~np.isnan(x)
        if n == 0 or ok.sum() == 0 or 1 - ok.mean() > max_missing:
            dropped[str(c)] = "missing"
            continue
        lo, hi = np.nanmin(x), np.nanmax(x)
        if hi <= lo:
            dropped[str(c)] = "constant"
            continue
        s = (x - lo) / (hi - lo)
        v = float(np.nanvar(s))
        if v < min_variance:
            dropped[str(c)] = "low variance"
            continue
        scaled[str(c)] = s
        var[str(c)] = v
    kept: list[str] = []
    for c in sorted(scaled, key=lambda k: (-var[k], k)):
        for k in kept:
            r = _spearman(scaled[c], scaled[k])
            if abs(r) >= max_abs_corr:
                dropped[c] = f"correlated with {k} ({r:+.2f})"
                break
        else:
            kept.append(c)
    return FeatureFilter(kept, dropped)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < 3:
        return 0.0
    x, y = rankdata(a[ok]), rankdata(b[ok])
    sx, sy = x.std(), y.std()
    if sx == 0 or sy == 0:
        return 0.0
    return float(np.mean((x - x.mean()) * (y - y.mean())) / (sx * sy))
