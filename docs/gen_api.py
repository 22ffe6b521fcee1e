#!/usr/bin/python3
"""Generate docs/api.md and docs/tlsmail.3 from include/tlsmail.h.

The header is the specification: every public declaration is documented by
the comment right above it (or, for enum members and struct fields, on its
line).  This script copies those comments into a Markdown reference
(docs/api.md) and a man page (docs/tlsmail.3), so neither can drift from
the header.

    python3 docs/gen_api.py            # rewrite docs/api.md and docs/tlsmail.3
    python3 docs/gen_api.py --check    # exit 1 if they are out of date or a
                                       # public symbol is undocumented

Standard library only.
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = ROOT / "include" / "tlsmail.h"
API_MD = ROOT / "docs" / "api.md"
MAN = ROOT / "docs" / "tlsmail.3"

SECTION_RE = re.compile(r"/\*\s*-{10,}\s*\n\s*\*\s*(.+?)\s*\n\s*\*\s*-{10,}\s*\*/")

# Documentation for declarations the header leaves without a comment of
# their own (patterns every C programmer knows from the header's intro).
FALLBACK = [
    (re.compile(r"^TM_(\w+)_VERSION$"),
     "The current version of the struct: what a caller compiled against this header "
     "stores in its `version` field (the `_INIT` macro does, and the `_init()` function "
     "takes it as its argument)."),
    (re.compile(r"^TM_(\w+)_INIT$"),
     "Static initialiser: the current version and every other field 0/NULL "
     "(the defaults).  FFI callers use the matching `_init()` function."),
    (re.compile(r"^tm_(\w+)_init$"),
     lambda m: "Sets `*%s` to the defaults of struct version `version` (pass `TM_%s_VERSION`).  "
               "Returns `TM_OK`, or `TM_EINVAL` for NULL or an unknown version.  For FFI "
               "callers that cannot expand the macro."
               % (m.group(1).split("_")[-1], m.group(1).upper())),
    (re.compile(r"^tm_(policy|message|context_options|session_options)_size$"),
     lambda m: "`sizeof(tm_%s)` as compiled into the library, so bindings can check their "
               "layout at load time." % m.group(1)),
    (re.compile(r"^TM_VERSION_MAJOR$"),
     "The version of the header you compile against (compare with `tm_version()` / "
     "`tm_version_number()` for the library actually linked)."),
    (re.compile(r"^tm_error$"),
     "Return codes of every function: `TM_OK` (0) or one of these negative values.  "
     "Append-only: never renumbered or removed.  `tm_strerror()` gives the text."),
    (re.compile(r"^tm_result$"),
     "The class of a delivery (`tm_delivery_status.result`) and of each recipient "
     "(`tm_rcpt_status.result`); `tm_result_name()` gives the JSON name."),
    (re.compile(r"^TM_ADDRESS_MAX$"),
     "Capacities of the text fields of `tm_delivery_status` and `tm_rcpt_status` (each array "
     "size includes the terminating NUL; longer text is truncated)."),
    (re.compile(r"^tm_context$"),
     "Opaque shared context: created by `tm_context_new()`, released by `tm_context_free()`, "
     "shared by any number of threads and sessions."),
    (re.compile(r"^tm_session$"),
     "Opaque SMTP session: created by `tm_session_open()`, released by `tm_session_close()`, "
     "used by one thread at a time."),
    (re.compile(r"^tm_settings_save$"),
     "Writes both settings tables to `path` in the settings-file format, "
     "atomically (temporary file + rename)."),
]


class Item:
    """One documented group: a comment and the declarations under it."""

    def __init__(self, section, comment, decls):
        self.section = section
        self.comment = comment
        self.decls = decls  # list of (name, kind, text)

    @property
    def names(self):
        return [d[0] for d in self.decls]


def strip_comment(c):
    """The text of a /* */ comment, stars and common indentation removed."""
    body = c.strip()[2:-2]
    lines = body.split("\n")
    out = []
    for ln in lines:
        ln = re.sub(r"^\s*\* ?", "", ln) if re.match(r"^\s*\*", ln) else ln.strip()
        out.append(ln.rstrip())
    while out and not out[0].strip():
        out.pop(0)
    while out and not out[-1].strip():
        out.pop()
    if len(out) == 1:
        out[0] = out[0].strip()
    return "\n".join(out)


def decl_name(text):
    """(name, kind) of one declaration, or None for what is not public API."""
    t = text.strip()
    m = re.match(r"#define\s+(\w+)", t)
    if m:
        if m.group(1) in ("TLSMAIL_H", "TM_EXTERN"):
            return None
        return m.group(1), "macro"
    m = re.match(r"typedef\s+(enum|struct)\s+(\w+)\s*\{", t)
    if m:
        return m.group(2), m.group(1)
    m = re.match(r"typedef\s+struct\s+(\w+)\s+(\w+)\s*;", t)
    if m:
        return m.group(2), "opaque"
    m = re.match(r"typedef\s+[^(]*\(\s*\*\s*(\w+)\s*\)", t)
    if m:
        return m.group(1), "callback"
    m = re.match(r"TM_EXTERN\s+.*?(\w+)\s*\(", t, re.S)
    if m:
        return m.group(1), "function"
    return None


def parse(header_text):
    """Items in header order, each with its section title."""
    text = header_text
    # Cut the file comment (the conventions) and the guard/extern plumbing.
    start = text.index("#define TM_EXTERN")
    start = text.index("#endif", start) + len("#endif")
    end = text.index("#ifdef __cplusplus", start)
    body = text[start:end]

    items = []
    section = ""
    pos = 0
    pending = None  # comment waiting for its declarations
    current = None
    token_re = re.compile(
        r"(?P<section>/\*\s*-{10,}.*?-{10,}\s*\*/)"
        r"|(?P<comment>/\*.*?\*/)"
        r"|(?P<blank>\n[ \t]*\n)"
        r"|(?P<typedef>typedef\s+(?:enum|struct)\s+\w+\s*\{.*?\}\s*\w+\s*;)"
        r"|(?P<stmt>(?:TM_EXTERN|typedef)[^;]*;)"
        r"|(?P<define>#define[^\n]*(?:\\\n[^\n]*)*)"
        r"|(?P<other>\S)",
        re.S)
    for m in token_re.finditer(body):
        kind = m.lastgroup
        tok = m.group(kind)
        if kind == "section":
            sm = SECTION_RE.match(tok)
            section = sm.group(1) if sm else section
            pending = current = None
        elif kind == "comment":
            pending = strip_comment(tok)
            current = None
        elif kind == "blank":
            current = None
            # a comment followed by a blank line stays pending for the next
            # declarations only if nothing else came between
        elif kind in ("typedef", "stmt", "define"):
            nk = decl_name(tok)
            if nk is None:
                continue
            # a trailing comment on a #define line belongs to it
            decl_text = tok.strip()
            if current is None:
                current = Item(section, pending or "", [])
                items.append(current)
                pending = None
            current.decls.append((nk[0], nk[1], decl_text))
        pos = m.end()
    # Trailing same-line comments after #define or function prototypes.
    return items


def attach_trailing_comments(items, header_text):
    """`#define X 50  /* what */` keeps its comment in the declaration text;
    for defines the regex above already took it (to end of line)."""
    return items


# Man-page one-liners where the header comment's opening is not one.
MAN_BRIEF = {
    "tm_status_json": "Writes the status and the recipients rcpts[0..nrcpts) as one JSON object "
                      "(UTF-8, NUL-terminated) into buf, with snprintf semantics; "
                      "TM_STATUS_JSON_MAX bytes hold any status with one recipient, each further "
                      "recipient needs TM_RCPT_JSON_MAX more.",
    "tm_settings_load": "Loads a settings file (sending-domain settings and recipient floors), "
                        "applied only when the whole file is valid; replace != 0 clears both "
                        "tables first; on TM_ESYNTAX *error_line gets the line.",
}


def fallback_doc(name):
    for rx, text in FALLBACK:
        m = rx.match(name)
        if m:
            return text(m) if callable(text) else text
    return ""


def conventions(header_text):
    """The header's opening comment (the conventions of every function)."""
    m = re.match(r"\s*(/\*.*?\*/)", header_text, re.S)
    return strip_comment(m.group(1)) if m else ""


