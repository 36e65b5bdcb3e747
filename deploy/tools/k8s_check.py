#!/usr/bin/env python3
"""Offline check of rendered Kubernetes manifests (`kubectl kustomize DIR | k8s_check.py -`).

No cluster and no published OpenAPI document are available in CI, so this is a hand-written
schema *subset* of the Kubernetes API for the kinds aha deploys (Namespace, ConfigMap, Secret,
Service, PersistentVolumeClaim, Deployment, StatefulSet, PodDisruptionBudget,
HorizontalPodAutoscaler, NetworkPolicy), plus the cross-object checks a schema cannot make:

  - apiVersion/kind pairs; required fields; field types; unknown fields are errors (a typo in
    a field name is exactly what a schema check must catch);
  - workload selectors match their pod template labels; Service, PDB, NetworkPolicy selectors
    match some pods; a Service's targetPort exists on the pods it selects; every probe port
    exists on its container; every volumeMount has a volume; every PVC, ConfigMap and Secret
    referenced exists (or is declared external / optional); StatefulSet serviceName is a
    headless Service; HPA targets exist and have CPU requests; $(VAR) in args is defined;
  - policy: non-root, seccomp RuntimeDefault, read-only root filesystem, no privilege
    escalation, every capability dropped, CPU and memory requests and limits (limit >= request),
    a GPU limit exactly where a container is told to use a CUDA device.

It is not the API server's full validation (it does not know every field of every kind); it
is strict about everything aha's manifests use. Needs python3-yaml (Debian) to read YAML.
"""
import argparse
import re
import sys

try:
    import yaml
except ImportError:  # pragma: no cover - reported, not hidden
    print("k8s_check.py: python3-yaml is missing (apt-get install python3-yaml)", file=sys.stderr)
    sys.exit(2)

# ------------------------------------------------------------------------------------------
# Schema language: "str" "int" "bool" "quantity" "intstr" "any"; ("list", S); ("map", S);
# ("enum", a, b, ...); dict {"field": S, ...} with "!" after a name for required fields.

QTY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

LABELS = ("map", "str")
META = {"name!": "str", "namespace": "str", "labels": LABELS, "annotations": ("map", "str")}
LABEL_SELECTOR = {"matchLabels": LABELS, "matchExpressions": ("list", {
    "key!": "str", "operator!": ("enum", "In", "NotIn", "Exists", "DoesNotExist"), "values": ("list", "str")})}
