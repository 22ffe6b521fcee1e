#!/usr/bin/python3
"""The shared library exports exactly the functions the header declares."""
import re
import subprocess
import sys

header, lib = sys.argv[1], sys.argv[2]
text = open(header, encoding="utf-8").read()
declared = set(re.findall(r"TM_EXTERN[^;(]*?\b(tm_\w+)\s*\(", text, re.S))
out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True,
                     capture_output=True, text=True).stdout
exported = {line.split()[-1].split("@")[0] for line in out.splitlines()
            if line.split() and line.split()[-2] in ("T", "W")}
missing = sorted(declared - exported)
extra = sorted(exported - declared)
if missing:
    print("declared in the header but not exported:", ", ".join(missing))
if extra:
    print("exported but not declared in the header:", ", ".join(extra))
print(f"{len(declared)} declared, {len(exported)} exported")
sys.exit(1 if missing or extra or not declared else 0)