# ---------------------------------------------------------------------------
# Markdown

IDENT_RE = re.compile(r"(?<![`\w])((?:tm|TM)_[\w*]+(?:\(\))?|\*\w+|\w+_\w+(?:\[\])?)(?![`\w])")


def md_inline(s):
    return IDENT_RE.sub(lambda m: "`%s`" % m.group(1), s)


def md_text(comment):
    """Comment text as Markdown: aligned or indented paragraphs stay
    preformatted, prose paragraphs and '- ' lists are reflowed."""
    out = []
    for para in re.split(r"\n\s*\n", comment):
        if not para.strip():
            continue
        lines = para.split("\n")
        ind = min(len(ln) - len(ln.lstrip()) for ln in lines if ln.strip())
        lines = [ln[ind:] for ln in lines]
        pre = any(re.match(r"^\s{2,}\S", ln) or re.search(r"\S\s{3,}\S", ln) for ln in lines)
        bullets = all(not ln.strip() or ln.startswith("- ") or ln.startswith("  ") for ln in lines) \
            and lines[0].startswith("- ")
        if bullets:
            items, cur = [], []
            for ln in lines:
                if ln.startswith("- ") and cur:
                    items.append(" ".join(cur))
                    cur = []
                cur.append(ln[2:].strip() if ln.startswith("- ") else ln.strip())
            items.append(" ".join(cur))
            out.append("\n".join("* " + md_inline(i) for i in items))
        elif pre:
            # keep a leading prose line (no alignment) out of the block
            head = []
            while lines and not (re.match(r"^\s{2,}\S", lines[0]) or re.search(r"\S\s{3,}\S", lines[0])):
                head.append(lines.pop(0).strip())
            if head:
                out.append(md_inline(" ".join(head)))
            dedent = min((len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()), default=0)
            out.append("```text\n" + "\n".join(ln[dedent:] for ln in lines) + "\n```")
        else:
            out.append(md_inline(" ".join(ln.strip() for ln in lines)))
    return "\n\n".join(out)


