"""The ``autopipe`` command line: the parser and the error handling every command shares. Bad
input exits with code 2 and one line on stderr, without a traceback. Each command group lives in
its own module (:mod:`.job`, :mod:`.history`, :mod:`.prior`, :mod:`.predictor`, :mod:`.bench`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from autopipe.errors import AutoPipeError, one_line


def _quiet_env() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


def build_parser() -> argparse.ArgumentParser:
    from autopipe.cli import bench, history, job, predictor, prior

    p = argparse.ArgumentParser(
        prog="autopipe",
        description="Budget-aware configuration search for SFT -> RL post-training on Ray.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    job.register(sub)
    history.register(sub)
    prior.register(sub)
    predictor.register(sub)
    bench.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_env()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AutoPipeError as e:
        print(f"autopipe: error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("autopipe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
