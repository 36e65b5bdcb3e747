"""Start an aha service binary on a free loopback port for an integration test, and stop it.

    with Service([binary, "--config", cfg]) as svc:
        channel = grpc.insecure_channel(svc.target)
        ...
    assert svc.returncode == 0     # drained cleanly on SIGTERM

The service is started with `--listen 127.0.0.1:0` (the OS picks the port, so tests can run
in parallel) and announces "... listening on port N" on stdout (aha_rpc_service_announce)."""
import os
import re
import select
import signal
import subprocess
import time


class Service:
    def __init__(self, argv, timeout=20.0, env=None):
        self.argv = list(argv) + ["--listen", "127.0.0.1:0"]
        self.timeout = timeout
        self.env = env
        self.proc = None
        self.port = None
        self.returncode = None

    @property
    def target(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, env=self.env)
        end = time.monotonic() + self.timeout
        line = b""
        while time.monotonic() < end:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if r:
                ch = os.read(self.proc.stdout.fileno(), 1)
                if not ch:
                    break
                if ch != b"\n":
                    line += ch
                    continue
                m = re.search(rb"listening on port (\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    return self
                line = b""
            elif self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError("%s did not announce its port (exit %s)" % (self.argv[0],
                                                                       self.proc.returncode))

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        if self.proc is None or self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
        self.proc.stdout.close()
        return self.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