def anchor(name):
    return name  # HTML ids are case-sensitive: TM_POLICY_INIT != tm_policy_init


def render_md(items, header_text):
    o = []
    o.append("<!-- Generated by docs/gen_api.py from include/tlsmail.h: do not edit by hand. -->")
    o.append("")
    o.append("# libtlsmail API reference")
    o.append("")
    o.append("Every public function, type, macro and enumeration of `include/tlsmail.h`, "
             "with the header's own documentation.  The header is the specification; this "
             "page is generated from it (`python3 docs/gen_api.py`).  For how the pieces fit "
             "together read [guide.md](guide.md); for the Python and Go bindings, "
             "[python.md](python.md) and [go.md](go.md); coming from a hosted sending "
             "service's `require-tls` / `skip-verification` flags, "
             "[migration.md](migration.md).")
    o.append("")
    o.append("## Conventions (hold for every function)")
    o.append("")
    o.append(md_text(conventions(header_text)))
    o.append("")
    o.append("Summary of the rules every entry below relies on:")
    o.append("")
    o.append("| topic | rule |")
    o.append("|---|---|")
    o.append("| return value | `TM_OK` (0) or a negative `tm_error`; `tm_strerror()` never returns NULL |")
    o.append("| ownership | strings and buffers passed in are copied if kept; results go into caller storage; "
             "only contexts and sessions are allocated by the library, freed by `tm_context_free` / "
             "`tm_session_close` (both accept NULL) |")
    o.append("| threads | a `tm_context` is shared read-only by any number of threads (its settings tables "
             "are internally locked); a `tm_session` is used by one thread at a time; callbacks run "
             "synchronously on the calling thread |")
    o.append("| blocking | `tm_session_open`, `tm_starttls`, `tm_send`, `tm_session_close` and "
             "`tm_deliver` do network I/O and block for at most the context's timeouts; "
             "`tm_context_new` and `tm_settings_load`/`save` do file I/O; everything else "
             "returns at once |")
    o.append("| structs | `version` is the struct version the caller was compiled with: initialise "
             "with `TM_*_INIT` or `tm_*_init(ptr, TM_*_VERSION)`; the library accepts "
             "0 < version <= its own and reads/writes only that version's fields, else "
             "`TM_EINVAL`; an all-zero `tm_policy` is the default policy |")
    o.append("")
    # index
    o.append("## Index")
    o.append("")
    by_kind = {}
    for it in items:
        for name, kind, _ in it.decls:
            by_kind.setdefault(kind, []).append(name)
    titles = [("function", "Functions"), ("struct", "Structs"), ("opaque", "Opaque handles"),
              ("enum", "Enumerations"), ("callback", "Callback types"), ("macro", "Macros")]
    for kind, title in titles:
        names = by_kind.get(kind, [])
        if names:
            o.append("**%s:** %s" % (title, ", ".join("[`%s`](#%s)" % (n, anchor(n))
                                                        for n in names)))
            o.append("")
    section = None
    for it in items:
        if it.section != section:
            section = it.section
            o.append("## " + section)
            o.append("")
        for name in it.names:
            o.append('<a id="%s"></a>' % anchor(name))
        kinds = sorted(set(k for _, k, _ in it.decls))
        o.append("### " + ", ".join("`%s`" % n for n in it.names) +
                 " <sub>(%s)</sub>" % ", ".join(kinds))
        o.append("")
        o.append("```c")
        o.append("\n".join(d[2] for d in it.decls))
        o.append("```")
        o.append("")
        doc = it.comment or " ".join(dict.fromkeys(filter(None, (fallback_doc(n)
                                                                  for n in it.names))))
        if doc:
            o.append(md_text(doc))
            o.append("")
    return "\n".join(o).rstrip() + "\n"


