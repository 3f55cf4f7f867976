"""`autopipe submit`'s one-line errors and what it uploads (a job submitted to a real
`ray start --head` is in tests/tune/test_beside_a_cluster.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.jobs import free_port, run_cli, write_spec


def test_submit_unreachable_address_is_one_line(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml", "x", f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "ray")
    r = run_cli("submit", str(spec), "--address", f"http://127.0.0.1:{free_port()}", timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().startswith("autopipe: error: --address") and "Traceback" not in r.stderr


def test_submit_to_a_host_port_where_nothing_listens_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from autopipe.cli import main

    # HOST:PORT without a scheme: Ray's client would take it for a GCS and wait ~35 s for it
    port = free_port()
    spec = write_spec(tmp_path / "s.yaml", "x", f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "ray")
    assert main(["submit", str(spec), "--address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"autopipe: error: --address 127.0.0.1:{port}: no Ray cluster reachable (nothing "
        f"listens on 127.0.0.1:{port})"
    )


@pytest.mark.parametrize("timeout", ["-5", "0", "nan"])
def test_submit_bad_timeout_is_one_line_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    from autopipe.cli import main

    spec = write_spec(tmp_path / "s.yaml", "x", f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "ray")
    # the address is unreachable: the timeout is checked first, so its error is the one shown
    args = ["submit", str(spec), "--address", "http://127.0.0.1:1", "--wait", "--timeout", timeout]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autopipe: error: --timeout must be a number of seconds > 0"), err


def test_stage_uploads_the_jobs_history(tmp_path: Path) -> None:
    from autopipe.errors import ClusterError
    from autopipe.history.transfer import load_transfer
    from autopipe.spec import load_spec, parse_spec
    from autopipe.tune.submit import STAGED_SPEC, stage

    demo = Path(__file__).parents[2] / "jobs" / "demo.yaml"
    spec = load_spec(demo)
    staging = tmp_path / "staging"
    staging.mkdir()
    staged = load_spec(stage(spec, staging))
    # the run table is copied into the working dir and named relative to the staged spec
    assert staged.history.run_tables == ["history/0/tinypost"]
    assert (staging / "history/0/tinypost/runs.parquet").is_file()
    assert staging / STAGED_SPEC == staged.base_dir / STAGED_SPEC
    # what the cluster's driver does with it: fit the prior from the uploaded copy
    assert load_transfer(staged, staged.to_space()).prior is not None
    data = spec.dump()
    data["history"] = {"prior": "no/such/prior"}
    bad = parse_spec(data, base_dir=demo.parent)
    with pytest.raises(ClusterError, match=r"^history.prior '.*no/such/prior' is not a folder"):
        stage(bad, tmp_path)
