#!/usr/bin/python3
"""The libraries export exactly the functions the header declares.

usage: check_symbols.py HEADER LIB.so [--static LIB.a]

LIB.so: its dynamic symbol table (nm -D --defined-only) must hold every
function declared TM_EXTERN in HEADER and nothing else.

--static LIB.a: every global defined symbol of the archive's objects
(nm --defined-only -g: types T, D, B, R, W and the rest, lower case are
local) must be a function declared in HEADER, so that no internal name of
the library (tm__*, helpers) can collide with a name of the program that
links it statically.  Every declared function must be defined in it too.
"""
import re
import subprocess
import sys


def declared_functions(header):
    text = open(header, encoding="utf-8").read()
    return set(re.findall(r"TM_EXTERN[^;(]*?\b(tm_\w+)\s*\(", text, re.S))


def nm(args):
    r = subprocess.run(["nm"] + args, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("nm %s failed: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout


def shared_exports(lib):
    out = nm(["-D", "--defined-only", lib])
    return {line.split()[-1].split("@")[0] for line in out.splitlines()
            if len(line.split()) >= 2 and line.split()[-2] in ("T", "W")}


def static_globals(archive):
    """{symbol: (type, member)} of the archive's global defined symbols."""
    out = nm(["--defined-only", "-g", "-A", archive])
    syms = {}
    for line in out.splitlines():
        # "lib.a:member.o:0000000000000000 T tm_deliver"
        parts = line.split()
        if len(parts) < 3:
            continue
        where, kind, name = parts[0], parts[-2], parts[-1]
        fields = where.rsplit(":", 2)  # archive (may hold ':'), member, address
        member = fields[1] if len(fields) == 3 else where
        syms[name] = (kind, member)
    return syms


def report(label, declared, found, kinds=None):
    missing = sorted(declared - set(found))
    extra = sorted(set(found) - declared)
    if missing:
        print(f"{label}: declared in the header but not exported:", ", ".join(missing))
    if extra:
        detail = extra
        if kinds is not None:
            detail = [f"{n} ({kinds[n][0]} in {kinds[n][1]})" for n in extra]
        print(f"{label}: exported but not a function of the header:", ", ".join(detail))
    print(f"{label}: {len(declared)} declared, {len(found)} exported")
    return not missing and not extra


def main(argv):
    args = argv[1:]
    static = None
    if "--static" in args:
        i = args.index("--static")
        if i + 1 >= len(args):
            raise SystemExit(__doc__)
        static = args[i + 1]
        del args[i:i + 2]
    if len(args) != 2:
        raise SystemExit(__doc__)
    header, lib = args
    declared = declared_functions(header)
    if not declared:
        print(f"{header}: no TM_EXTERN function found")
        return 1
    ok = report(lib, declared, shared_exports(lib))
    if static is not None:
        syms = static_globals(static)
        ok = report(static, declared, syms, syms) and ok
        # Functions only: a public name that is data would be a header lie.
        data = sorted(n for n in declared & set(syms) if syms[n][0] not in ("T", "W"))
        if data:
            print(f"{static}: declared as functions but not code:", ", ".join(data))
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