# ---------------------------------------------------------------------------
# Man page

def roff_escape(s):
    s = s.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + ln) if ln.startswith((".", "'")) else ln for ln in s.split("\n"))


def first_sentence(text):
    """The opening of a comment for the man page: its first sentence (the
    header ends sentences with two spaces), two if the first is short."""
    para = re.split(r"\n\s*\n", text.strip())[0]
    sentences = re.split(r"(?<=[.])\s{2,}", para)
    out = sentences[0]
    if len(out) < 40 and len(sentences) > 1:
        out += "  " + sentences[1]
    out = " ".join(out.split()).replace("`", "")
    return out


def render_man(items, version):
    funcs = [(n, txt, it) for it in items for (n, k, txt) in it.decls if k == "function"]
    o = []
    o.append('.\\" Generated by docs/gen_api.py from include/tlsmail.h: do not edit by hand.')
    o.append('.TH TLSMAIL 3 "" "libtlsmail %s" "Library Functions Manual"' % version)
    o.append(".SH NAME")
    o.append("libtlsmail \\- deliver email to MX hosts over SMTP with opportunistic TLS")
    o.append(".SH SYNOPSIS")
    o.append(".nf")
    o.append(".B #include <tlsmail.h>")
    o.append(".PP")
    for name, txt, _ in funcs:
        proto = " ".join(txt.replace("TM_EXTERN ", "").split())
        o.append(".B " + roff_escape(proto).replace('"', '\\(dq'))
    o.append(".fi")
    o.append(".PP")
    o.append("Link with")
    o.append(".IR \"$(pkg-config --cflags --libs libtlsmail)\" .".replace("-", "\\-"))
    o.append(".SH DESCRIPTION")
    o.append(roff_escape(
        "libtlsmail delivers a message to the mail exchangers (MX) of the recipient domain over "
        "SMTP.  Every connection is first upgraded with STARTTLS; when the server does not offer "
        "it or the upgrade fails (an invalid certificate included), the message is still "
        "delivered over a fresh plaintext connection, unless the policy says otherwise:"))
    o.append(".TP")
    o.append(".B require_tls")
    o.append(roff_escape("never deliver without TLS (verified TLS unless skip_verify); an MX that "
                         "cannot give it is left for the next, and with none left the message is "
                         "deferred."))
    o.append(".TP")
    o.append(".B skip_verify")
    o.append(roff_escape("accept any certificate and host name."))
    o.append(".TP")
    o.append(".B keep_unverified_tls")
    o.append(roff_escape("keep an encrypted session whose certificate failed verification instead "
                         "of reconnecting in plaintext."))
    o.append(".PP")
    o.append(roff_escape(
        "Each flag is TM_ON, TM_OFF or TM_UNSET; an unset flag takes the sending domain's setting "
        "(tm_domain_policy_set), then the default (off); a recipient domain's floor "
        "(tm_recipient_floor_set) can force require_tls on and skip_verify off."))
    o.append(".PP")
    o.append(roff_escape(
        "Every call fills a tm_delivery_status: the result class (delivered, deferred, uncertain, "
        "bounced), the SMTP reply, whether TLS was used (tls), whether the certificate was "
        "verified (cert_verified, always the truth), the MX host used (mx_host), why TLS was not "
        "used, and how many recipients ended each way; each recipient's own outcome goes into "
        "an array of tm_rcpt_status the caller names in the message (rcpt_status, "
        "rcpt_status_cap).  tm_status_json writes both as one JSON object."))
    o.append(".PP")
    o.append(roff_escape(
        "A tm_context (trust store, resolver, timeouts, settings tables) is created once and "
        "shared read-only by any number of threads; a tm_session is used by one thread at a "
        "time.  Functions return TM_OK (0) or a negative tm_error; tm_strerror describes it.  "
        "The library copies what it keeps, writes results into caller storage, never returns "
        "memory the caller must free, prints nothing and never exits."))
    o.append(".SH FUNCTIONS")
    for name, _, it in funcs:
        doc = it.comment if it.comment and not (len(it.names) > 1 and fallback_doc(name)) \
            else fallback_doc(name)
        o.append(".TP")
        o.append(".BR %s ()" % name)
        brief = MAN_BRIEF.get(name) or (first_sentence(doc) if doc else "")
        o.append(roff_escape(brief.replace("`", "")))
    o.append(".SH RETURN VALUE")
    o.append(roff_escape(
        "TM_OK (0) on success, a negative tm_error on failure; tm_status_json and "
        "tm_settings_list return a length like snprintf; the name and version functions return "
        "static strings."))
    o.append(".SH EXAMPLES")
    o.append(".nf")
    for ln in [
        "tm_context *ctx;",
        "tm_context_new(&ctx, NULL);",
        "const char *to[] = { \"alice@example.org\" };",
        "tm_message msg = TM_MESSAGE_INIT;",
        "msg.from = \"bob@example.com\";",
        "msg.to = to;",
        "msg.to_count = 1;",
        "msg.data = \"Subject: hi\\r\\n\\r\\nHello.\\r\\n\";",
        "msg.size = strlen(msg.data);",
        "tm_rcpt_status rcpt[1];",
        "msg.rcpt_status = rcpt;",
        "msg.rcpt_status_cap = 1;",
        "tm_policy policy = TM_POLICY_INIT;",
        "policy.require_tls = TM_ON;",
        "tm_delivery_status st;",
        "tm_status_init(&st, TM_STATUS_VERSION);",
        "tm_deliver(ctx, &msg, &policy, NULL, &st);",
        "printf(\"%s via %s tls=%d verified=%d\\n\", tm_result_name(st.result),",
        "       st.mx_host, st.tls, st.cert_verified);",
        "tm_context_free(ctx);",
    ]:
        o.append(roff_escape(ln))
    o.append(".fi")
    o.append(".PP")
    o.append(roff_escape("More in examples/c/ (deliver.c, require_tls.c, session.c)."))
    o.append(".SH SEE ALSO")
    o.append(roff_escape(
        "The full reference of every function, type and macro: docs/api.md (generated from "
        "include/tlsmail.h, the specification).  The guide: docs/guide.md.  Bindings: "
        "docs/python.md, docs/go.md.  Coming from require-tls / skip-verification flags: "
        "docs/migration.md."))
    o.append(".PP")
    o.append(".BR tm-send (1),")
    o.append(".BR pkg-config (1)")
    return "\n".join(o) + "\n"