SECCOMP = {"type!": ("enum", "RuntimeDefault", "Localhost", "Unconfined"), "localhostProfile": "str"}
CAPS = {"add": ("list", "str"), "drop": ("list", "str")}
PROBE = {
    "exec": {"command": ("list", "str")},
    "grpc": {"port!": "int", "service": "str"},
    "httpGet": {"path": "str", "port!": "intstr", "scheme": ("enum", "HTTP", "HTTPS")},
    "tcpSocket": {"port!": "intstr"},
    "initialDelaySeconds": "int", "periodSeconds": "int", "timeoutSeconds": "int",
    "failureThreshold": "int", "successThreshold": "int", "terminationGracePeriodSeconds": "int",
}
KEY_REF = {"name!": "str", "key!": "str", "optional": "bool"}
CONTAINER = {
    "name!": "str", "image!": "str", "imagePullPolicy": ("enum", "Always", "IfNotPresent", "Never"),
    "command": ("list", "str"), "args": ("list", "str"), "workingDir": "str",
    "ports": ("list", {"name": "str", "containerPort!": "int", "protocol": ("enum", "TCP", "UDP", "SCTP"),
                       "hostPort": "int"}),
    "env": ("list", {"name!": "str", "value": "str", "valueFrom": {
        "fieldRef": {"fieldPath!": "str", "apiVersion": "str"},
        "configMapKeyRef": KEY_REF, "secretKeyRef": KEY_REF}}),
    "envFrom": ("list", {"prefix": "str", "configMapRef": {"name!": "str", "optional": "bool"},
                         "secretRef": {"name!": "str", "optional": "bool"}}),
    "resources": {"requests": ("map", "quantity"), "limits": ("map", "quantity")},
    "startupProbe": PROBE, "readinessProbe": PROBE, "livenessProbe": PROBE,
    "volumeMounts": ("list", {"name!": "str", "mountPath!": "str", "readOnly": "bool", "subPath": "str"}),
    "securityContext": {"allowPrivilegeEscalation": "bool", "readOnlyRootFilesystem": "bool",
                        "runAsNonRoot": "bool", "runAsUser": "int", "runAsGroup": "int", "privileged": "bool",
                        "capabilities": CAPS, "seccompProfile": SECCOMP},
}
VOLUME = {
    "name!": "str",
    "emptyDir": {"medium": ("enum", "", "Memory"), "sizeLimit": "quantity"},
    "persistentVolumeClaim": {"claimName!": "str", "readOnly": "bool"},
    "secret": {"secretName!": "str", "optional": "bool", "defaultMode": "int",
               "items": ("list", {"key!": "str", "path!": "str", "mode": "int"})},
    "configMap": {"name!": "str", "optional": "bool", "defaultMode": "int",
                  "items": ("list", {"key!": "str", "path!": "str", "mode": "int"})},
}
POD_SPEC = {
    "containers!": ("list", CONTAINER), "initContainers": ("list", CONTAINER),
    "volumes": ("list", VOLUME), "serviceAccountName": "str", "automountServiceAccountToken": "bool",
    "enableServiceLinks": "bool", "terminationGracePeriodSeconds": "int", "priorityClassName": "str",
    "nodeSelector": LABELS, "tolerations": ("list", "any"), "affinity": "any",
    "securityContext": {"runAsNonRoot": "bool", "runAsUser": "int", "runAsGroup": "int", "fsGroup": "int",
                        "seccompProfile": SECCOMP, "supplementalGroups": ("list", "int")},
}
TEMPLATE = {"metadata": {"labels": LABELS, "annotations": ("map", "str")}, "spec!": POD_SPEC}
PVC_SPEC = {"accessModes!": ("list", ("enum", "ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")),
            "resources!": {"requests!": ("map", "quantity")}, "storageClassName": "str",
            "volumeMode": ("enum", "Filesystem", "Block")}
NP_PEER = {"podSelector": LABEL_SELECTOR, "namespaceSelector": LABEL_SELECTOR,
           "ipBlock": {"cidr!": "str", "except": ("list", "str")}}
NP_PORT = {"port": "intstr", "protocol": ("enum", "TCP", "UDP", "SCTP"), "endPort": "int"}

KINDS = {
    ("v1", "Namespace"): {"metadata!": META},
    ("v1", "ConfigMap"): {"metadata!": META, "data": ("map", "str"), "binaryData": ("map", "str")},
    ("v1", "Secret"): {"metadata!": META, "type": "str", "data": ("map", "str"), "stringData": ("map", "str")},
    ("v1", "Service"): {"metadata!": META, "spec!": {
        "type": ("enum", "ClusterIP", "NodePort", "LoadBalancer"), "clusterIP": "str",
        "publishNotReadyAddresses": "bool", "selector": LABELS, "sessionAffinity": "str",
        "ports!": ("list", {"name": "str", "port!": "int", "targetPort": "intstr", "nodePort": "int",
                            "protocol": ("enum", "TCP", "UDP", "SCTP"), "appProtocol": "str"})}},
    ("v1", "PersistentVolumeClaim"): {"metadata!": META, "spec!": PVC_SPEC},
    ("apps/v1", "Deployment"): {"metadata!": META, "spec!": {
        "replicas": "int", "selector!": LABEL_SELECTOR, "template!": TEMPLATE,
        "strategy": "any", "revisionHistoryLimit": "int", "minReadySeconds": "int"}},
    ("apps/v1", "StatefulSet"): {"metadata!": META, "spec!": {
        "replicas": "int", "selector!": LABEL_SELECTOR, "template!": TEMPLATE, "serviceName!": "str",
        "podManagementPolicy": ("enum", "OrderedReady", "Parallel"), "updateStrategy": "any",
        "volumeClaimTemplates": ("list", {"metadata!": META, "spec!": PVC_SPEC})}},
    ("policy/v1", "PodDisruptionBudget"): {"metadata!": META, "spec!": {
        "selector!": LABEL_SELECTOR, "minAvailable": "intstr", "maxUnavailable": "intstr"}},
    ("autoscaling/v2", "HorizontalPodAutoscaler"): {"metadata!": META, "spec!": {
        "scaleTargetRef!": {"apiVersion": "str", "kind!": "str", "name!": "str"},
        "minReplicas": "int", "maxReplicas!": "int", "behavior": "any",
        "metrics": ("list", {"type!": ("enum", "Resource", "Pods", "Object", "External", "ContainerResource"),
                             "resource": {"name!": "str", "target!": {
                                 "type!": ("enum", "Utilization", "AverageValue", "Value"),
                                 "averageUtilization": "int", "averageValue": "quantity", "value": "quantity"}}})}},
    ("networking.k8s.io/v1", "NetworkPolicy"): {"metadata!": META, "spec!": {
        "podSelector!": LABEL_SELECTOR, "policyTypes": ("list", ("enum", "Ingress", "Egress")),
        "ingress": ("list", {"from": ("list", NP_PEER), "ports": ("list", NP_PORT)}),
        "egress": ("list", {"to": ("list", NP_PEER), "ports": ("list", NP_PORT)})}},
}
NAMESPACED = {k for _, k in KINDS} - {"Namespace"}


