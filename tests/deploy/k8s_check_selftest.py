#!/usr/bin/env python3
"""deploy/tools/k8s_check.py must reject broken manifests, or its passing the real ones proves
nothing: render the overlays, check they pass, then break them one way at a time and check
that each break is reported with the expected message."""
import copy
import os
import subprocess
import sys

root = os.environ["AHA_SOURCE_ROOT"]
sys.path.insert(0, os.path.join(root, "deploy", "tools"))
import k8s_check  # noqa: E402
import yaml  # noqa: E402


def render(d):
    r = subprocess.run(["kubectl", "kustomize", os.path.join(root, d)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("kubectl kustomize %s failed: %s" % (d, r.stderr))
    return [x for x in yaml.safe_load_all(r.stdout) if x]


def find(docs, kind, name):
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name][0]


def container(docs, kind, name):
    return find(docs, kind, name)["spec"]["template"]["spec"]["containers"][0]


def set_(f):
    def run(docs):
        f(docs)
        return docs
    return run


def drop(kind, name):
    def f(docs):
        docs.remove(find(docs, kind, name))
    return f


gpu = render("deploy/k8s/overlays/gpu")
demo = render("deploy/k8s/overlays/cpu-demo")
failures = 0
for label, docs, ext in (("gpu", gpu, ["aha-auth"]), ("cpu-demo", demo, [])):
    errs = k8s_check.check(copy.deepcopy(docs), ext)
    if errs:
        print("FAIL: the %s overlay itself does not pass: %s" % (label, errs))
        failures += 1

CASES = [
    ("gpu", "targetPort 'grpcx' is not a port",
     lambda d: find(d, "Service", "aha-reward")["spec"]["ports"][0].update(targetPort="grpcx")),
    ("gpu", "readOnlyRootFilesystem must be true",
     lambda d: container(d, "Deployment", "aha-reward")["securityContext"].update(readOnlyRootFilesystem=False)),
    ("gpu", "unknown field 'imagePullPolicyx'",
     lambda d: container(d, "Deployment", "aha-reward").update(imagePullPolicyx="Always")),
    ("gpu", "PVC aha-jobs does not exist", drop("PersistentVolumeClaim", "aha-jobs")),
    ("gpu", "Secret aha-auth does not exist", None),
    ("cpu-demo", "port 50099 is not a container port",
     lambda d: container(d, "StatefulSet", "aha-learner")["livenessProbe"]["grpc"].update(port=50099)),
    ("gpu", "runAsNonRoot must be true",
     lambda d: find(d, "StatefulSet", "aha-learner")["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot")),
    ("gpu", "without an nvidia.com/gpu limit",
     lambda d: container(d, "StatefulSet", "aha-rollout")["resources"]["limits"].pop("nvidia.com/gpu")),
    ("gpu", "does not match the pod template labels",
     lambda d: find(d, "Deployment", "aha-refpolicy")["spec"]["selector"]["matchLabels"].update(
         {"app.kubernetes.io/name": "aha-other"})),
    ("gpu", "is not a pair this checker knows",
     lambda d: find(d, "HorizontalPodAutoscaler", "aha-reward").update(apiVersion="autoscaling/v1")),
    ("gpu", "uses $(AHA_UNDEFINED)",
     lambda d: container(d, "Deployment", "aha-reward")["args"].append("$(AHA_UNDEFINED)")),
    ("gpu", "limit 1Gi is below the request",
     lambda d: container(d, "StatefulSet", "aha-learner")["resources"]["limits"].update(memory="1Gi")),
    ("gpu", "podSelector matches no pods",
     lambda d: find(d, "NetworkPolicy", "aha-reward")["spec"]["podSelector"]["matchLabels"].update(
         {"app.kubernetes.io/name": "aha-nothing"})),
    ("cpu-demo", "must be a headless Service",
     lambda d: find(d, "Service", "aha-rollout")["spec"].pop("clusterIP")),
    ("cpu-demo", "volume shm is never mounted",
     lambda d: container(d, "StatefulSet", "aha-rollout")["volumeMounts"].pop()),
    ("gpu", "sets spec.replicas",
     lambda d: find(d, "Deployment", "aha-reward")["spec"].update(replicas=3)),
    ("cpu-demo", "capabilities must drop ALL",
     lambda d: container(d, "Deployment", "aha-reward")["securityContext"]["capabilities"].update(add=["NET_ADMIN"])),
]
for label, want, mutate in CASES:
    docs = copy.deepcopy(gpu if label == "gpu" else demo)
    ext = ["aha-auth"] if label == "gpu" else []
    if mutate is None:
        ext = []  # the gpu overlay requires a Secret created outside the manifests
    else:
        mutate(docs)
    errs = k8s_check.check(docs, ext)
    if not any(want in e for e in errs):
        print("FAIL: %s: expected an error containing %r, got %s" % (label, want, errs))
        failures += 1
    else:
        print("ok: %s: %s" % (label, want))
print("%d cases, %d failures" % (len(CASES) + 2, failures))
sys.exit(1 if failures else 0)
