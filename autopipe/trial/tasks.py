"""Datasets of verifiable post-training tasks: built-in synthetic tasks generated deterministically
from a seed, and loaders for local JSONL / parquet files and the PubMedQA PQA-L file; plus the
answer parser and rewards shared by GRPO, DPO and evaluation.

Every dataset has an SFT split, RL prompts and a held-out evaluation split of
``{"prompt", "answer"}`` records. This module does not tokenize, train or import torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopipe.errors import DataError

ANSWER_KINDS = ("number", "choice", "text")
PUBMEDQA_LABELS = ("yes", "no", "maybe")


@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str


@dataclass
class TaskData:
    """A dataset ready for a trial: splits plus how to read an answer."""

    name: str
    train: list[Example]
    rl: list[Example]
    eval: list[Example]
    answer_kind: str = "text"
    choices: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def dataset_id(self) -> str:
        """Content hash of the three splits: the same data gives the same id anywhere."""
        h = hashlib.sha256()
        for split in (self.train, self.rl, self.eval):
            for ex in split:
                h.update(ex.prompt.encode())
                h.update(b"\x00")
                h.update(ex.answer.encode())
                h.update(b"\x01")
            h.update(b"\x02")
        return f"{self.name}-{h.hexdigest()[:12]}"

    def alphabet(self) -> list[str]:
        """Sorted set of characters appearing anywhere (for character-level tokenizers)."""
        chars: set[str] = set()
        for split in (self.train, self.rl, self.eval):
            for ex in split:
                chars.update(ex.prompt)
                chars.update(ex.answer)
        return sorted(chars)

    def to_records(self) -> dict[str, list[dict[str, str]]]:
        return {
            s: [{"prompt": e.prompt, "answer": e.answer} for e in getattr(self, s)]
            for s in ("train", "rl", "eval")
        }


# ---------------------------------------------------------------------------------- answers
_NUM_RE = re.compile(r"-?\d+(?:\.\d+)?")


def completion_text(completion: Any) -> str:
    """The text of a completion as TRL passes it (a string, or a list of chat messages)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def parse_answer(text: str, kind: str = "text", choices: Sequence[str] | None = None) -> str:
    """The final answer in a completion: its first line, normalised by answer kind.

    ``number``: the first number; ``choice``: the first word, lowercased and stripped of
    punctuation, if it is one of ``choices``; ``text``: the stripped first line.
    """
    line = text.strip().split("\n", 1)[0].strip()
    if kind == "number":
        m = _NUM_RE.search(line)
        return m.group(0) if m else ""
    if kind == "choice":
        word = line.split(" ", 1)[0].strip(string.punctuation + " ").lower() if line else ""
        if choices is not None and word not in choices:
            return ""
        return word
    return line


def is_correct(
    completion: str, answer: str, kind: str, choices: Sequence[str] | None = None
) -> bool:
    got = parse_answer(completion, kind, choices)
    want = parse_answer(answer, kind, choices) if kind != "text" else answer.strip()
    return got != "" and got == want


def format_ok(completion: str, kind: str, choices: Sequence[str] | None = None) -> bool:
    """Whether a completion is one well-formed answer line of the right kind."""
    line = completion.strip()
    if not line or "\n" in line:
        return False
    if kind == "number":
        return bool(re.fullmatch(r"-?\d+(?:\.\d+)?", line))
    if kind == "choice":
        return parse_answer(line, kind, choices) != "" and len(line.split()) <= 3
    return len(line) <= 256