def check_schema(v, schema, path, errs):
    if schema == "any":
        return
    if isinstance(schema, dict):
        if not isinstance(v, dict):
            errs.append("%s: expected an object, got %s" % (path, type(v).__name__))
            return
        fields = {k.rstrip("!"): s for k, s in schema.items()}
        for k, s in schema.items():
            if k.endswith("!") and k[:-1] not in v:
                errs.append("%s: required field %s is missing" % (path, k[:-1]))
        for k, x in v.items():
            if k not in fields:
                errs.append("%s: unknown field %r" % (path, k))
            else:
                check_schema(x, fields[k], "%s.%s" % (path, k), errs)
        return
    if isinstance(schema, tuple):
        if schema[0] == "list":
            if not isinstance(v, list):
                errs.append("%s: expected a list" % path)
                return
            for i, x in enumerate(v):
                check_schema(x, schema[1], "%s[%d]" % (path, i), errs)
        elif schema[0] == "map":
            if not isinstance(v, dict):
                errs.append("%s: expected a map" % path)
                return
            for k, x in v.items():
                check_schema(x, schema[1], "%s[%s]" % (path, k), errs)
        elif schema[0] == "enum":
            if v not in schema[1:]:
                errs.append("%s: %r is not one of %s" % (path, v, ", ".join(schema[1:])))
        return
    ok = {
        "str": isinstance(v, str),
        "int": isinstance(v, int) and not isinstance(v, bool),
        "bool": isinstance(v, bool),
        "intstr": (isinstance(v, int) and not isinstance(v, bool)) or isinstance(v, str),
        "quantity": (isinstance(v, (int, float)) and not isinstance(v, bool)) or
                    (isinstance(v, str) and bool(QTY.match(v))),
    }[schema]
    if not ok:
        errs.append("%s: %r is not a valid %s" % (path, v, schema))


def qty(v):
    s = str(v)
    m = QTY.match(s)
    num = float(s[:len(s) - len(m.group(2))] if m.group(2) else s)
    mult = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
            "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}[m.group(2)]
    return num * mult


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ------------------------------------------------------------------------------------------

class Pods:
    """A workload's pods as the selectors see them, including the per-pod labels the
    StatefulSet controller adds (pod-name, pod-index)."""

    def __init__(self, obj):
        self.obj = obj
        self.kind, self.name = obj["kind"], obj["metadata"]["name"]
        self.spec = obj["spec"]["template"]["spec"]
        self.labels = dict(obj["spec"]["template"].get("metadata", {}).get("labels", {}))
        self.replicas = obj["spec"].get("replicas", 1)

    def label_sets(self):
        if self.kind != "StatefulSet":
            return [self.labels]
        out = []
        for i in range(max(self.replicas, 1)):
            ls = dict(self.labels)
            ls["statefulset.kubernetes.io/pod-name"] = "%s-%d" % (self.name, i)
            ls["apps.kubernetes.io/pod-index"] = str(i)
            out.append(ls)
        return out

    def matched_by(self, selector):
        return any(selects(selector, ls) for ls in self.label_sets())


