#!/usr/bin/env python3
"""Policy checks for aha's Dockerfiles that a generic linter does not make.

  - every FROM names a tag (no implicit :latest), and ARGs used in FROM are declared first;
  - COPY --from names an earlier stage;
  - every `apt-get install` uses --no-install-recommends and -y, and its RUN removes
    /var/lib/apt/lists;
  - the last stage runs as a numeric non-root USER, with an exec-form ENTRYPOINT;
  - no ADD of a URL and no curl/wget anywhere (the image fetches nothing itself; run time has
    no network at all);
  - the build stage installs every library and tool package scripts/install-deps.sh names
    for the build (so the image cannot fall behind the project's dependency list).

Usage: dockerfile_check.py [--deps scripts/install-deps.sh] Dockerfile...
"""
import argparse
import re
import shlex
import sys

# install-deps.sh packages that only the test suite or the host needs, not an image build
# (openssl: the TLS tests make their certificates with it).
NOT_FOR_IMAGE = re.compile(r"^(clang|libclang-rt-.*|python3.*|protobuf-compiler|protobuf-compiler-grpc|"
                           r"kubernetes-client|docker-compose|npm|nodejs|openssl)$")


def instructions(text):
    """(line number, INSTRUCTION, argument text) with continuations joined, comments dropped."""
    out = []
    buf, start = "", 0
    for n, line in enumerate(text.split("\n"), 1):
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        if not buf:
            start = n
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        word, _, rest = buf.partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf = ""
    return out


def deps_packages(path):
    text = open(path).read()
    m = re.search(r"pkgs=\(([^)]*)\)", text, re.S)
    if not m:
        raise ValueError("%s: no pkgs=(...) list" % path)
    return [p for p in m.group(1).split() if not NOT_FOR_IMAGE.match(p)]


def check(path, text, deps):
    errs = []
    ins = instructions(text)
    stages = []
    declared_args = set()
    seen_from = False
    build_pkgs = set()
    for n, op, arg in ins:
        where = "%s:%d" % (path, n)
        if op == "ARG" and not seen_from:
            declared_args.add(arg.split("=")[0])
        if op == "FROM":
            seen_from = True
            words = arg.split()
            image = words[0]
            for v in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", image):
                if v not in declared_args:
                    errs.append("%s: FROM uses ${%s}, which no ARG before the first FROM declares" % (where, v))
            if ":" not in image.split("/")[-1] and "@" not in image:
                errs.append("%s: FROM %s has no tag (would be :latest)" % (where, image))
            if image.endswith(":latest"):
                errs.append("%s: FROM %s uses :latest" % (where, image))
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append({"name": name, "user": None, "entrypoint": None, "line": n})
            continue
        if not stages:
            if op not in ("ARG",):
                errs.append("%s: %s before the first FROM" % (where, op))
            continue
        st = stages[-1]
        if op == "USER":
            st["user"] = arg
        elif op == "ENTRYPOINT":
            st["entrypoint"] = arg
        elif op == "COPY":
            m = re.search(r"--from=(\S+)", arg)
            if m and m.group(1) not in [s["name"] for s in stages[:-1]]:
                errs.append("%s: COPY --from=%s names no earlier stage" % (where, m.group(1)))
        elif op == "ADD" and re.search(r"https?://", arg):
            errs.append("%s: ADD of a URL (fetch nothing from the network in the image)" % where)
        elif op == "RUN":
            if re.search(r"\b(curl|wget)\b", arg):
                errs.append("%s: RUN uses curl/wget" % where)
            for cmd in re.split(r"&&|;", arg):
                try:
                    words = shlex.split(cmd)
                except ValueError:
                    words = cmd.split()
                if words[:2] == ["apt-get", "install"]:
                    if "--no-install-recommends" not in words:
                        errs.append("%s: apt-get install without --no-install-recommends" % where)
                    if "-y" not in words and "--yes" not in words:
                        errs.append("%s: apt-get install without -y" % where)
                    if "rm -rf /var/lib/apt/lists/*" not in arg:
                        errs.append("%s: the RUN with apt-get install does not remove /var/lib/apt/lists" % where)
                    if len(stages) == 1:
                        build_pkgs.update(w for w in words[2:] if not w.startswith("-"))
    if not stages:
        return errs + ["%s: no FROM" % path]
    last = stages[-1]
    user = last["user"]
    if user is None:
        errs.append("%s: the final stage has no USER (would run as root)" % path)
    elif not re.match(r"^[1-9][0-9]*(:[1-9][0-9]*)?$", user):
        errs.append("%s: USER %s must be numeric and non-zero (runAsNonRoot can only verify numbers)" % (path, user))
    if last["entrypoint"] is None or not last["entrypoint"].startswith("["):
        errs.append("%s: the final stage needs an exec-form ENTRYPOINT" % path)
    if len(stages) < 2:
        errs.append("%s: expected a multi-stage build (build stage + runtime stage)" % path)
    for p in deps:
        if p not in build_pkgs:
            errs.append("%s: the build stage does not install %s (scripts/install-deps.sh needs it)" % (path, p))
    return errs


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--deps", help="scripts/install-deps.sh: the build stage must install its packages")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args(argv)
    deps = deps_packages(a.deps) if a.deps else []
    errs = []
    for f in a.files:
        errs.extend(check(f, open(f).read(), deps))
    for e in errs:
        print("error: " + e, file=sys.stderr)
    print("dockerfile_check.py: %d files, %d errors" % (len(a.files), len(errs)))
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
