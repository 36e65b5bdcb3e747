#!/usr/bin/env python3
"""Checks that the three ways of running aha agree with deploy/services.json and with each
other: the local topology (`ahactl up`), docker compose, and every rendered Kubernetes
overlay. gen.py writes all three from services.json, but they are committed files that a
person may edit; this reads what is actually there.

Per target and per service: the binary, the port it listens on and is reached at, the exact
flag list (names, in order), and that every address the learner is given (--rollout,
--reward, --refpolicy, --rendezvous) names an instance of the right service on its port;
--world-size equals the number of learner ranks and the ranks are 0..W-1.

Usage: check_agree.py --spec services.json --local topology.json --compose docker-compose.yml
                      [--k8s NAME=rendered.yaml ...]
"""
import argparse
import json
import sys

try:
    import yaml
except ImportError:
    print("check_agree.py: python3-yaml is missing (apt-get install python3-yaml)", file=sys.stderr)
    sys.exit(2)

LEARNER_ADDR_FLAGS = {"--rollout": "rollout", "--reward": "reward", "--refpolicy": "refpolicy",
                      "--rendezvous": "learner", "--weights-rendezvous": "learner"}
# The rendezvous flags name a learner instance's host on the port services.json gives them
# (dist_port: the learner ranks' group, weights_port: the rollout workers' weights group).
RENDEZVOUS_PORT_KEY = {"--rendezvous": "dist_port", "--weights-rendezvous": "weights_port"}


def flags(args):
    return [a for a in args if a.startswith("--")]


def flag_value(args, name):
    for prev, a in zip(args, args[1:]):
        if prev == name:
            return a
    return None


class Instance:
    def __init__(self, target, name, binary, args, port, hosts):
        self.target, self.name, self.binary, self.args, self.port = target, name, binary, args, port
        self.hosts = hosts  # names other instances use to reach this one
        self.replicas = 1   # a Kubernetes workload stands for several pods


def check_target(spec, target, insts, errs):
    by_binary = {}
    for i in insts:
        by_binary.setdefault(i.binary, []).append(i)
    known = {s["binary"] for s in spec["services"]}
    for i in insts:
        if i.binary not in known:
            errs.append("%s: %s runs %s, which services.json does not define" % (target, i.name, i.binary))
    for s in spec["services"]:
        mine = by_binary.get(s["binary"], [])
        if not mine:
            errs.append("%s: no instance of %s" % (target, s["binary"]))
            continue
        for i in mine:
            where = "%s: %s" % (target, i.name)
            want = flags(s["args"])
            tls = flags(s["tls_args"])
            got = flags(i.args)
            if got != want and got != want + tls:
                errs.append("%s: flags %s differ from services.json %s" % (where, got, want))
            listen = flag_value(i.args, "--listen") or ""
            if not listen.endswith(":%d" % i.port):
                errs.append("%s: listens on %r but is published as port %d" % (where, listen, i.port))
            if target != "local" and i.port != s["port"]:
                errs.append("%s: port %d, services.json says %d" % (where, i.port, s["port"]))
    learners = by_binary.get("aha-learner", [])
    ranks = sorted(flag_value(i.args, "--rank") for i in learners)
    for i in learners:
        ws = flag_value(i.args, "--world-size")
        nranks = sum(o.replicas for o in learners)
        if ws != str(nranks):
            errs.append("%s: %s --world-size %s but %d learner ranks run" % (target, i.name, ws, nranks))
        for fl, svc in LEARNER_ADDR_FLAGS.items():
            want_bin = [s["binary"] for s in spec["services"] if s["name"] == svc][0]
            reachable = {h for o in by_binary.get(want_bin, []) for h in o.hosts}
            if fl in RENDEZVOUS_PORT_KEY:
                lsvc = [s for s in spec["services"] if s["name"] == "learner"][0]
                port = lsvc.get(RENDEZVOUS_PORT_KEY[fl])
                if port is None:
                    continue
                reachable = {h.rsplit(":", 1)[0] + ":%d" % port for h in reachable}
            val = flag_value(i.args, fl) or ""
            addrs = [a for a in val.split(",") if a]
            if not addrs:
                errs.append("%s: %s has no %s" % (target, i.name, fl))
            for a in addrs:
                if a not in reachable:
                    errs.append("%s: %s %s %s reaches no %s instance (known: %s)"
                                % (target, i.name, fl, a, svc, ", ".join(sorted(reachable))))
            nworkers = sum(o.replicas for o in by_binary.get(want_bin, []))
            if fl == "--rollout" and len(set(addrs)) != nworkers:
                errs.append("%s: %s --rollout lists %d workers, %d run" % (target, i.name, len(set(addrs)), nworkers))
    if not target.startswith("k8s") and ranks != [str(r) for r in range(len(learners))]:
        errs.append("%s: learner ranks are %s, expected 0..%d" % (target, ranks, len(learners) - 1))


