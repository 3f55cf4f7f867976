"""Text-dataset meta-features against hand-computed values, the content-hash cache and the
variance / correlation filter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autopipe.errors import DataError
from autopipe.history.metafeatures import (
    FeatureFilter,
    cached_text_meta_features,
    content_hash,
    select_meta_features,
    text_meta_features,
    tfidf,
    tokenize,
)

TRAIN = [
    {"prompt": "Is the sky blue?", "answer": "yes"},
    {"prompt": "Is grass red?", "answer": "no"},
    {"prompt": "What is 2 + 3?", "answer": "5"},
    {"prompt": "Pick one: (A) cat (B) dog. Which barks?", "answer": "B"},
]
EVAL = [
    {"prompt": "Is the sea blue?", "answer": "yes"},
    {"prompt": "Is the sky blue?", "answer": "yes"},
]


def test_tokenize_splits_words_and_punctuation() -> None:
    assert tokenize("Is the sky blue?") == ["is", "the", "sky", "blue", "?"]
    assert tokenize("2+3=5.") == ["2", "+", "3", "=", "5", "."]


def test_known_values() -> None:
    f = text_meta_features(TRAIN, EVAL)
    assert f["n_train"] == 4 and f["n_eval"] == 2
    # prompt token counts: 5, 4, 6, 15 (punctuation tokens included)
    assert f["prompt_tokens_mean"] == pytest.approx(7.5)
    assert f["prompt_tokens_max"] == 15
    assert f["answer_tokens_mean"] == 1.0 and f["answer_single_token_frac"] == 1.0
    assert f["answer_yesno_frac"] == 0.5
    assert f["answer_numeric_frac"] == 0.25
    assert f["answer_choice_frac"] == 0.25
    assert f["label_entropy"] == pytest.approx(2.0)  # 4 distinct answers, uniform
    assert f["label_entropy_norm"] == pytest.approx(1.0)
    assert f["prompt_question_frac"] == 1.0
    assert f["eval_prompt_exact_overlap"] == 0.5  # "Is the sky blue?" is in train
    assert f["eval_train_answer_jaccard"] == pytest.approx(1 / 4)  # {yes} vs {yes,no,5,b}
    # eval vocab {is, the, sea, sky, blue, ?}; "sea" is the only eval token not in train
    assert f["eval_oov_rate"] == pytest.approx(1 / 10)
    assert 0 < f["eval_train_tfidf_nn_cos_mean"] <= 1
    assert f["eval_train_tfidf_nn_cos_p90"] == pytest.approx(1.0, abs=0.05)  # the duplicate prompt
    assert all(isinstance(v, float) for v in f.values())


def test_without_eval_overlap_is_nan() -> None:
    f = text_meta_features(TRAIN)
    assert math.isnan(f["eval_train_tfidf_centroid_cos"]) and f["n_eval"] == 0
    assert math.isfinite(f["type_token_ratio"])


def test_bad_records_are_one_line_errors() -> None:
    with pytest.raises(DataError, match=r"train\[1\] must be"):
        text_meta_features([TRAIN[0], {"prompt": "x"}])
    with pytest.raises(DataError, match="at least one"):
        text_meta_features([])


def test_tfidf_rows_are_unit_norm_and_identical_docs_have_cosine_one() -> None:
    a, b = tfidf([["a", "b"], ["c"]], [["a", "b"]])
    norms = np.sqrt(np.asarray(a.multiply(a).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms, 1.0)
    assert (a @ b.T).toarray()[0, 0] == pytest.approx(1.0)
    assert (a @ b.T).toarray()[1, 0] == pytest.approx(0.0)


def test_cache_by_content_hash(tmp_path: Path) -> None:
    f1 = cached_text_meta_features(TRAIN, EVAL, tmp_path)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and files[0].name.startswith(content_hash(TRAIN, EVAL))
    # a second call reads the cache: tamper with it to prove the file is used
    d = json.loads(files[0].read_text())
    d["n_train"] = 99.0
    files[0].write_text(json.dumps(d))
    assert cached_text_meta_features(TRAIN, EVAL, tmp_path)["n_train"] == 99.0
    assert math.isnan(f1["eval_train_length_ratio"]) is False
    # different content, different key
    assert content_hash(TRAIN[:3], EVAL) != content_hash(TRAIN, EVAL)


def test_filter_drops_constant_missing_and_correlated() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=20)
    table = pd.DataFrame(
        {
            "a": a,
            "a_scaled": 3 * a + 1,  # perfectly correlated with a
            "a_monotone": np.exp(a),  # Spearman-correlated with a
            "b": rng.normal(size=20),
            "const": np.ones(20),
            "mostly_missing": [1.0, 2.0] + [np.nan] * 18,
        }
    )
    filt = select_meta_features(table)
    assert set(filt.kept) == {"b", next(k for k in filt.kept if k.startswith("a"))}
    assert len(filt.kept) == 2
    assert filt.dropped["const"] == "constant" and filt.dropped["mostly_missing"] == "missing"
    back = FeatureFilter.from_json(json.loads(json.dumps(filt.to_json())))
    assert back == filt
    v = filt.apply({"b": 2.0})
    assert v.shape == (2,) and np.isnan(v).sum() == 1