def make_reward_funcs(
    kind: str, choices: Sequence[str] | None, format_weight: float
) -> list[Callable[..., list[float]]]:
    """GRPO reward functions: exact match of the parsed answer (1.0) and, if weighted, format."""

    def exact_match(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
        return [
            1.0 if is_correct(completion_text(c), a, kind, choices) else 0.0
            for c, a in zip(completions, answer, strict=True)
        ]

    funcs: list[Callable[..., list[float]]] = [exact_match]
    if format_weight > 0:

        def answer_format(completions: list[Any], **_: Any) -> list[float]:
            return [
                format_weight if format_ok(completion_text(c), kind, choices) else 0.0
                for c in completions
            ]

        funcs.append(answer_format)
    return funcs


def wrong_answer(ex: Example, kind: str, choices: Sequence[str] | None, rng: random.Random) -> str:
    """A plausible wrong answer for a DPO rejected completion."""
    if kind == "choice" and choices:
        others = [c for c in choices if c != ex.answer]
        return rng.choice(others) if others else ex.answer + "?"
    if kind == "number":
        try:
            v = int(ex.answer)
            return str(v + rng.choice([-2, -1, 1, 2, 10, -10]))
        except ValueError:
            return ex.answer + "0"
    s = list(ex.answer)
    if len(s) >= 2:
        i = rng.randrange(len(s) - 1)
        s[i], s[i + 1] = s[i + 1], s[i]
        if "".join(s) != ex.answer:
            return "".join(s)
    return ex.answer + (ex.answer[-1] if ex.answer else "x")


# ---------------------------------------------------------------------------------- built-ins
Generator = Callable[[random.Random], Example]


@dataclass(frozen=True)
class BuiltinTask:
    name: str
    description: str
    make: Generator
    answer_kind: str
    choices: tuple[str, ...] | None = None


def _add(lo: int, hi: int) -> Generator:
    def make(rng: random.Random) -> Example:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        return Example(f"{a}+{b}=", str(a + b))

    return make


def _sort(n_lo: int, n_hi: int) -> Generator:
    def make(rng: random.Random) -> Example:
        xs = [rng.randint(0, 9) for _ in range(rng.randint(n_lo, n_hi))]
        return Example("sort " + "".join(map(str, xs)) + ":", "".join(map(str, sorted(xs))))

    return make


def _compare(rng: random.Random) -> Example:
    # Yes/no/maybe: is a > b? "maybe" when they are equal (a third, rarer class).
    a = rng.randint(0, 30)
    b = a if rng.random() < 0.2 else rng.randint(0, 30)
    ans = "maybe" if a == b else ("yes" if a > b else "no")
    return Example(f"{a}>{b}?", ans)


def _reverse(rng: random.Random) -> Example:
    s = "".join(rng.choice("abcdef") for _ in range(rng.randint(3, 5)))
    return Example(f"rev {s}:", s[::-1])


def _count(rng: random.Random) -> Example:
    s = "".join(rng.choice("ab") for _ in range(rng.randint(4, 9)))
    return Example(f"count a {s}:", str(s.count("a")))


def _parity(rng: random.Random) -> Example:
    bits = "".join(rng.choice("01") for _ in range(rng.randint(4, 9)))
    return Example(f"parity {bits}:", "odd" if bits.count("1") % 2 else "even")


def _choice_task(rng: random.Random) -> Example:
    # Multiple choice with distractors: which option is the largest number?
    opts = rng.sample(range(10, 99), 4)
    letters = "abcd"
    best = letters[opts.index(max(opts))]
    body = " ".join(f"{letter}){v}" for letter, v in zip(letters, opts, strict=True))
    return Example(f"max {body}?", best)


def _sub(rng: random.Random) -> Example:
    # Subtraction with negative answers: a different answer format from addition.
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    return Example(f"{a}-{b}=", str(a - b))


def _shift(rng: random.Random) -> Example:
    # Caesar shift by one over a-h (h wraps to a): a string transformation unlike reversal.
    s = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 6)))
    return Example(f"shift {s}:", "".join("abcdefgh"[("abcdefgh".index(c) + 1) % 8] for c in s))


def _dup(rng: random.Random) -> Example:
    # Double every letter: answers twice as long as the prompt's string (up to 10 characters).
    s = "".join(rng.choice("abcdef") for _ in range(rng.randint(2, 5)))
    return Example(f"dup {s}:", "".join(c + c for c in s))


def _maxd(rng: random.Random) -> Example:
    # The largest digit of a 3-8 digit string: a number answer without arithmetic.
    xs = "".join(rng.choice("0123456789") for _ in range(rng.randint(3, 8)))
    return Example(f"max {xs}:", max(xs))


_YNM: list[Example] = []


