"""The cluster path, checked offline: Kustomize overlays, KubeRay objects, image, MLflow wiring.

Each overlay is rendered with `kubectl kustomize`; built-in kinds are validated with
kubernetes-validate (strict: unknown fields are errors), RayCluster / RayJob / RayCronJob with
the KubeRay v1.7 CRD schemas in ../shared/reference/kuberay-crds (made strict the same way).
The rest checks what a schema cannot: hardening of every pod, no credentials, the wiring between
Ray pods, shared storage and MLflow, the schedule, and that every RayJob entrypoint names an
experiment script whose options parse.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import tomllib
from argparse import ArgumentParser
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.entry_points import script_module

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
DOCKERFILE = K8S / "image" / "Dockerfile"
LAUNCHER = K8S / "base" / "schedule" / "launch_rayjob.py"
CRDS = Path(__file__).parents[2] / "shared/reference/kuberay-crds"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml", "RayCronJob": "ray.io_raycronjobs.yaml"}
OVERLAYS = ("dev", "gpu")
K8S_VERSION = "1.33"  # a version kubernetes-validate ships offline schemas for; KubeRay v1.7 supports it
# a template RayJob per experiment script, named after it
TEMPLATES = {script.stem.replace("_", "-") for script in (REPO / "experiments").glob("*.py")}
RAY_ENV = {"PARTITA_HOME": "/mnt/partita", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|API_?KEY", re.I)

pytestmark = pytest.mark.timeout(120)


# --------------------------------------------------------------------------- rendering


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (Debian package kubernetes-client; `make install` adds it)")
    return kubectl


@functools.cache
def _render(target: str) -> tuple[dict, ...]:
    """`kubectl kustomize` of an overlay ("dev", "gpu") or "<overlay>+<component>"."""
    kubectl = _kubectl()
    overlay, _, component = target.partition("+")
    with tempfile.TemporaryDirectory(prefix="partita-kustomize-") as work:
        path = K8S / "overlays" / overlay
        if component:
            # the overlay with a component added, as a user does it (kustomize wants relative paths)
            rel = lambda p: os.path.relpath(p, work)  # noqa: E731
            Path(work, "kustomization.yaml").write_text(
                f"resources: [{rel(path)}]\ncomponents: [{rel(K8S / 'components' / component)}]\n"
            )
            path = Path(work)
        run = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"kubectl kustomize {target} failed:\n{run.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(run.stdout) if doc)


@pytest.fixture(params=OVERLAYS)
def overlay(request) -> str:
    return request.param


def _one(docs, kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _of_kind(docs, kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _cluster_specs(doc: dict) -> list[tuple[str, dict]]:
    """The Ray cluster specs an object describes."""
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    if doc["kind"] == "RayCluster":
        return [(where, doc["spec"])]
    if doc["kind"] == "RayJob" and doc["spec"].get("rayClusterSpec"):
        return [(where, doc["spec"]["rayClusterSpec"])]
    if doc["kind"] == "RayCronJob" and doc["spec"]["jobTemplate"].get("rayClusterSpec"):
        return [(where, doc["spec"]["jobTemplate"]["rayClusterSpec"])]
    return []


def _ray_pods(doc: dict) -> list[tuple[str, dict]]:
    """(where, pod template) of every Ray head and worker an object creates."""
    pods = []
    for where, spec in _cluster_specs(doc):
        pods.append((f"{where} head", spec["headGroupSpec"]["template"]))
        pods += [(f"{where} group {g['groupName']}", g["template"]) for g in spec.get("workerGroupSpecs", [])]
    return pods


def _pod_templates(doc: dict) -> list[tuple[str, dict]]:
    """(where, pod template) of every pod an object creates, Ray or not."""
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return [(where, spec["template"])]
    if kind == "CronJob":
        return [(where, spec["jobTemplate"]["spec"]["template"])]
    if kind == "Pod":
        return [(where, {"metadata": doc["metadata"], "spec": spec})]
    pods = _ray_pods(doc)
    job = spec if kind == "RayJob" else spec.get("jobTemplate") if kind == "RayCronJob" else None
    if job is not None and job.get("submissionMode", "K8sJobMode") == "K8sJobMode":
        pods.append((f"{where} submitter", job.get("submitterPodTemplate") or {}))
    return pods


# --------------------------------------------------------------------------- schemas


def _strict(schema):
    """A CRD openAPIV3Schema as JSON Schema in which unknown fields are errors."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        schema.get("type") == "object"
        and "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def crd_validators():
    if not CRDS.is_dir():
        pytest.skip(f"the KubeRay CRDs are absent ({CRDS}); they lie in ../shared on the project's machines")
    import jsonschema

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    validators = {}
    for kind, name in CRD_FILES.items():
        crd = yaml.load((CRDS / name).read_text(), Loader=loader)
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        schema = _strict(version["schema"]["openAPIV3Schema"])
        validators[kind] = jsonschema.Draft7Validator(schema)
    return validators