def local_instances(path):
    topo = json.load(open(path))
    out = []
    for s in topo["services"]:
        for key in ("name", "binary", "args", "port", "restart"):
            if key not in s:
                errs_local.append("local: service %s lacks %r" % (s.get("name"), key))
        out.append(Instance("local", s["name"], s["binary"].rsplit("/", 1)[-1], s["args"], s["port"],
                            {"127.0.0.1:%d" % s["port"], "localhost:%d" % s["port"]}))
    return out


errs_local = []


def compose_instances(path, profile):
    doc = yaml.safe_load(open(path))
    out = []
    for name, svc in doc["services"].items():
        if profile not in svc.get("profiles", []):
            continue
        cmd = svc["command"]
        port = int((flag_value(cmd, "--listen") or ":0").rsplit(":", 1)[1])
        hc = svc.get("healthcheck", {}).get("test", [])
        where = "compose[%s]: %s" % (profile, name)
        if "localhost:%d" % port not in hc:
            errs_local.append("%s: healthcheck %s does not probe its own port %d" % (where, hc, port))
        device = flag_value(cmd, "--device")
        has_gpu = bool(svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices"))
        if device is not None and device.startswith("cuda") != has_gpu:
            errs_local.append("%s: --device %s but GPU reservation %s" % (where, device, has_gpu))
        out.append(Instance("compose[%s]" % profile, name, cmd[0], cmd, port, {"%s:%d" % (name, port)}))
    return out


def k8s_instances(path, label):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    services = [d for d in docs if d["kind"] == "Service"]
    out = []
    for d in docs:
        if d["kind"] not in ("Deployment", "StatefulSet"):
            continue
        c = d["spec"]["template"]["spec"]["containers"][0]
        args = c.get("command", []) + c.get("args", [])
        port = c["ports"][0]["containerPort"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        name = d["metadata"]["name"]
        replicas = d["spec"].get("replicas", 1)
        hosts = set()
        for svc in services:
            sel = svc["spec"].get("selector", {})
            podname = sel.get("statefulset.kubernetes.io/pod-name")
            plain = {k: v for k, v in sel.items() if k != "statefulset.kubernetes.io/pod-name"}
            if not all(labels.get(k) == v for k, v in plain.items()):
                continue
            for p in svc["spec"]["ports"]:
                if p.get("targetPort") in (port, c["ports"][0].get("name")):
                    if podname is None or podname == "%s-0" % name:
                        hosts.add("%s:%d" % (svc["metadata"]["name"], p["port"]))
                    if svc["spec"].get("clusterIP") == "None" and d["kind"] == "StatefulSet":
                        for r in range(replicas):
                            hosts.add("%s-%d.%s:%d" % (name, r, svc["metadata"]["name"], p["port"]))
        inst = Instance("k8s[%s]" % label, name, args[0], args, port, hosts)
        inst.replicas = replicas
        out.append(inst)
    return out


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--local", required=True)
    ap.add_argument("--compose", required=True)
    ap.add_argument("--k8s", action="append", default=[], help="NAME=rendered.yaml")
    a = ap.parse_args(argv)
    spec = json.load(open(a.spec))
    errs = []
    check_target(spec, "local", local_instances(a.local), errs)
    for profile in ("gpu", "cpu"):
        check_target(spec, "compose[%s]" % profile, compose_instances(a.compose, profile), errs)
    for item in a.k8s:
        label, _, path = item.partition("=")
        check_target(spec, "k8s[%s]" % label, k8s_instances(path, label), errs)
    errs = errs_local + errs
    for e in errs:
        print("error: " + e, file=sys.stderr)
    print("check_agree.py: local, compose (gpu, cpu), %d k8s renderings: %d errors" % (len(a.k8s), len(errs)))
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
