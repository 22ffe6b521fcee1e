#!/usr/bin/python3
"""tm_abi_layout() lists exactly the header's public structs and fields.

usage: check_layout.py HEADER (PRINT_LAYOUT_PROGRAM | --text FILE)
           [--self-test]

Parses every `typedef struct tm_x { ... } tm_x;` body of the header and
compares, struct by struct, the field names in declaration order with the
layout text the library reports (run PRINT_LAYOUT_PROGRAM, or read FILE).
Also checks the text's own consistency: one line per struct ending in \\n,
fields at increasing offsets inside the struct's size.  Exit status 0 when
everything matches, 1 with the first differences printed otherwise.
--self-test also proves the check can fail: for every struct, a copy of
the header with a member added at its end, and one with its last two
members swapped, must each be reported as a mismatch.
"""
import re
import subprocess
import sys


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def header_structs(text):
    """{struct name: [field names in declaration order]} of the public
    typedef'd structs (tm_*) of the header."""
    text = strip_comments(text)
    structs = {}
    for m in re.finditer(r"typedef\s+struct\s+(tm_\w+)\s*\{(.*?)\}\s*(\w+)\s*;", text, re.S):
        name, body, alias = m.group(1), m.group(2), m.group(3)
        if alias != name:
            raise SystemExit(f"{name}: typedef name {alias} differs")
        fields = []
        for decl in body.split(";"):
            decl = " ".join(decl.split())
            if not decl:
                continue
            if "{" in decl or "}" in decl:
                raise SystemExit(f"{name}: nested struct or union bodies are not parsed: {decl}")
            # function pointer member: type (*name)(args)
            fp = re.match(r"[^(]*\(\s*\*\s*(\w+)\s*\)\s*\(.*\)$", decl)
            if fp:
                fields.append(fp.group(1))
                continue
            # "type a, *b, c[N]": the type is the first declarator's prefix
            for i, part in enumerate(decl.split(",")):
                part = re.sub(r"\[[^\]]*\]", "", part).strip()
                ident = re.findall(r"[A-Za-z_]\w*", part)
                if not ident or (i == 0 and len(ident) < 2):
                    raise SystemExit(f"{name}: cannot parse member declaration: {decl}")
                fields.append(ident[-1])
        structs[name] = fields
    return structs


def parse_layout(text):
    """[(struct, size, [(field, offset, size)])] from tm_abi_layout()'s text;
    SystemExit on a malformed text."""
    if not text.endswith("\n"):
        raise SystemExit("layout text does not end with a newline")
    out = []
    for n, line in enumerate(text[:-1].split("\n"), 1):
        words = line.split(" ")
        if len(words) < 2 or not re.fullmatch(r"tm_\w+", words[0]) or not words[1].isdigit():
            raise SystemExit(f"layout line {n} malformed: {line!r}")
        fields = []
        for w in words[2:]:
            m = re.fullmatch(r"(\w+)@(\d+):(\d+)", w)
            if not m:
                raise SystemExit(f"layout line {n}: malformed field {w!r}")
            fields.append((m.group(1), int(m.group(2)), int(m.group(3))))
        out.append((words[0], int(words[1]), fields))
    return out


def compare(structs, layout):
    """The list of differences (empty when they agree)."""
    errors = []
    names = [s for s, _, _ in layout]
    if len(set(names)) != len(names):
        errors.append(f"a struct is listed twice in the layout: {names}")
    for s in structs:
        if s not in names:
            errors.append(f"{s}: declared in the header, missing from tm_abi_layout()")
    for s, size, fields in layout:
        if s not in structs:
            errors.append(f"{s}: in tm_abi_layout() but not a struct of the header")
            continue
        want, got = structs[s], [f for f, _, _ in fields]
        if want != got:
            for i, (w, g) in enumerate(zip(want + [None] * len(got), got + [None] * len(want))):
                if w != g:
                    errors.append(f"{s}: field {i}: header has {w}, tm_abi_layout() has {g}"
                                  f" (header: {' '.join(want)}; layout: {' '.join(got)})")
                    break
        end = 0
        for f, off, fsize in fields:
            if off < end or fsize == 0 or off + fsize > size:
                errors.append(f"{s}: field {f}@{off}:{fsize} overlaps or leaves the struct ({size})")
            end = off + fsize
    return errors


def self_test(header_text, layout):
    """Perturbs each struct of the header text; returns the perturbations
    that compare() failed to notice."""
    missed = []
    for m in re.finditer(r"typedef\s+struct\s+(tm_\w+)\s*\{(.*?)\}", header_text, re.S):
        name, start, end = m.group(1), m.start(2), m.end(2)
        body = header_text[start:end]
        added = body + "    int tm_selftest_extra;\n"
        decls = [d for d in re.finditer(r"[^;{}]*;", body) if d.group().strip(" \n;")]
        cases = [("member added", added)]
        if len(decls) >= 2:
            a, b = decls[-2], decls[-1]
            swapped = body[:a.start()] + b.group() + a.group() + body[b.end():]
            cases.append(("last two members swapped", swapped))
        for what, new_body in cases:
            text = header_text[:start] + new_body + header_text[end:]
            if not compare(header_structs(text), layout):
                missed.append(f"{name}: {what}")
    return missed


def main(argv):
    selftest = "--self-test" in argv
    argv = [a for a in argv if a != "--self-test"]
    if len(argv) == 3:
        header, prog = argv[1], argv[2]
        text = subprocess.run([prog], check=True, capture_output=True, text=True).stdout
    elif len(argv) == 4 and argv[2] == "--text":
        header = argv[1]
        text = open(argv[3], encoding="utf-8").read()
    else:
        raise SystemExit(__doc__)
    header_text = open(header, encoding="utf-8").read()
    structs = header_structs(header_text)
    if not structs:
        raise SystemExit(f"{header}: no public struct found")
    layout = parse_layout(text)
    errors = compare(structs, layout)
    for e in errors:
        print(e)
    nfields = sum(len(f) for f in structs.values())
    print(f"{len(structs)} structs, {nfields} fields in the header; "
          f"{len(layout)} structs in tm_abi_layout(): {'MISMATCH' if errors else 'ok'}")
    if selftest:
        missed = self_test(header_text, layout)
        for m in missed:
            print(f"self-test: the check did not notice: {m}")
        print(f"self-test: {'FAILED' if missed else 'ok'} ({len(structs)} structs perturbed)")
        errors += missed
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
