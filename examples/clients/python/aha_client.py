#!/usr/bin/env python3
"""A small aha job client in Python (grpcio): submit a job spec and follow its events.

  python3 aha_client.py [--server HOST:PORT] submit SPEC.json [--no-watch]
  python3 aha_client.py [--server HOST:PORT] watch JOB_ID [--from-start]
  python3 aha_client.py [--server HOST:PORT] status JOB_ID
  python3 aha_client.py [--server HOST:PORT] list

The server defaults to $AHA_SERVER or localhost:50050 (as for ahactl). TLS: --ca FILE (the CA
that signed the learner's certificate); bearer token: --token-file FILE or $AHA_JOB_TOKEN,
sent as `authorization: Bearer <token>`. Stubs are generated from proto/ at start-up into a
temporary directory (gen_stubs.sh; protoc + grpc_python_plugin), unless $AHA_PY_STUBS names a
directory that already holds them.

Exit status: 0 when the job succeeded (or the command needed no job outcome), 1 when the job
failed or was cancelled, 2 for usage errors, unreadable files and RPC errors.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DONE_STATES = {"succeeded": 0, "failed": 1, "cancelled": 1}


def load_stubs():
    stubs = os.environ.get("AHA_PY_STUBS")
    tmp = None
    if not stubs:
        tmp = tempfile.mkdtemp(prefix="aha-stubs-")
        r = subprocess.run(["sh", os.path.join(HERE, "gen_stubs.sh"), tmp], capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            sys.exit("aha_client: generating stubs failed: %s" % r.stderr.strip())
        stubs = tmp
    sys.path.insert(0, stubs)
    try:
        from aha.v1 import learner_pb2, learner_pb2_grpc  # noqa: E402
    finally:
        sys.path.remove(stubs)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)  # modules are loaded; the files can go
    return learner_pb2, learner_pb2_grpc


def channel(grpc, args):
    if args.ca:
        with open(args.ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        return grpc.secure_channel(args.server, creds)
    return grpc.insecure_channel(args.server)


def token_metadata(args):
    tok = None
    if args.token_file:
        with open(args.token_file) as f:
            tok = f.read().strip()
    elif os.environ.get("AHA_JOB_TOKEN"):
        tok = os.environ["AHA_JOB_TOKEN"].strip()
    return [("authorization", "Bearer " + tok)] if tok else []


def fmt_time(t):
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "--:--:--"


def print_event(ev):
    line = "%s %-7s" % (fmt_time(ev.time), ev.type)
    if ev.state:
        line += " state=%s" % ev.state
    if ev.step:
        line += " step=%d" % ev.step
    if ev.json:
        try:
            rec = json.loads(ev.json)
            keys = [k for k in ("reward_mean", "accuracy", "format", "response_len_mean", "kl_mean", "loss")
                    if isinstance(rec, dict) and k in rec]
            line += " " + (" ".join("%s=%.4g" % (k, rec[k]) for k in keys if isinstance(rec[k], (int, float)))
                           if keys else ev.json)
        except ValueError:
            line += " " + ev.json
    if ev.message:
        line += " " + ev.message
    print(line, flush=True)


def watch(stub, pb, job_id, from_start, md):
    """Streams a job's events until the stream ends; returns the last state seen."""
    state = ""
    for ev in stub.WatchJob(pb.WatchJobRequest(job_id=job_id, from_start=from_start), metadata=md):
        print_event(ev)
        if ev.state:
            state = ev.state
    if state not in DONE_STATES:
        state = stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=md).state
    return state


def main(argv):
    ap = argparse.ArgumentParser(description="submit aha jobs and follow them over gRPC")
    ap.add_argument("--server", default=os.environ.get("AHA_SERVER", "localhost:50050"))
    ap.add_argument("--ca", help="PEM CA certificate: use TLS")
    ap.add_argument("--token-file", help="file holding the job API bearer token")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("submit", help="submit SPEC.json and follow its events")
    p.add_argument("spec")
    p.add_argument("--no-watch", action="store_true", help="print the job id and return")
    p = sub.add_parser("watch", help="follow a job's events until it ends")
    p.add_argument("job")
    p.add_argument("--from-start", action="store_true", help="replay past events first")
    p = sub.add_parser("status", help="print a job as JSON")
    p.add_argument("job")
    sub.add_parser("list", help="list jobs")
    args = ap.parse_args(argv)

    import grpc
    pb, pb_grpc = load_stubs()
    try:
        md = token_metadata(args)
        with channel(grpc, args) as ch:
            stub = pb_grpc.LearnerStub(ch)
            if args.cmd == "submit":
                with open(args.spec) as f:
                    spec = f.read()
                job_id = stub.SubmitJob(pb.SubmitJobRequest(spec_json=spec), metadata=md).job_id
                print("submitted %s" % job_id, flush=True)
                if args.no_watch:
                    return 0
                state = watch(stub, pb, job_id, True, md)
            elif args.cmd == "watch":
                state = watch(stub, pb, args.job, args.from_start, md)
            elif args.cmd == "status":
                job = stub.GetJob(pb.GetJobRequest(job_id=args.job), metadata=md)
                print(json.dumps({"id": job.id, "kind": job.kind, "state": job.state, "step": job.step,
                                  "total_steps": job.total_steps, "error": job.error, "dir": job.dir}, indent=2))
                return 0
            else:
                for job in stub.ListJobs(pb.ListJobsRequest(), metadata=md).jobs:
                    print("%-24s %-9s %-10s %d/%d" % (job.id, job.kind, job.state, job.step, job.total_steps))
                return 0
    except grpc.RpcError as e:
        print("aha_client: %s: %s (server %s)" % (e.code().name, e.details(), args.server), file=sys.stderr)
        return 2
    except OSError as e:
        print("aha_client: %s" % e, file=sys.stderr)
        return 2
    print("job ended: %s" % (state or "unknown"), flush=True)
    return DONE_STATES.get(state, 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