def _ynm(rng: random.Random) -> Example:
    # Yes/no/maybe from PubMedQA PQA-L's expert-labelled questions (shortened; see
    # autopipe/trial/data/make_pubmedqa_ynm.py): a noisy-label task whose best score is near the
    # majority class, unlike the clean synthetic ones.
    if not _YNM:
        path = Path(__file__).with_name("data") / "pubmedqa_ynm.jsonl"
        with path.open(encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                _YNM.append(Example(f"q {row['q']}?", row["label"]))
    return rng.choice(_YNM)


TASKS: dict[str, BuiltinTask] = {
    t.name: t
    for t in (
        BuiltinTask("add1", "single-digit addition a+b=", _add(0, 9), "number"),
        BuiltinTask("add2", "addition of numbers up to 19", _add(0, 19), "number"),
        BuiltinTask("sort", "sort 3-5 digits", _sort(3, 5), "text"),
        BuiltinTask(
            "compare",
            "yes/no/maybe: is a > b (maybe when equal)",
            _compare,
            "choice",
            ("yes", "no", "maybe"),
        ),
        BuiltinTask("reverse", "reverse a 3-5 letter string", _reverse, "text"),
        BuiltinTask("count", "count the a's in a string of a/b", _count, "number"),
        BuiltinTask(
            "parity", "parity of a 4-9 bit string (odd/even)", _parity, "choice", ("odd", "even")
        ),
        BuiltinTask(
            "mcq",
            "multiple choice: the option with the largest number",
            _choice_task,
            "choice",
            ("a", "b", "c", "d"),
        ),
        BuiltinTask(
            "sub", "subtraction of numbers up to 20 (answers may be negative)", _sub, "number"
        ),
        BuiltinTask("shift", "shift each letter of a-h by one (h -> a)", _shift, "text"),
        BuiltinTask("dup", "double every letter of a 2-5 letter string", _dup, "text"),
        BuiltinTask("maxd", "the largest digit of a 3-8 digit string", _maxd, "number"),
        BuiltinTask(
            "ynm",
            "yes/no/maybe: PubMedQA questions, shortened, with their expert labels",
            _ynm,
            "choice",
            PUBMEDQA_LABELS,
        ),
    )
}


def make_builtin(name: str, n_train: int, n_rl: int, n_eval: int, seed: int = 0) -> TaskData:
    """Generate a built-in task; evaluation prompts never appear in the train or RL splits."""
    if name not in TASKS:
        raise DataError(f"dataset.task must be one of {sorted(TASKS)}, but got {name!r}")
    task = TASKS[name]
    rng = random.Random(f"{name}:{seed}")
    eval_set: list[Example] = []
    seen: set[str] = set()
    tries = 0
    while len(eval_set) < n_eval and tries < 50 * n_eval:
        ex = task.make(rng)
        tries += 1
        if ex.prompt not in seen:
            seen.add(ex.prompt)
            eval_set.append(ex)
    train: list[Example] = []
    rl: list[Example] = []
    tries = 0
    while (len(train) < n_train or len(rl) < n_rl) and tries < 50 * (n_train + n_rl):
        ex = task.make(rng)
        tries += 1
        if ex.prompt in seen:
            continue
        (train if len(train) < n_train else rl).append(ex)
    if len(train) < n_train or len(rl) < n_rl:
        raise DataError(
            f"dataset.task {name!r} has {len(train)} + {len(rl)} distinct examples for "
            f"dataset.n_train {n_train} + dataset.n_rl {n_rl} after holding out "
            f"dataset.n_eval {n_eval}; lower dataset.n_* to fit"
        )
    return TaskData(name, train, rl, eval_set, task.answer_kind, task.choices)


# ---------------------------------------------------------------------------------- files
def _split(
    name: str,
    where: str,
    records: list[Example],
    n_train: int,
    n_rl: int,
    n_eval: int,
    seed: int,
    kind: str,
    choices: tuple[str, ...] | None,
) -> TaskData:
    if len(records) < 3:
        raise DataError(f"{where} needs at least 3 records, but has {len(records)}")
    rng = random.Random(f"{name}:{seed}")
    order = list(range(len(records)))
    rng.shuffle(order)
    n_ev = min(n_eval, max(1, len(records) // 5))
    ev = [records[i] for i in order[:n_ev]]
    rest = [records[i] for i in order[n_ev:]]
    train = rest[:n_train]
    rl = rest[n_train : n_train + n_rl] or rest[: min(n_rl, len(rest))]
    return TaskData(name, train, rl, ev, kind, choices)


def _infer_kind(answers: list[str]) -> tuple[str, tuple[str, ...] | None]:
    if answers and all(_NUM_RE.fullmatch(a.strip() or "x") for a in answers):
        return "number", None
    words = {a.strip().lower() for a in answers}
    if 1 < len(words) <= 10 and all(len(w.split()) == 1 for w in words):
        return "choice", tuple(sorted(words))
    return "text", None


def load_file(
    path: Path,
    fmt: str | None,
    prompt_field: str,
    answer_field: str,
    n_train: int,
    n_rl: int,
    n_eval: int,
    seed: int,
) -> TaskData:
    """Load a local JSONL / parquet file of prompt/answer records, or a PubMedQA file."""
    if not path.exists():
        raise DataError(f"dataset.path {str(path)!r} does not exist")
    if fmt is None:
        suffix = path.suffix.lower()
        fmt = {".jsonl": "jsonl", ".parquet": "parquet", ".json": "pubmedqa"}.get(suffix)
        if fmt is None:
            raise DataError(
                f"dataset.format must be jsonl, parquet or pubmedqa (cannot tell from the suffix "
                f"{suffix!r}), but got none"
            )
    name = path.stem
    where = f"dataset.path {str(path)!r}"
    if fmt == "pubmedqa":
        return load_pubmedqa(path, n_train, n_rl, n_eval, seed)
    rows: list[dict[str, Any]]
    if fmt == "jsonl":
        rows = []
        with path.open(encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{where}: line {i} is not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(
                        f"{where}: line {i} must be a JSON object, but got {type(row).__name__}"
                    )
                rows.append(row)
    else:
        import pandas as pd

        try:
            rows = pd.read_parquet(path).to_dict("records")
        except (OSError, ValueError) as e:
            raise DataError(f"{where}: cannot read parquet ({e})") from None
    if not rows:
        raise DataError(f"{where}: no records (the file is empty)")
    records = []
    for i, row in enumerate(rows, 1):
        for fld, key in (
            (prompt_field, "dataset.prompt_field"),
            (answer_field, "dataset.answer_field"),
        ):
            if fld not in row or row[fld] is None:
                raise DataError(
                    f"{where}: record {i} has no field {fld!r} ({key}); its fields are "
                    f"{sorted(row)[:8]}"
                )
        records.append(Example(str(row[prompt_field]), str(row[answer_field])))
    kind, choices = _infer_kind([r.answer for r in records])
    return _split(name, where, records, n_train, n_rl, n_eval, seed, kind, choices)


def load_pubmedqa(path: Path, n_train: int, n_rl: int, n_eval: int, seed: int) -> TaskData:
    """PubMedQA PQA-L ``ori_pqal.json``: question (+ the abstract's conclusion-free contexts
    left out to keep prompts short) -> yes/no/maybe. The official 500-question test split
    (``test_ground_truth.json`` beside the file, if present) is the evaluation split."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a PubMedQA JSON file ({e})") from None
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: PubMedQA file must map PMID -> record, but got {type(data).__name__}"
        )
    test_ids: set[str] = set()
    gt = path.parent / "test_ground_truth.json"
    if gt.exists():
        test_ids = set(json.loads(gt.read_text(encoding="utf-8")))
    pool, test = [], []
    for pmid, rec in data.items():
        if not isinstance(rec, dict) or "QUESTION" not in rec or "final_decision" not in rec:
            raise DataError(f"{path}: record {pmid} needs QUESTION and final_decision")
        label = str(rec["final_decision"]).strip().lower()
        if label not in PUBMEDQA_LABELS:
            raise DataError(
                f"{path}: record {pmid} final_decision must be yes/no/maybe, got {label!r}"
            )
        ex = Example(f"Question: {rec['QUESTION']}\nAnswer (yes, no or maybe):", label)
        (test if pmid in test_ids else pool).append(ex)
    if not test:
        where = f"dataset.path {str(path)!r}"
        return _split(
            "pubmedqa", where, pool, n_train, n_rl, n_eval, seed, "choice", PUBMEDQA_LABELS
        )
    rng = random.Random(f"pubmedqa:{seed}")
    rng.shuffle(pool)
    train = pool[:n_train]
    rl = pool[n_train : n_train + n_rl] or pool[:n_rl]
    return TaskData("pubmedqa", train, rl, test[:n_eval], "choice", PUBMEDQA_LABELS)


def load_dataset(ds: Any, base_dir: Path | None = None) -> TaskData:
    """Build the :class:`TaskData` a :class:`autopipe.spec.DatasetSpec` describes."""
    if ds.task is not None:
        return make_builtin(ds.task, ds.n_train, ds.n_rl, ds.n_eval, ds.seed)
    p = Path(os.path.expandvars(os.path.expanduser(ds.path)))  # as JobSpec.resolve
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return load_file(
        p, ds.format, ds.prompt_field, ds.answer_field, ds.n_train, ds.n_rl, ds.n_eval, ds.seed
    )