def _crd_errors(validators, doc: dict) -> list[str]:
    return [
        f"{doc['kind']}/{doc['metadata'].get('name') or doc['metadata'].get('generateName')}: "
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validators[doc["kind"]].iter_errors(doc)
    ]


def test_builtin_kinds_are_valid(overlay):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = _render(overlay)
    errors = []
    for doc in docs:
        if doc["apiVersion"].startswith("ray.io/"):
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, err.path))}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError as err:
            errors.append(err.message)
    assert not errors, "\n".join(errors)
    assert {"Deployment", "StatefulSet", "Service", "PersistentVolumeClaim", "NetworkPolicy", "CronJob", "Role"} <= {
        d["kind"] for d in docs
    }


def test_kuberay_objects_match_the_crds(overlay, crd_validators):
    docs = _render(overlay)
    ray_docs = [d for d in docs if d["apiVersion"].startswith("ray.io/")]
    assert {d["kind"] for d in ray_docs} == {"RayCluster", "RayJob", "RayCronJob"}
    assert all(d["apiVersion"] == "ray.io/v1" for d in ray_docs)
    errors = [e for d in ray_docs for e in _crd_errors(crd_validators, d)]
    assert not errors, "\n".join(errors)


def test_crd_check_rejects_unknown_and_mistyped_fields(crd_validators):
    cluster = copy.deepcopy(_one(_render("gpu"), "RayCluster", "partita"))
    cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    cluster["spec"]["workerGroupSpecs"][0]["replicas"] = "two"
    cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # must be a string
    messages = "\n".join(_crd_errors(crd_validators, cluster))
    assert "resourcez" in messages and "'two'" in messages and "num-cpus" in messages


# --------------------------------------------------------------------------- pods


