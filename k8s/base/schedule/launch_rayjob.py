#!/usr/bin/env python3
"""Start a RayJob from one of partita's suspended template RayJobs.

The templates (`kubectl get rayjobs -l partita.io/role=template`) hold a whole job: entrypoint,
runtime env, deadline, retries and the Ray cluster to create for it. They are suspended, so
applying an overlay starts nothing. This copies one into a new RayJob `<template>-<random>`
with `suspend: false`; KubeRay then creates its cluster, submits the entrypoint and deletes the
cluster when the job has finished.

    python k8s/base/schedule/launch_rayjob.py ablation-masks
    python k8s/base/schedule/launch_rayjob.py ablation-masks --args "--preset cpu --dataset jsb-multi --seeds 0 1"
    python k8s/base/schedule/launch_rayjob.py ablation-beta --dry-run      # print the RayJob only

From your machine it uses your kubeconfig; in a pod (the benchmark-refresh CronJob) the pod's
ServiceAccount, which may only read the template and create RayJobs.
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import sys
from pathlib import Path

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_NAMESPACE = "partita"
# Cluster-assigned or tool-written metadata that must not be copied into a new object.
_DROP_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def instantiate(template: dict, args: list[str] | None = None) -> dict:
    """A new, running RayJob from a template RayJob (a dict as the API returns it).

    `args` replaces the entrypoint's arguments after the script, e.g. ["--preset", "cpu"].
    """
    name = template["metadata"]["name"]
    spec = copy.deepcopy(template["spec"])
    spec["suspend"] = False
    if args is not None:
        words = shlex.split(spec["entrypoint"])
        script = next((i for i, word in enumerate(words) if word.endswith(".py")), None)
        if script is None:
            raise ValueError(f"the entrypoint of {name} names no .py script: {spec['entrypoint']!r}")
        spec["entrypoint"] = shlex.join(words[: script + 1] + list(args))
    labels = dict(template["metadata"].get("labels") or {})
    labels.update({"partita.io/role": "run", "partita.io/template": name})
    annotations = {k: v for k, v in (template["metadata"].get("annotations") or {}).items() if k not in _DROP_ANNOTATIONS}
    metadata = {"generateName": f"{name}-", "labels": labels}
    if template["metadata"].get("namespace"):
        metadata["namespace"] = template["metadata"]["namespace"]
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RayJob", "metadata": metadata, "spec": spec}


def _namespace(explicit: str | None) -> str:
    if explicit:
        return explicit
    if IN_CLUSTER_NAMESPACE.is_file():
        return IN_CLUSTER_NAMESPACE.read_text().strip()
    try:
        from kubernetes import config

        _, context = config.list_kube_config_contexts()
        return context.get("context", {}).get("namespace") or DEFAULT_NAMESPACE
    except Exception:  # no kubeconfig: the API call below reports it
        return DEFAULT_NAMESPACE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="start a RayJob from a suspended partita template RayJob")
    parser.add_argument("template", help="template RayJob name: ablation-masks, ablation-beta, property-prediction, benchmark-refresh")
    parser.add_argument("--namespace", "-n", help=f"default: the pod's namespace, else the kubeconfig context's, else {DEFAULT_NAMESPACE}")
    parser.add_argument("--args", help="replace the entrypoint's arguments, e.g. \"--preset cpu --seeds 0 1\"")
    parser.add_argument("--dry-run", action="store_true", help="print the RayJob instead of creating it")
    options = parser.parse_args(argv)

    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError

    namespace = _namespace(options.namespace)
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:
            config.load_kube_config()
    except ConfigException as err:
        print(f"launch_rayjob: no Kubernetes credentials ({err}); set KUBECONFIG or `kubectl config use-context`", file=sys.stderr)
        return 1
    api = client.CustomObjectsApi()
    try:
        template = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, options.template)
    except HTTPError as err:
        print(f"launch_rayjob: cannot reach the Kubernetes API ({err})", file=sys.stderr)
        return 1
    except ApiException as err:
        if err.status == 404:
            print(f"launch_rayjob: no RayJob {options.template!r} in namespace {namespace}; apply an overlay first "
                  "(kubectl apply -k k8s/overlays/dev) or pass --namespace", file=sys.stderr)
        else:
            print(f"launch_rayjob: cannot read RayJob {namespace}/{options.template}: {err.status} {err.reason}", file=sys.stderr)
        return 1
    if (template["metadata"].get("labels") or {}).get("partita.io/role") != "template":
        print(f"launch_rayjob: RayJob {options.template!r} is not a template (label partita.io/role=template)", file=sys.stderr)
        return 1
    job = instantiate(template, shlex.split(options.args) if options.args is not None else None)
    job["metadata"]["namespace"] = namespace
    if options.dry_run:
        import yaml

        print(yaml.safe_dump(job, sort_keys=False), end="")
        return 0
    try:
        created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)
    except HTTPError as err:
        print(f"launch_rayjob: cannot reach the Kubernetes API ({err})", file=sys.stderr)
        return 1
    except ApiException as err:
        print(f"launch_rayjob: cannot create the RayJob: {err.status} {err.reason}: {err.body}", file=sys.stderr)
        return 1
    name = created["metadata"]["name"]
    print(f"created rayjob/{name} in {namespace}: {job['spec']['entrypoint']}")
    print(f"follow it: kubectl -n {namespace} get rayjob {name} -w   (logs: kubectl -n {namespace} logs -f job/{name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
