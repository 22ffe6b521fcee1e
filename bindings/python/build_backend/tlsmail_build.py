"""The build backend of the tlsmail Python package (PEP 517, PEP 660).

Standard library only, so that ``pip install ./bindings/python`` works with
no package index: pip's isolated build environment needs nothing installed
(``requires = []`` in pyproject.toml).  It builds what the package is: pure
Python files and ``py.typed``, no extension, no generated code.

* ``build_wheel``: ``tlsmail-VERSION-py3-none-any.whl`` (PEP 427: the
  package, ``METADATA`` 2.1 from pyproject.toml's ``[project]`` table,
  ``WHEEL``, ``RECORD`` with sha256 digests).
* ``build_sdist``: ``tlsmail-VERSION.tar.gz`` (pyproject.toml, the backend,
  the package, ``PKG-INFO``).
* ``build_editable``: a wheel holding a ``.pth`` file that puts the source
  directory on ``sys.path`` (``pip install -e``).

pyproject.toml is read with ``tomllib`` when the interpreter has it (3.11
and later), else with ``_read_toml`` below, which reads the subset of TOML
that file uses (tables, strings, arrays of strings, one-line inline tables);
test python-pip checks that both read the file the same.
"""

import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)  # bindings/python
_PACKAGE = "tlsmail"
_FILES = ("__init__.py", "_ffi.py", "py.typed")


# ---- pyproject.toml ------------------------------------------------------


def _toml_value(text, pos):
    """One value at text[pos:]: (value, next position)."""
    while text[pos] in " \t\r\n":
        pos += 1
    c = text[pos]
    if c == '"':
        m = re.compile(r'"((?:[^"\\\n]|\\.)*)"').match(text, pos)
        if not m:
            raise ValueError("pyproject.toml: bad string at %d" % pos)
        s = m.group(1)
        s = re.sub(r'\\(["\\])', r"\1", s)
        return s, m.end()
    if c == "[":
        items, pos = [], pos + 1
        while True:
            while text[pos] in " \t\r\n,":
                pos += 1
            if text[pos] == "#":
                pos = text.index("\n", pos)
                continue
            if text[pos] == "]":
                return items, pos + 1
            v, pos = _toml_value(text, pos)
            items.append(v)
    if c == "{":
        table, pos = {}, pos + 1
        while True:
            while text[pos] in " \t,":
                pos += 1
            if text[pos] == "}":
                return table, pos + 1
            m = re.compile(r"([A-Za-z0-9_-]+)\s*=").match(text, pos)
            if not m:
                raise ValueError("pyproject.toml: bad inline table at %d" % pos)
            table[m.group(1)], pos = _toml_value(text, m.end())
    m = re.compile(r"(true|false|[0-9]+)").match(text, pos)
    if m:
        v = m.group(1)
        return (v == "true") if v in ("true", "false") else int(v), m.end()
    raise ValueError("pyproject.toml: value not understood at %d" % pos)


def _read_toml(text):
    """The subset of TOML pyproject.toml uses, as tomllib would read it."""
    doc, table, pos = {}, None, 0
    table = doc
    key_re = re.compile(r"([A-Za-z0-9_.\"-]+)\s*=")
    while pos < len(text):
        c = text[pos]
        if c in " \t\r\n":
            pos += 1
        elif c == "#":
            pos = text.find("\n", pos)
            pos = len(text) if pos < 0 else pos
        elif c == "[":
            end = text.index("]", pos)
            table = doc
            for part in text[pos + 1:end].strip().split("."):
                table = table.setdefault(part.strip().strip('"'), {})
            pos = end + 1
        else:
            m = key_re.match(text, pos)
            if not m:
                raise ValueError("pyproject.toml: line not understood at %d" % pos)
            value, pos = _toml_value(text, m.end())
            table[m.group(1).strip('"')] = value
    return doc


def _project():
    with open(os.path.join(_ROOT, "pyproject.toml"), "rb") as f:
        raw = f.read()
    try:
        import tomllib
    except ImportError:
        return _read_toml(raw.decode("utf-8"))["project"]
    return tomllib.loads(raw.decode("utf-8"))["project"]


def _metadata():
    """METADATA (core metadata 2.1) of [project]."""
    p = _project()
    lines = [
        "Metadata-Version: 2.1",
        "Name: %s" % p["name"],
        "Version: %s" % p["version"],
        "Summary: %s" % p.get("description", ""),
    ]
    if "license" in p:
        lines.append("License: %s" % p["license"].get("text", ""))
    if "requires-python" in p:
        lines.append("Requires-Python: %s" % p["requires-python"])
    for c in p.get("classifiers", []):
        lines.append("Classifier: %s" % c)
    for name, url in p.get("urls", {}).items():
        lines.append("Project-URL: %s, %s" % (name, url))
    for d in p.get("dependencies", []):
        lines.append("Requires-Dist: %s" % d)
    return p["name"], p["version"], "\n".join(lines) + "\n"


# ---- archives ------------------------------------------------------------

# Reproducible: every member dated SOURCE_DATE_EPOCH, else 1980-01-01.
_EPOCH = max(int(os.environ.get("SOURCE_DATE_EPOCH", "315532800")), 315532800)


def _record_hash(data):
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _wheel(directory, members, tag="py3-none-any"):
    """Writes a wheel of members [(arcname, bytes)]; its file name."""
    name, version, metadata = _metadata()
    dist = "%s-%s" % (name, version)
    info = dist + ".dist-info"
    wheel_text = ("Wheel-Version: 1.0\nGenerator: tlsmail_build\n"
                  "Root-Is-Purelib: true\nTag: %s\n" % tag)
    members = list(members) + [
        (info + "/METADATA", metadata.encode()),
        (info + "/WHEEL", wheel_text.encode()),
    ]
    record = "".join("%s,%s,%d\n" % (arc, _record_hash(data), len(data))
                     for arc, data in members)
    record += info + "/RECORD,,\n"
    members.append((info + "/RECORD", record.encode()))
    filename = "%s-%s.whl" % (dist, tag)
    stamp = time.gmtime(_EPOCH)[:6]
    with zipfile.ZipFile(os.path.join(directory, filename), "w",
                         zipfile.ZIP_DEFLATED) as z:
        for arc, data in members:
            zi = zipfile.ZipInfo(arc, stamp)
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    return filename


def _package_members():
    out = []
    for f in _FILES:
        with open(os.path.join(_ROOT, _PACKAGE, f), "rb") as fh:
            out.append(("%s/%s" % (_PACKAGE, f), fh.read()))
    return out


# ---- PEP 517 / PEP 660 hooks ---------------------------------------------


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory, _package_members())


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    pth = (_ROOT + "\n").encode()
    return _wheel(wheel_directory, [("__editable__.%s.pth" % _PACKAGE, pth)])


def build_sdist(sdist_directory, config_settings=None):
    name, version, metadata = _metadata()
    base = "%s-%s" % (name, version)
    filename = base + ".tar.gz"
    paths = ["pyproject.toml", "build_backend/tlsmail_build.py"]
    paths += ["%s/%s" % (_PACKAGE, f) for f in _FILES]
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz",
                      format=tarfile.PAX_FORMAT) as tar:
        def add(arc, data):
            ti = tarfile.TarInfo("%s/%s" % (base, arc))
            ti.size = len(data)
            ti.mtime = _EPOCH
            ti.mode = 0o644
            tar.addfile(ti, io.BytesIO(data))
        for p in paths:
            with open(os.path.join(_ROOT, p), "rb") as fh:
                add(p, fh.read())
        add("PKG-INFO", metadata.encode())
    return filename