def check(docs, external_secrets=(), allow_unconfined=False):
    errs = []
    objs = []
    for i, d in enumerate(docs):
        if d is None:
            continue
        where = "document %d" % i
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            errs.append("%s: not a Kubernetes object (no apiVersion/kind)" % where)
            continue
        key = (d["apiVersion"], d["kind"])
        name = d.get("metadata", {}).get("name", "?")
        where = "%s/%s" % (d["kind"], name)
        if key not in KINDS:
            errs.append("%s: apiVersion %s kind %s is not a pair this checker knows" % (where, key[0], key[1]))
            continue
        check_schema({k: v for k, v in d.items() if k not in ("apiVersion", "kind")}, KINDS[key], where, errs)
        if isinstance(name, str) and (not DNS1123.match(name) or len(name) > 63):
            errs.append("%s: name is not a DNS-1123 label of at most 63 characters" % where)
        objs.append(d)
    if errs:
        return errs  # cross-object checks need well-formed objects

    by = {}
    for o in objs:
        by.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    namespaces = {o["metadata"].get("namespace") for o in objs if o["kind"] in NAMESPACED}
    if len(namespaces) > 1:
        errs.append("objects are spread over namespaces %s" % sorted(map(str, namespaces)))
    workloads = [Pods(o) for k in ("Deployment", "StatefulSet") for o in by.get(k, {}).values()]
    configmaps = by.get("ConfigMap", {})
    secrets = set(by.get("Secret", {})) | set(external_secrets)
    claims = set(by.get("PersistentVolumeClaim", {}))

    for w in workloads:
        where = "%s/%s" % (w.kind, w.name)
        sel = w.obj["spec"]["selector"].get("matchLabels", {})
        if not selects(sel, w.labels):
            errs.append("%s: selector %s does not match the pod template labels %s" % (where, sel, w.labels))
        psc = w.spec.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            errs.append("%s: pod securityContext.runAsNonRoot must be true" % where)
        if psc.get("runAsUser") == 0:
            errs.append("%s: pod runs as uid 0" % where)
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault" and not allow_unconfined:
            errs.append("%s: pod seccompProfile must be RuntimeDefault" % where)
        vols = {v["name"]: v for v in w.spec.get("volumes", [])}
        used = set()
        for c in w.spec["containers"]:
            cw = "%s container %s" % (where, c["name"])
            ports = {p["containerPort"] for p in c.get("ports", [])}
            names = {p.get("name") for p in c.get("ports", [])} - {None}
            for pk in ("startupProbe", "readinessProbe", "livenessProbe"):
                pr = c.get(pk)
                if pr is None:
                    if pk != "startupProbe":
                        errs.append("%s: no %s" % (cw, pk))
                    continue
                handlers = [h for h in ("exec", "grpc", "httpGet", "tcpSocket") if h in pr]
                if len(handlers) != 1:
                    errs.append("%s: %s needs exactly one handler, has %s" % (cw, pk, handlers))
                    continue
                h = pr[handlers[0]]
                if handlers[0] == "exec":
                    if not h.get("command"):
                        errs.append("%s: %s exec command is empty" % (cw, pk))
                else:
                    p = h["port"]
                    if (isinstance(p, int) and p not in ports) or (isinstance(p, str) and p not in names):
                        errs.append("%s: %s port %r is not a container port" % (cw, pk, p))
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                errs.append("%s: readOnlyRootFilesystem must be true" % cw)
            if sc.get("allowPrivilegeEscalation") is not False:
                errs.append("%s: allowPrivilegeEscalation must be false" % cw)
            if sc.get("privileged"):
                errs.append("%s: privileged" % cw)
            if "ALL" not in sc.get("capabilities", {}).get("drop", []) or sc.get("capabilities", {}).get("add"):
                errs.append("%s: capabilities must drop ALL and add none" % cw)
            res = c.get("resources", {})
            req, lim = res.get("requests", {}), res.get("limits", {})
            for r in ("cpu", "memory"):
                if r not in req or r not in lim:
                    errs.append("%s: %s request and limit are both required" % (cw, r))
                elif qty(lim[r]) < qty(req[r]):
                    errs.append("%s: %s limit %s is below the request %s" % (cw, r, lim[r], req[r]))
            gpu = lim.get("nvidia.com/gpu")
            argv = c.get("command", []) + c.get("args", [])
            wants_cuda = any(a.startswith("cuda") for a, prev in zip(argv[1:], argv) if prev == "--device")
            if gpu is not None and (not re.match(r"^[0-9]+$", str(gpu)) or int(gpu) < 1):
                errs.append("%s: nvidia.com/gpu limit must be a positive integer" % cw)
            if "nvidia.com/gpu" in req and str(req["nvidia.com/gpu"]) != str(gpu):
                errs.append("%s: nvidia.com/gpu request must equal its limit" % cw)
            if wants_cuda and gpu is None:
                errs.append("%s: runs --device cuda:* without an nvidia.com/gpu limit" % cw)
            if gpu is not None and not wants_cuda:
                errs.append("%s: holds a GPU but is not told to use one (--device)" % cw)
            for m in c.get("volumeMounts", []):
                if m["name"] not in vols:
                    errs.append("%s: volumeMount %s has no volume" % (cw, m["name"]))
                used.add(m["name"])
            defined = {e["name"] for e in c.get("env", [])}
            for e in c.get("envFrom", []):
                ref = e.get("configMapRef")
                if ref:
                    cm = configmaps.get(ref["name"])
                    if cm is None and not ref.get("optional"):
                        errs.append("%s: envFrom ConfigMap %s does not exist" % (cw, ref["name"]))
                    elif cm is not None:
                        defined |= {e.get("prefix", "") + k for k in cm.get("data", {})}
                ref = e.get("secretRef")
                if ref and ref["name"] not in secrets and not ref.get("optional"):
                    errs.append("%s: envFrom Secret %s does not exist" % (cw, ref["name"]))
            for e in c.get("env", []):
                vf = e.get("valueFrom", {})
                fp = vf.get("fieldRef", {}).get("fieldPath")
                if fp and not re.match(r"^(metadata\.(name|namespace|uid)|metadata\.labels\['[^']+'\]|"
                                       r"metadata\.annotations\['[^']+'\]|spec\.nodeName|"
                                       r"spec\.serviceAccountName|status\.(hostIP|podIP|podIPs))$", fp):
                    errs.append("%s: env %s: fieldPath %s is not one the downward API offers" % (cw, e["name"], fp))
            for a in argv:
                for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
                    if var not in defined:
                        errs.append("%s: argument %r uses $(%s), which no env or envFrom defines" % (cw, a, var))
        for n, v in vols.items():
            if n not in used:
                errs.append("%s: volume %s is never mounted" % (where, n))
            if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in claims:
                errs.append("%s: volume %s: PVC %s does not exist" % (where, n, v["persistentVolumeClaim"]["claimName"]))
            if "secret" in v and v["secret"]["secretName"] not in secrets and not v["secret"].get("optional"):
                errs.append("%s: volume %s: Secret %s does not exist (and is not optional)"
                            % (where, n, v["secret"]["secretName"]))
            if "configMap" in v and v["configMap"]["name"] not in configmaps and not v["configMap"].get("optional"):
                errs.append("%s: volume %s: ConfigMap %s does not exist" % (where, n, v["configMap"]["name"]))
        if w.kind == "StatefulSet":
            svc = by.get("Service", {}).get(w.obj["spec"]["serviceName"])
            if svc is None:
                errs.append("%s: serviceName %s is not a Service here" % (where, w.obj["spec"]["serviceName"]))
            elif svc["spec"].get("clusterIP") != "None" or not w.matched_by(svc["spec"].get("selector", {})):
                errs.append("%s: serviceName %s must be a headless Service selecting its pods"
                            % (where, svc["metadata"]["name"]))

    for name, svc in by.get("Service", {}).items():
        where = "Service/%s" % name
        sel = svc["spec"].get("selector", {})
        hits = [w for w in workloads if w.matched_by(sel)]
        if not hits:
            errs.append("%s: selector %s matches no pods" % (where, sel))
        for p in svc["spec"]["ports"]:
            tp = p.get("targetPort", p["port"])
            for w in hits:
                cps = [cp for c in w.spec["containers"] for cp in c.get("ports", [])]
                if not any(cp["containerPort"] == tp if isinstance(tp, int) else cp.get("name") == tp for cp in cps):
                    errs.append("%s: targetPort %r is not a port of %s/%s" % (where, tp, w.kind, w.name))
        if svc["spec"].get("clusterIP") == "None" and svc["spec"].get("type", "ClusterIP") != "ClusterIP":
            errs.append("%s: a headless Service must be of type ClusterIP" % where)

    for name, pdb in by.get("PodDisruptionBudget", {}).items():
        sp = pdb["spec"]
        if ("minAvailable" in sp) == ("maxUnavailable" in sp):
            errs.append("PodDisruptionBudget/%s: set exactly one of minAvailable and maxUnavailable" % name)
        if not any(w.matched_by(sp["selector"].get("matchLabels", {})) for w in workloads):
            errs.append("PodDisruptionBudget/%s: selector matches no pods" % name)

    for name, hpa in by.get("HorizontalPodAutoscaler", {}).items():
        sp = hpa["spec"]
        ref = sp["scaleTargetRef"]
        target = by.get(ref["kind"], {}).get(ref["name"])
        if target is None:
            errs.append("HorizontalPodAutoscaler/%s: target %s/%s does not exist" % (name, ref["kind"], ref["name"]))
        elif "replicas" in target["spec"]:
            errs.append("HorizontalPodAutoscaler/%s: target %s/%s sets spec.replicas, which every apply would "
                        "reset under the autoscaler" % (name, ref["kind"], ref["name"]))
        elif any(m.get("resource", {}).get("name") == "cpu" for m in sp.get("metrics", [])):
            for c in target["spec"]["template"]["spec"]["containers"]:
                if "cpu" not in c.get("resources", {}).get("requests", {}):
                    errs.append("HorizontalPodAutoscaler/%s: container %s has no CPU request" % (name, c["name"]))
        if sp.get("minReplicas", 1) > sp["maxReplicas"]:
            errs.append("HorizontalPodAutoscaler/%s: minReplicas above maxReplicas" % name)

    for name, np in by.get("NetworkPolicy", {}).items():
        sp = np["spec"]
        if not any(w.matched_by(sp["podSelector"].get("matchLabels", {})) for w in workloads):
            errs.append("NetworkPolicy/%s: podSelector matches no pods" % name)
        for rule in sp.get("ingress", []):
            for peer in rule.get("from", []):
                ps = peer.get("podSelector")
                if ps is not None and "namespaceSelector" not in peer and \
                        not any(w.matched_by(ps.get("matchLabels", {})) for w in workloads):
                    errs.append("NetworkPolicy/%s: a from.podSelector matches no pods" % name)
    return errs


def main(argv):
    ap = argparse.ArgumentParser(description="offline schema and consistency check of k8s manifests")
    ap.add_argument("files", nargs="+", help="YAML files ('-' reads stdin)")
    ap.add_argument("--external-secret", action="append", default=[],
                    help="a Secret created outside these manifests (may be referenced as required)")
    a = ap.parse_args(argv)
    docs = []
    for f in a.files:
        try:
            text = sys.stdin.read() if f == "-" else open(f).read()
            docs.extend(yaml.safe_load_all(text))
        except (OSError, yaml.YAMLError) as e:
            print("k8s_check.py: %s: %s" % (f, e), file=sys.stderr)
            return 2
    errs = check(docs, a.external_secret)
    for e in errs:
        print("error: " + e, file=sys.stderr)
    n = sum(1 for d in docs if d is not None)
    print("k8s_check.py: %d objects, %d errors" % (n, len(errs)))
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
