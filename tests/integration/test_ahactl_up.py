#!/usr/bin/python3
"""`ahactl up` / `ahactl down` with the real services on free loopback ports.

usage: test_ahactl_up.py AHACTL NAME=BINARY...   (e.g. reward=.../aha-reward learner=...)

Services named: reward, refpolicy, rollout (each optional: only those built are given) and
learner (aha-learner or the test build aha-learner-fakerun); the topology uses the format of
docs/DEPLOY.md with tests/fixtures/tiny-qwen2 as the model. Checks: malformed topologies are
usage errors naming the key; `up --detach` returns once all answer SERVING; a second `up` is
refused; a service killed with SIGKILL is restarted and serves again; `down` stops everything
and removes the state file; a foreground `up` stops its services on SIGINT; a service that
dies while starting fails `up` (exit 1, its name and log named) and stops the ones already
started; `down` after the supervisor was SIGKILLed stops the orphaned services itself."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

AHACTL = sys.argv[1]
BINS = dict(a.split("=", 1) for a in sys.argv[2:])
SRC = os.environ.get("AHA_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(SRC, "tests", "fixtures", "tiny-qwen2")
failures = checks = 0


def check(cond, msg):
    global failures, checks
    checks += 1
    if not cond:
        failures += 1
        print("not ok:", msg, file=sys.stderr, flush=True)


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def alive(pid):
    if pid <= 0:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def ahactl(*args, timeout=120):
    r = subprocess.run([AHACTL] + list(args), capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def topology(tmp, extra=None):
    names = [n for n in ("reward", "refpolicy", "rollout", "learner") if n in BINS]
    ports = dict(zip(names, free_ports(len(names))))
    a = {n: "127.0.0.1:%d" % p for n, p in ports.items()}
    args = {
        "reward": ["--threads", "2"],
        "refpolicy": ["--model", MODEL, "--device", "cpu"],
        "rollout": ["--model", MODEL, "--device", "cpu", "--max-batch", "4", "--max-seq-len", "128"],
        "learner": ["--jobs-dir", os.path.join(tmp, "jobs"), "--device", "cpu"] +
                   (["--reward", a["reward"]] if "reward" in a else []) +
                   (["--refpolicy", a["refpolicy"]] if "refpolicy" in a else []) +
                   (["--rollout", a["rollout"]] if "rollout" in a else []),
    }
    svcs = [{"name": n, "binary": BINS[n], "args": ["--listen", a[n]] + args[n] + ["--log-level", "warn"],
             "port": ports[n], "restart": True, "health": a[n]} for n in names]
    return {"format": "aha.topology/v1", "about": "test", "services": (extra or []) + svcs}


def write(tmp, name, obj):
    p = os.path.join(tmp, name)
    with open(p, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def state(run):
    try:
        with open(os.path.join(run, "up.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def healthy_all(topo):
    return all(ahactl("--timeout-ms", "2000", "health", s["health"])[0] == 0 for s in topo["services"])


tmp = tempfile.mkdtemp(prefix="aha-up-it-")
topo = topology(tmp)
tp = write(tmp, "topology.json", topo)
n = len(topo["services"])

# --- malformed topologies are usage errors that name the key ---------------------------------
for bad, key in [({"format": "aha.topology/v2", "services": []}, "topology.format"),
                 (dict(topo, extra=1), "topology.extra"),
                 ({"format": "aha.topology/v1", "services": [dict(topo["services"][0], port=0)]},
                  "services[0].port"),
                 ({"format": "aha.topology/v1", "services": [topo["services"][0]] * 2},
                  "services[1].name"),
                 ({"format": "aha.topology/v1", "services": [dict(topo["services"][0], binary="no/such/bin")]},
                  "no/such/bin")]:
    rc, out, err = ahactl("up", write(tmp, "bad.json", bad), "--run-dir", os.path.join(tmp, "runbad"))
    check(rc == 2 and key in err, "bad topology (%s): rc %d %r" % (key, rc, err))
rc, out, err = ahactl("up", write(tmp, "notjson.json", "{"), "--run-dir", os.path.join(tmp, "runbad"))
check(rc == 2 and "not JSON" in err, "not JSON: %d %r" % (rc, err))

# --- up --detach, restart after SIGKILL, down ------------------------------------------------
run = os.path.join(tmp, "run")
t0 = time.time()
rc, out, err = ahactl("up", tp, "--detach", "--run-dir", run, "--grace-s", "10")
check(rc == 0 and "services are up" in out, "up --detach: rc %d %r %r" % (rc, out, err))
print("up --detach of %d services: %.1f s" % (n, time.time() - t0), flush=True)
st = state(run)
check(st is not None and st.get("phase") == "up" and len(st["services"]) == n, "up.json: %r" % st)
check(healthy_all(topo), "every service answers SERVING")
for s in (st or {}).get("services", []):
    check(alive(s["pid"]) and s["state"] == "healthy", "%s alive and healthy: %r" % (s["name"], s))
    check(os.path.exists(s["log"]), "%s logs to %s" % (s["name"], s["log"]))
rc, out, err = ahactl("up", tp, "--detach", "--run-dir", run)
check(rc == 1 and "already up" in err, "second up refused: %d %r" % (rc, err))

victim = st["services"][0] if st else None
if victim:
    os.kill(victim["pid"], signal.SIGKILL)
    end = time.time() + 30
    new = None
    while time.time() < end:
        cur = state(run)
        v = [s for s in (cur or {}).get("services", []) if s["name"] == victim["name"]]
        if v and v[0]["pid"] not in (0, victim["pid"]) and v[0]["state"] == "healthy":
            new = v[0]
            break
        time.sleep(0.1)
    check(new is not None and new["restarts"] == 1, "%s restarted: %r" % (victim["name"], new))
    check(ahactl("health", victim["health"])[0] == 0, "restarted service serves")
    with open(victim["log"]) as f:
        check(f.read().count("==== ahactl up: starting %s" % victim["name"]) == 2, "log has both starts")

pids = [s["pid"] for s in (state(run) or {}).get("services", [])] + [(state(run) or {}).get("pid", 0)]
rc, out, err = ahactl("down", "--run-dir", run)
check(rc == 0 and "stopped" in out, "down: %d %r %r" % (rc, out, err))
time.sleep(0.2)
check(not any(alive(p) for p in pids), "down stopped every process: %r" % [p for p in pids if alive(p)])
check(state(run) is None, "up.json removed")
rc, out, err = ahactl("down", "--run-dir", run)
check(rc == 0 and "nothing is up" in out, "down twice: %d %r" % (rc, out))

# --- foreground up, stopped by SIGINT --------------------------------------------------------
run2 = os.path.join(tmp, "run2")
p = subprocess.Popen([AHACTL, "up", tp, "--run-dir", run2], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
end = time.time() + 90
up = False
while time.time() < end and p.poll() is None:
    st2 = state(run2)
    if st2 and st2.get("phase") == "up":
        up = True
        break
    time.sleep(0.1)
check(up, "foreground up came up")
pids = [s["pid"] for s in (state(run2) or {}).get("services", [])]
p.send_signal(signal.SIGINT)
try:
    out, err = p.communicate(timeout=40)
except subprocess.TimeoutExpired:
    p.kill()
    out, err = p.communicate()
check(p.returncode == 0, "foreground up exits 0 after SIGINT: %s %r" % (p.returncode, err[-500:]))
check("all services stopped" in err, "says so: %r" % err[-300:])
check(pids and not any(alive(x) for x in pids), "SIGINT stopped the services")

# --- a service that dies while starting fails up and stops the others ------------------------
crash = {"name": "crasher", "binary": BINS.get("reward", AHACTL), "args": ["--no-such-flag"],
         "port": free_ports(1)[0], "restart": True}
topo3 = dict(topo, services=topo["services"][:1] + [crash])
run3 = os.path.join(tmp, "run3")
rc, out, err = ahactl("up", write(tmp, "crash.json", topo3), "--detach", "--run-dir", run3)
check(rc == 1 and "crasher" in err, "crash at start fails up: %d %r" % (rc, err))
time.sleep(0.5)
with open(os.path.join(run3, "up.log")) as f:
    log = f.read()
check("crasher" in log and "logs/crasher.log" in log, "supervisor log names the service and its log")
check(state(run3) is None, "no state left after a failed up")
first = topo["services"][0]
check(ahactl("--timeout-ms", "1000", "health", first["health"])[0] == 3,
      "the service started before the crash was stopped")

# --- down after the supervisor was SIGKILLed ---------------------------------------------------
run4 = os.path.join(tmp, "run4")
rc, out, err = ahactl("up", tp, "--detach", "--run-dir", run4)
check(rc == 0, "up again: %d %r" % (rc, err))
st4 = state(run4) or {"pid": 0, "services": []}
os.kill(st4["pid"], signal.SIGKILL)
time.sleep(0.3)
pids = [s["pid"] for s in st4["services"]]
check(all(alive(x) for x in pids), "services outlive a SIGKILLed supervisor")
rc, out, err = ahactl("down", "--run-dir", run4)
check(rc == 0 and "stopping its services directly" in out, "down without supervisor: %d %r" % (rc, out))
check(not any(alive(x) for x in pids), "orphans stopped")

subprocess.run(["rm", "-rf", tmp])
print("%s: %d checks, %d failed" % (os.path.basename(__file__), checks, failures))
sys.exit(1 if failures else 0)