def _pod_problems(where: str, template: dict) -> list[str]:
    spec = template.get("spec")
    if not spec:
        return [f"{where}: no pod template (KubeRay's default has no securityContext)"]
    problems = []
    pod_security = spec.get("securityContext") or {}
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        problems.append(f"{where}: shares a host namespace")
    problems += [f"{where}: hostPath volume {v['name']}" for v in spec.get("volumes", []) if "hostPath" in v]
    containers = [("container", c) for c in spec.get("containers", [])] + [("init container", c) for c in spec.get("initContainers", [])]
    if not containers:
        problems.append(f"{where}: no containers")
    for what, container in containers:
        name = f"{where} {what} {container['name']}"
        security = container.get("securityContext") or {}
        if not (security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True):
            problems.append(f"{name}: runAsNonRoot is not true")
        if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as uid 0")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if security.get("privileged"):
            problems.append(f"{name}: privileged")
        if "ALL" not in (security.get("capabilities") or {}).get("drop", []):
            problems.append(f"{name}: capabilities not dropped")
        if (security.get("seccompProfile") or pod_security.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: no seccomp profile")
        resources = container.get("resources") or {}
        for bound in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(resources.get(bound) or {})
            if missing:
                problems.append(f"{name}: no {bound} for {', '.join(sorted(missing))}")
    return problems


def test_every_pod_is_hardened_and_bounded(overlay):
    docs = _render(overlay)
    pods = [pod for doc in docs for pod in _pod_templates(doc)]
    assert len(pods) >= 20  # 4 RayJobs + RayCronJob + RayCluster (3-4 pods each), MLflow, Postgres, CronJob
    problems = [p for where, template in pods for p in _pod_problems(where, template)]
    # the autoscaler sidecar KubeRay adds to every head
    for doc in docs:
        for where, spec in _cluster_specs(doc):
            if spec.get("enableInTreeAutoscaling"):
                options = spec.get("autoscalerOptions") or {}
                sidecar = {"name": "autoscaler", **{k: options[k] for k in ("securityContext", "resources") if k in options}}
                head = spec["headGroupSpec"]["template"]
                problems += _pod_problems(f"{where} autoscaler", {"spec": {**head["spec"], "containers": [sidecar], "initContainers": []}})
    assert not problems, "\n".join(problems)


def test_pod_check_catches_a_root_container():
    template = copy.deepcopy(_one(_render("dev"), "Deployment", "mlflow")["spec"]["template"])
    template["spec"]["containers"][0]["securityContext"] = {"runAsUser": 0}
    del template["spec"]["containers"][0]["resources"]["limits"]
    problems = "\n".join(_pod_problems("mlflow", template))
    assert "uid 0" in problems and "allowPrivilegeEscalation" in problems and "no limits" in problems


def test_no_credentials_in_manifests(overlay):
    docs = _render(overlay)
    for secret in _of_kind(docs, "Secret"):
        assert not secret.get("data") and not secret.get("stringData"), f"Secret {secret['metadata']['name']} holds literal values"
    literal = []
    for doc in docs:
        for where, template in _pod_templates(doc):
            for container in template.get("spec", {}).get("containers", []):
                for env in container.get("env", []):
                    if SECRET_NAME.search(env["name"]) and "value" in env:
                        literal.append(f"{where} {container['name']}: {env['name']} has a literal value")
    assert not literal, "\n".join(literal)
    text = yaml.safe_dump_all(docs)
    assert not re.search(r"[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s@'\"]+@", text), "a URI with credentials in it"
    # what the pods expect from the Secret the README has you create
    refs = {
        (env["valueFrom"]["secretKeyRef"]["name"], env["valueFrom"]["secretKeyRef"]["key"])
        for doc in docs
        for _, template in _pod_templates(doc)
        for container in template.get("spec", {}).get("containers", [])
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert refs == {("mlflow-postgres", "username"), ("mlflow-postgres", "password")}
    readme = (K8S / "README.md").read_text()
    assert "kubectl -n partita create secret generic mlflow-postgres" in readme
    for _, key in refs:
        assert f"--from-literal={key}=" in readme


# --------------------------------------------------------------------------- Ray cluster


def test_ray_pods_share_storage_and_reach_mlflow(overlay):
    docs = _render(overlay)
    claims = {d["metadata"]["name"]: d for d in _of_kind(docs, "PersistentVolumeClaim")}
    pods = [pod for doc in docs for pod in _ray_pods(doc)]
    assert len(pods) >= 10
    for where, template in pods:
        spec = template["spec"]
        container = spec["containers"][0]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert {k: env.get(k) for k in RAY_ENV} == RAY_ENV, where
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volume = next(v for v in spec["volumes"] if v["name"] == mounts[RAY_ENV["PARTITA_HOME"]])
        assert volume["persistentVolumeClaim"]["claimName"] in claims, where
        assert template["metadata"]["labels"].get("partita.io/mlflow-client") == "true", where
    shared = claims["partita-shared"]
    assert shared["spec"]["accessModes"] == (["ReadWriteOnce"] if overlay == "dev" else ["ReadWriteMany"])

    # MLFLOW_TRACKING_URI names a Service that reaches the MLflow server's port
    uri = urlparse(RAY_ENV["MLFLOW_TRACKING_URI"])
    service = _one(docs, "Service", uri.hostname)
    port = next(p for p in service["spec"]["ports"] if p["port"] == uri.port)
    server = next(d for d in _of_kind(docs, "Deployment") if _selects(service["spec"]["selector"], d["spec"]["template"]))
    container = server["spec"]["template"]["spec"]["containers"][0]
    container_port = next(p for p in container["ports"] if port["targetPort"] in (p.get("name"), p["containerPort"]))
    assert f"--port={container_port['containerPort']}" in container["args"]
    assert "--host=0.0.0.0" in container["args"]
    assert any(a.startswith("--artifacts-destination=") for a in container["args"]), "artifacts must be proxied"


def test_cluster_shape(overlay):
    docs = _render(overlay)
    pyproject_ray = _pyproject_requirement("ray")
    for doc in docs:
        for where, spec in _cluster_specs(doc):
            assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", f"{where}: work scheduled on the head"
            assert Version(spec["rayVersion"]) in pyproject_ray.specifier, f"{where}: rayVersion {spec['rayVersion']}"
            if (spec.get("authOptions") or {}).get("mode") == "token":
                assert Version(spec["rayVersion"]) >= Version("2.52.0"), "KubeRay token auth needs Ray >= 2.52"
            assert spec.get("enableInTreeAutoscaling") is True
            groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
            for group in groups.values():
                assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"], f"{where} {group['groupName']}"
                assert not ({"num-cpus", "num-gpus", "memory", "resources"} & set(group["rayStartParams"]) and group.get("resources"))
            assert "cpu" in groups and not _gpus(groups["cpu"]), f"{where}: the synthesis group has no GPUs"
            if overlay == "dev":
                assert set(groups) == {"cpu"}, f"{where}: dev is CPU-only"
            else:
                gpu = groups["gpu"]
                assert _gpus(gpu) >= 1 and (gpu["replicas"], gpu["minReplicas"]) == (0, 0) and gpu["maxReplicas"] >= 1
                tolerations = gpu["template"]["spec"].get("tolerations", [])
                assert any(t["key"] == "nvidia.com/gpu" and t.get("effect") == "NoSchedule" for t in tolerations)
                assert gpu["template"]["spec"]["containers"][0]["image"].split("/")[-1].startswith("partita-gpu:")
    if overlay == "dev":
        assert "nvidia.com/gpu" not in yaml.safe_dump_all(docs)


def _gpus(group: dict) -> int:
    limits = group["template"]["spec"]["containers"][0]["resources"].get("limits", {})
    return int(limits.get("nvidia.com/gpu", 0))


# --------------------------------------------------------------------------- jobs and schedule


def test_template_rayjobs(overlay):
    docs = _render(overlay)
    cluster = _one(docs, "RayCluster", "partita")
    jobs = {d["metadata"]["name"]: d for d in _of_kind(docs, "RayJob")}
    assert set(jobs) == TEMPLATES
    workdir = _dockerfile_workdir()
    for name, job in jobs.items():
        spec = job["spec"]
        assert job["metadata"]["labels"]["partita.io/role"] == "template"
        assert spec["suspend"] is True, f"{name}: applying the overlay must not start it"
        assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0, name
        assert spec["activeDeadlineSeconds"] > 0 and spec["backoffLimit"] >= 0, name
        runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
        assert isinstance(runtime_env, dict) and runtime_env["working_dir"] == workdir, name
        assert spec["rayClusterSpec"] == cluster["spec"], f"{name}: its cluster is not the RayCluster's (replacements)"
        assert spec["submitterPodTemplate"] == jobs["ablation-masks"]["spec"]["submitterPodTemplate"], name
        assert len(name) <= 41, f"{name}: launched copies get 6 more characters; KubeRay allows 47"
    preset = "cpu" if overlay == "dev" else "paper"
    assert jobs["ablation-masks"]["spec"]["entrypoint"] == f"python experiments/ablation_masks.py --preset {preset} --dataset jsb-multi"
    for name, job in jobs.items():  # each runs its own script, at the overlay's scale
        words = shlex.split(job["spec"]["entrypoint"])
        assert words[1] == f"experiments/{name.replace('-', '_')}.py", name
        assert name == "benchmark-refresh" or words[words.index("--preset") + 1] == preset, name


@pytest.mark.parametrize("target", ["gpu", "dev+raycronjob"])
def test_benchmark_refresh_is_scheduled_exactly_once(target):
    docs = _render(target)
    template = _one(docs, "RayJob", "benchmark-refresh")["spec"]
    cron = _one(docs, "RayCronJob", "benchmark-refresh")["spec"]
    fallback = _one(docs, "CronJob", "benchmark-refresh-launcher")["spec"]
    assert cron["jobTemplate"] == {k: v for k, v in template.items() if k != "suspend"}
    assert (cron["schedule"], cron.get("timeZone")) == (fallback["schedule"], fallback.get("timeZone"))
    active = [name for name, spec in (("RayCronJob", cron), ("CronJob", fallback)) if not spec.get("suspend", False)]
    assert active == (["RayCronJob"] if target.endswith("+raycronjob") else ["CronJob"])


def test_fallback_cronjob_may_only_read_the_template_and_create_rayjobs(overlay):
    docs = _render(overlay)
    pod = _one(docs, "CronJob", "benchmark-refresh-launcher")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    assert command[:2] == ["python", "/opt/launcher/launch_rayjob.py"]
    template = command[2]
    assert _one(docs, "RayJob", template)["metadata"]["labels"]["partita.io/role"] == "template"
    # the script it runs is the one in the repository
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/opt/launcher")
    config_map = next(v for v in pod["volumes"] if v["name"] == mount["name"])["configMap"]["name"]
    assert _one(docs, "ConfigMap", config_map)["data"]["launch_rayjob.py"] == LAUNCHER.read_text()
    # RBAC: the pod's ServiceAccount is bound to a Role allowing get of the template and create
    account = pod["serviceAccountName"]
    assert _one(docs, "ServiceAccount", account)
    bindings = [b for b in _of_kind(docs, "RoleBinding") if any(s["kind"] == "ServiceAccount" and s["name"] == account for s in b["subjects"])]
    assert len(bindings) == 1 and bindings[0]["roleRef"]["kind"] == "Role"
    assert not [b for b in _of_kind(docs, "ClusterRoleBinding") if any(s.get("name") == account for s in b["subjects"])]
    rules = _one(docs, "Role", bindings[0]["roleRef"]["name"])["rules"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {("ray.io", "rayjobs", "get"), ("ray.io", "rayjobs", "create")}
    gets = [rule for rule in rules if "get" in rule["verbs"]]
    assert all(template in rule.get("resourceNames", [template]) for rule in gets)


def test_launcher_makes_a_valid_running_rayjob(crd_validators):
    launcher = script_module(LAUNCHER)
    template = _one(_render("gpu"), "RayJob", "ablation-masks")
    template = copy.deepcopy(template)
    template["metadata"].update({"uid": "x", "resourceVersion": "1", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}})
    template["status"] = {"jobDeploymentStatus": "Suspended"}
    job = launcher.instantiate(template)
    assert not _crd_errors(crd_validators, job)
    assert job["spec"]["suspend"] is False and "status" not in job
    assert job["metadata"] == {
        "generateName": "ablation-masks-",
        "namespace": "partita",
        "labels": {"app.kubernetes.io/part-of": "partita", "partita.io/role": "run", "partita.io/template": "ablation-masks"},
    }
    assert {k: v for k, v in job["spec"].items() if k != "suspend"} == {k: v for k, v in template["spec"].items() if k != "suspend"}
    assert template["spec"]["suspend"] is True  # the template is not modified
    rerun = launcher.instantiate(template, ["--preset", "smoke", "--seeds", "0", "1"])
    assert rerun["spec"]["entrypoint"] == "python experiments/ablation_masks.py --preset smoke --seeds 0 1"


def test_entrypoints_name_experiment_scripts_whose_options_parse():
    """Every RayJob / RayCronJob entrypoint: `python experiments/<script>.py ARGS` where the script
    exists and `build_parser().parse_args(ARGS)` accepts ARGS."""
    entrypoints = sorted(
        {
            doc["spec"]["entrypoint"] if doc["kind"] == "RayJob" else doc["spec"]["jobTemplate"]["entrypoint"]
            for overlay in OVERLAYS
            for doc in _render(overlay)
            if doc["kind"] in ("RayJob", "RayCronJob")
        }
    )
    scripts = {shlex.split(e)[1] for e in entrypoints}
    assert scripts == {f"experiments/{script.name}" for script in (REPO / "experiments").glob("*.py")}  # every script has its RayJob
    failures = []
    for entrypoint in entrypoints:
        words = shlex.split(entrypoint)
        if words[0] != "python" or not words[1].startswith("experiments/") or not words[1].endswith(".py"):
            failures.append(f"{entrypoint!r}: not `python experiments/<script>.py ...`")
            continue
        script = REPO / words[1]
        if not script.is_file():
            failures.append(f"{entrypoint!r}: {words[1]} does not exist")
            continue
        try:
            module = script_module(script)
            parser = module.build_parser()
        except Exception as err:  # noqa: BLE001 - report every script's problem at once
            failures.append(f"{entrypoint!r}: cannot build the parser of {words[1]}: {type(err).__name__}: {err}")
            continue
        if not isinstance(parser, ArgumentParser):
            failures.append(f"{entrypoint!r}: build_parser() returned {type(parser).__name__}")
            continue
        try:
            options = parser.parse_args(words[2:])
        except SystemExit:
            failures.append(f"{entrypoint!r}: {words[1]} rejects its arguments {words[2:]}")
            continue
        if "--preset" in words:
            preset = words[words.index("--preset") + 1]
            if getattr(options, "preset", None) != preset:
                failures.append(f"{entrypoint!r}: --preset parsed as {getattr(options, 'preset', None)!r}")
    assert not failures, "\n".join(failures)




# --------------------------------------------------------------------------- network policy


def _selects(selector: dict, template: dict) -> bool:
    """Whether a label selector (NetworkPolicy podSelector, or a Service's plain map) picks a pod template."""
    if "matchLabels" in selector or "matchExpressions" in selector:
        assert not selector.get("matchExpressions"), "matchExpressions are not evaluated here"
        selector = selector.get("matchLabels", {})
    labels = (template.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in selector.items())


def _admitted(docs, target: dict, port: int) -> set[str]:
    """Which pod templates of the namespace NetworkPolicies admit to `target` on `port`."""
    policies = [p for p in _of_kind(docs, "NetworkPolicy") if _selects(p["spec"]["podSelector"], target)]
    assert policies, "no NetworkPolicy selects the pod: everything may reach it"
    assert all("Ingress" in p["spec"]["policyTypes"] for p in policies)
    pods = [pod for doc in docs for pod in _pod_templates(doc)]
    admitted = set()
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            if rule.get("ports") and not any(p.get("port") == port for p in rule["ports"]):
                continue
            assert rule.get("from"), f"NetworkPolicy {policy['metadata']['name']} admits every source"
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, f"NetworkPolicy {policy['metadata']['name']} admits {set(peer)}"
                admitted |= {where for where, template in pods if _selects(peer["podSelector"], template)}
    return admitted


def test_only_ray_pods_reach_mlflow_and_only_mlflow_reaches_postgres(overlay):
    docs = _render(overlay)
    ray_pods = {where for doc in docs for where, _ in _ray_pods(doc)}
    mlflow = _one(docs, "Deployment", "mlflow")["spec"]["template"]
    assert _admitted(docs, mlflow, 5000) == ray_pods
    postgres = _one(docs, "StatefulSet", "mlflow-postgres")["spec"]["template"]
    assert _admitted(docs, postgres, 5432) == {"Deployment/mlflow"}


# --------------------------------------------------------------------------- image and configuration


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def _expand(text: str, args: dict[str, str]) -> str:
    def one(match):
        name, op, word = match.group(1), match.group(2), match.group(3)
        value = args.get(name, "")
        if op == ":+":
            return word if value else ""
        if op == ":-":
            return value or word
        return value

    return re.sub(r"\$\{(\w+)(?:(:[+-])([^}]*))?\}", one, text)


def _dockerfile_workdir() -> str:
    return [arg for op, arg in _dockerfile_instructions() if op == "WORKDIR"][-1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _pyproject_requirement(name: str) -> Requirement:
    return next(Requirement(r) for r in _pyproject()["project"]["dependencies"] if Requirement(r).name == name)


def test_dockerfile_copies_what_exists_and_matches_the_python_pins():
    instructions = _dockerfile_instructions()
    pre_from = {}
    for op, arg in instructions:
        if op == "FROM":
            base = arg
            break
        if op == "ARG":
            name, _, default = arg.partition("=")
            pre_from[name] = default
    pyproject = _pyproject()
    python_spec = SpecifierSet(pyproject["project"]["requires-python"])
    ray = _pyproject_requirement("ray")
    for variant, args in (("cpu", {}), ("gpu", {"GPU": "1"})):
        image = _expand(base, {**pre_from, **args})
        match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)(-gpu)?", image)
        assert match, f"{variant} base image {image!r} is not a rayproject/ray release tag"
        assert Version(match[1]) in ray.specifier, f"{image}: pyproject pins ray{ray.specifier}"
        assert Version(f"{match[2]}.{match[3]}") in python_spec, f"{image}: pyproject requires Python {python_spec}"
        assert bool(match[4]) == (variant == "gpu"), image

    copied = []
    for op, arg in instructions:
        if op in ("COPY", "ADD"):
            words = [w for w in shlex.split(arg) if not w.startswith("--")]
            copied += words[:-1]
    missing = [src for src in copied if not (REPO / src).exists()]
    assert not missing, f"the Dockerfile copies what does not exist: {missing}"
    copied_top = {Path(src).parts[0] for src in copied}
    needed = {"pyproject.toml", pyproject["project"]["readme"], "experiments"}
    needed |= {pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert needed <= copied_top, f"pip install . needs {sorted(needed - copied_top)}"

    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    assert re.search(r"pip install\b[^&]*\s\.(\s|$)", runs) and not re.search(r"pip install[^&]*(-e|--editable)\b", runs)
    for package in ("libfluidsynth3", "fluid-soundfont-gm", "timgm6mb-soundfont"):
        assert package in runs
    assert [arg for op, arg in instructions if op == "USER"][-1] not in ("root", "0")


def test_mlflow_config_matches_the_deployments(monkeypatch, tmp_path):
    """mlflow/server.yaml describes both servers; the code and the manifests must agree with it."""
    from orchestration import mlflow_server

    config = yaml.safe_load((REPO / "mlflow" / "server.yaml").read_text())
    monkeypatch.setenv("PARTITA_HOME", str(tmp_path))
    home = str(tmp_path.resolve())
    local = config["local"]
    command = mlflow_server.server_command()
    flag = lambda cmd, name: cmd[cmd.index(name) + 1]  # noqa: E731
    assert flag(command, "--host") == local["host"] and int(flag(command, "--port")) == local["port"]
    assert flag(command, "--backend-store-uri") == local["backend_store_uri"].replace("$PARTITA_HOME", home)
    assert flag(command, "--artifacts-destination") == local["artifacts_destination"].replace("$PARTITA_HOME", home)
    assert local["tracking_uri"] == mlflow_server.client_uri(local["host"], local["port"])

    cluster = config["cluster"]
    docs = _render("gpu")
    server = _one(docs, "Deployment", cluster["deployment"])["spec"]["template"]["spec"]
    container = server["containers"][0]
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    assert container["image"] == cluster["image"]
    assert args["backend-store-uri"] == cluster["backend_store_uri"]
    assert args["artifacts-destination"] == cluster["artifacts_destination"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == cluster["artifacts_destination"])
    volume = next(v for v in server["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["claimName"] == cluster["artifacts_claim"]
    assert cluster["tracking_uri"] == RAY_ENV["MLFLOW_TRACKING_URI"]
    assert {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})} == {
        "PGUSER": cluster["credentials_secret"],
        "PGPASSWORD": cluster["credentials_secret"],
    }


def test_readme_documents_the_raycronjob_feature_gate():
    readme = (K8S / "README.md").read_text()
    assert "## Running on Kubernetes" in readme
    assert "RayCronJob" in readme and "feature gate" in readme.lower()
    values = yaml.safe_load((K8S / "kuberay-operator-values.yaml").read_text())
    assert {"name": "RayCronJob", "enabled": True} in values["featureGates"]
    assert "kubectl apply -k k8s/overlays/dev" in readme and "port-forward" in readme