# ---------------------------------------------------------------------------

def public_symbols(header_text):
    """Every name the header exports, found independently of parse()."""
    names = set(re.findall(r"^TM_EXTERN\s+[^;(]*?(\w+)\s*\(", header_text, re.M))
    names |= set(re.findall(r"^#define\s+(TM_\w+)", header_text, re.M)) - {"TM_EXTERN"}
    names |= set(re.findall(r"typedef\s+(?:enum|struct)\s+\w+\s*\{.*?\}\s*(\w+)\s*;",
                            header_text, re.S))
    names |= set(re.findall(r"typedef\s+struct\s+\w+\s+(\w+)\s*;", header_text))
    names |= set(re.findall(r"typedef\s+[^;(]*\(\s*\*\s*(\w+)\s*\)", header_text))
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="verify docs/api.md and docs/tlsmail.3 are up to date")
    ap.add_argument("--header", type=Path, default=HEADER)
    args = ap.parse_args()

    text = args.header.read_text()
    items = parse(text)
    documented = {n for it in items for n in it.names}
    missing = sorted(public_symbols(text) - documented)
    if missing:
        print("gen_api.py: not in the reference: " + ", ".join(missing), file=sys.stderr)
        return 1
    undocumented = sorted(n for it in items for n in it.names[:1]
                          if not it.comment and not fallback_doc(n))
    version = re.search(r'#define TM_VERSION_STRING "([^"]+)"', text).group(1)
    outputs = {API_MD: render_md(items, text), MAN: render_man(items, version)}
    if args.check:
        stale = [str(p.relative_to(ROOT)) for p, c in outputs.items()
                 if not p.exists() or p.read_text() != c]
        if stale:
            print("gen_api.py: out of date (run python3 docs/gen_api.py): " + ", ".join(stale),
                  file=sys.stderr)
            return 1
        print("gen_api.py: %d declarations in %d entries, docs up to date" %
              (len(documented), len(items)))
        if undocumented:
            print("gen_api.py: without a comment in the header: " + ", ".join(undocumented))
        return 0
    for p, c in outputs.items():
        p.write_text(c)
    print("gen_api.py: wrote %s (%d declarations in %d entries)" %
          (", ".join(str(p.relative_to(ROOT)) for p in outputs), len(documented), len(items)))
    if undocumented:
        print("gen_api.py: without a comment in the header: " + ", ".join(undocumented))
    return 0


if __name__ == "__main__":
    sys.exit(main())
