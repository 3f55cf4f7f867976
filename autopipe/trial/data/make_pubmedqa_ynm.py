"""Build ``pubmedqa_ynm.jsonl`` (the built-in task ``ynm``) from PubMedQA PQA-L's ``ori_pqal.json``.

Each record keeps the PMID, the question shortened to what a character-level tiny model can read
(lowercase letters and spaces, at most 24 characters) and the expert label yes/no/maybe.
PubMedQA is MIT-licensed (Jin et al., 2019; see LICENSE_PUBMEDQA.txt beside this file).

    python autopipe/trial/data/make_pubmedqa_ynm.py ../shared/data/pubmedqa/ori_pqal.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

MAX_CHARS = 24


def shorten(question: str) -> str:
    text = re.sub(r"[^a-z ]+", " ", question.lower())
    return re.sub(r" +", " ", text).strip()[:MAX_CHARS].strip()


def main(src: str, out: str | None = None) -> None:
    data = json.loads(Path(src).read_text(encoding="utf-8"))
    dest = Path(out) if out else Path(__file__).with_name("pubmedqa_ynm.jsonl")
    with dest.open("w", encoding="utf-8") as f:
        for pmid in sorted(data):
            rec = data[pmid]
            row = {"pmid": pmid, "q": shorten(rec["QUESTION"]), "label": rec["final_decision"]}
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
