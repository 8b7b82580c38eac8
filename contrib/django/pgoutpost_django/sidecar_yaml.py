"""Writes and reads the models, relations and generic_relations sections of sidecar.yaml.

The writer emits YAML that pgoutpost's strict decoder accepts. The reader
understands the block and flow YAML a sidecar.yaml is written in (mappings,
lists, plain and quoted scalars, comments) for those three sections only; the
rest of the file is never parsed, so --check and --update work on any
sidecar.yaml. Nothing beyond Django is needed.
"""

import json
import re

from pgoutpost_django.sidecar import GenericRelation, Model, Relation, Sections, default_table, qualify, short

SECTIONS = ("models", "relations", "generic_relations")
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.()-]*")
_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}
_TOP_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:")


def scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if _PLAIN.fullmatch(v) and v.lower() not in _WORDS:
        return v
    return json.dumps(v, ensure_ascii=False)


def write_sections(s: Sections):
    """Returns {section: text}, each text starting with "section:"."""
    out = {}
    lines = ["models:" + ("" if s.models else " []")]
    for m in s.models:
        if m.comment:
            lines.append(f"  # {m.comment}")
        if m.label:
            lines.append(f"  - {'name' if is_label_name(m.label) else 'label'}: {scalar(m.label)}")
            if default_table(m.label) != m.table:
                lines.append(f"    table: {scalar(short(m.table))}")
        else:
            lines.append(f"  - name: {scalar(m.table)}")
        lines.append(f"    kind: {m.sync.kind}")
        if m.sync.row_filter:
            lines.append(f"    row_filter: {json.dumps(m.sync.row_filter, ensure_ascii=False)}")
        if m.sync.columns:
            lines.append(f"    columns: [{', '.join(scalar(c) for c in m.sync.columns)}]")
        if m.sync.skip_validation:
            lines.append("    skip_validation: true")
        if m.sync.on_truncate:
            lines.append(f"    on_truncate: {m.sync.on_truncate}")
    out["models"] = "\n".join(lines) + "\n"

    lines = ["relations:" + ("" if s.relations else " {}")]
    for key, r in s.relations.items():
        lines.append(f"  {scalar(key)}: {relation_text(r)}")
    out["relations"] = "\n".join(lines) + "\n"

    lines = ["generic_relations:" + ("" if s.generic_relations else " []")]
    for g in s.generic_relations:
        lines.append(f"  - target: {scalar(g.target)}")
        lines.append(f"    table: {scalar(g.table)}")
        lines.append(f"    content_type_column: {scalar(g.content_type_column)}")
        lines.append(f"    object_id_column: {scalar(g.object_id_column)}")
        lines.append(f"    content_type: {scalar(g.content_type)}")
        lines.append(f"    on_delete: {scalar(g.on_delete)}")
    out["generic_relations"] = "\n".join(lines) + "\n"
    return out


def relation_text(r: Relation):
    if not (r.references or r.parent_link or r.default):
        return scalar(r.rule)
    parts = []
    if r.rule:
        parts.append(f"on_delete: {scalar(r.rule)}")
    if r.parent_link:
        parts.append("parent_link: true")
    if r.references:
        parts.append(f"references: {scalar(r.references)}")
    if r.default:
        parts.append(f"default: {json.dumps(r.default, ensure_ascii=False)}")
    return "{" + ", ".join(parts) + "}"


HEADER = (
    "# The synced models, their on_delete rules and generic relations, written by\n"
    "# `manage.py pgoutpost_config` from the Django models. Change the models (or\n"
    "# the PGOUTPOST_* settings) and run it again; `--check` compares in CI.\n"
)


def write(s: Sections):
    texts = write_sections(s)
    return HEADER + "".join(texts[k] + ("\n" if k != SECTIONS[-1] else "") for k in SECTIONS)


def _blocks(text):
    """Splits a file into its top-level blocks: [(key or None, lines)]. The
    comments and blank lines just before a key belong to the key's block."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, l in enumerate(lines) if _TOP_KEY.match(l)]
    blocks = []
    prev = 0
    for n, i in enumerate(starts):
        # the block before ends at the last line that is not a comment or blank
        j = i
        while j > prev and (lines[j - 1].strip() == "" or lines[j - 1].startswith("#")):
            j -= 1
        if n == 0:
            blocks.append((None, lines[:i]))
        else:
            key = _TOP_KEY.match(lines[starts[n - 1]]).group(1)
            blocks.append((key, lines[prev:j]))
            blocks.append((None, lines[j:i]))
        prev = i
    if starts:
        blocks.append((_TOP_KEY.match(lines[starts[-1]]).group(1), lines[prev:]))
    else:
        blocks.append((None, lines))
    return blocks


def replace_sections(text, s: Sections):
    """text with its three sections replaced by s (appended when missing); the rest is kept."""
    texts = write_sections(s)
    out, seen = [], set()
    for key, lines in _blocks(text):
        if key in texts:
            seen.add(key)
            out.append(texts[key])
            trailing = "".join(lines)[len("".join(lines).rstrip("\n")):]
            out.append(trailing[1:] if trailing.startswith("\n") else trailing)
        else:
            out.append("".join(lines))
    result = "".join(out)
    for key in SECTIONS:
        if key not in seen:
            if result and not result.endswith("\n"):
                result += "\n"
            result += "\n" + texts[key]
    return result


class ReadError(Exception):
    """The file's sections are not YAML this reader understands."""


def read_sections(text, filename="sidecar.yaml"):
    """Reads the three sections of a sidecar.yaml into a Sections."""
    raw = {}
    lineno = 1
    for key, lines in _blocks(text):
        if key in SECTIONS:
            first = lines[0].rstrip("\n")
            head = first[first.index(":") + 1 :]
            parser = _Parser(filename, [head] + [l.rstrip("\n") for l in lines[1:]], lineno)
            raw[key] = parser.section()
        lineno += len(lines)
    return to_sections(raw, filename)


def resolve_model(name, label="", table=""):
    """The schema.table a models: entry or a generic relation's target names, as pgoutpost resolves it."""
    if label or is_label_name(name):
        label = label or name
        if table:
            return table if "." in table else f"public.{table}"
        return default_table(label)
    return name if "." in name else f"public.{name}"


def to_sections(raw, filename):
    """The raw YAML of the three sections as a Sections."""
    s = Sections()
    models = raw.get("models") or []
    if not isinstance(models, list):
        raise ReadError(f"{filename}: models: want a list")
    for i, m in enumerate(models):
        if not isinstance(m, dict):
            raise ReadError(f"{filename}: models[{i}]: want a mapping")
        table = resolve_model(m.get("name") or "", m.get("label") or "", m.get("table") or "")
        kind = m.get("kind") or ""
        sync = _AnySync(
            kind=kind,
            row_filter=str(m.get("row_filter") or ""),
            columns=list(m.get("columns") or []),
            skip_validation=m.get("skip_validation") == "true",
            on_truncate=m.get("on_truncate") or "",
        )
        s.models.append(Model(table=table, sync=sync, label=m.get("label") or m.get("name") or ""))
    relations = raw.get("relations") or {}
    if not isinstance(relations, dict):
        raise ReadError(f"{filename}: relations: want a mapping")
    for key, v in relations.items():
        if isinstance(v, dict):
            s.relations[key] = Relation(
                rule=v.get("on_delete") or "",
                references=v.get("references") or "",
                parent_link=v.get("parent_link") == "true",
                default=v.get("default") or "",
            )
        else:
            s.relations[key] = Relation(rule=v or "")
    generic = raw.get("generic_relations") or []
    if not isinstance(generic, list):
        raise ReadError(f"{filename}: generic_relations: want a list")
    for i, g in enumerate(generic):
        if not isinstance(g, dict):
            raise ReadError(f"{filename}: generic_relations[{i}]: want a mapping")
        target = g.get("target") or ""
        ct = g.get("content_type") or ""
        if not ct and is_label_name(target):
            app, _, model = target.partition(".")
            ct = f"{app}.{model.lower()}"
        s.generic_relations.append(
            GenericRelation(
                target=target,
                table=g.get("table") or "",
                content_type_column=g.get("content_type_column") or "content_type_id",
                object_id_column=g.get("object_id_column") or "object_id",
                content_type=ct,
                on_delete=g.get("on_delete") or "CASCADE",
            )
        )
    return s


class _AnySync:
    """A Sync as read from a file: any kind, so that a wrong one is reported as a difference."""

    def __init__(self, kind, row_filter, columns, skip_validation, on_truncate):
        self.kind, self.row_filter, self.columns = kind, row_filter, columns
        self.skip_validation, self.on_truncate = skip_validation, on_truncate


def canonical_rule(rule):
    """CASCADE, SET(1), SET('x'): SET's literal as pgoutpost reads it."""
    rule = (rule or "").strip()
    if rule.startswith("SET(") and rule.endswith(")"):
        lit = rule[4:-1].strip()
        if len(lit) >= 2 and lit[0] == lit[-1] == "'":
            return "SET('" + lit[1:-1].replace("''", "'").replace("'", "''") + "')"
        return f"SET({lit})"
    return rule


def diff(want: Sections, have: Sections, filename):
    """What the file (have) says differently from the models (want), one line each."""
    out = []

    def models_of(s):
        return {m.table: m for m in s.models}

    w, h = models_of(want), models_of(have)
    for t in sorted(w.keys() | h.keys()):
        name = short(t)
        if t not in h:
            out.append(f"models: {name} is a {w[t].sync.kind} model ({w[t].label or 'auto-created'}), missing from {filename}")
            continue
        if t not in w:
            out.append(f"models: {filename} lists {name} as {h[t].sync.kind}; the models do not sync it")
            continue
        a, b = w[t].sync, h[t].sync
        for attr, default in (("kind", ""), ("row_filter", ""), ("columns", []), ("skip_validation", False), ("on_truncate", "log")):
            va, vb = getattr(a, attr) or default, getattr(b, attr) or default
            if attr == "row_filter":
                va, vb = " ".join(va.split()), " ".join(vb.split())
            if va != vb:
                out.append(f"models: {name}: {attr} is {vb!r} in {filename}, the models say {va!r}")

    def relations_of(s):
        return {qualify(k): (k, r.normalized()) for k, r in s.relations.items()}

    w, h = relations_of(want), relations_of(have)
    for k in sorted(w.keys() | h.keys()):
        if k not in h:
            out.append(f"relations: {w[k][0]}: {relation_text(w[k][1])} is missing from {filename}")
            continue
        if k not in w:
            out.append(f"relations: {filename} has {h[k][0]}: {relation_text(h[k][1])}; the models have no such foreign key into a synced table")
            continue
        a, b = w[k][1], h[k][1]
        a = Relation(canonical_rule(a.rule), a.references, a.parent_link, a.default)
        b = Relation(canonical_rule(b.rule), b.references, b.parent_link, b.default)
        if a != b:
            out.append(f"relations: {h[k][0]}: {filename} says {relation_text(b)}, the models say {relation_text(a)}")

    def generics_of(s):
        return {
            (resolve_model(g.target), resolve_model(g.table), g.content_type_column, g.object_id_column): g
            for g in s.generic_relations
        }

    w, h = generics_of(want), generics_of(have)
    for k in sorted(w.keys() | h.keys()):
        what = f"{short(k[0])} -> {short(k[1])}({k[2]}, {k[3]})"
        if k not in h:
            out.append(f"generic_relations: {what} is missing from {filename}")
        elif k not in w:
            out.append(f"generic_relations: {filename} has {what}; the models have no such GenericRelation into a deleted table")
        elif (w[k].content_type, canonical_rule(w[k].on_delete)) != (h[k].content_type, canonical_rule(h[k].on_delete)):
            out.append(
                f"generic_relations: {what}: {filename} says content_type {h[k].content_type}, on_delete {h[k].on_delete}; "
                f"the models say {w[k].content_type}, {w[k].on_delete}"
            )
    return out


def is_label_name(name):
    _, dot, rest = name.partition(".")
    return bool(dot) and rest != rest.lower()


def _strip_comment(line):
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


class _Parser:
    """Block YAML of one section: lines[0] is what follows "key:" on its line."""

    def __init__(self, filename, lines, first_line):
        self.filename = filename
        self.first_line = first_line
        self.lines = [(_strip_comment(l), first_line + i) for i, l in enumerate(lines)]

    def fail(self, lineno, msg):
        raise ReadError(f"{self.filename}:{lineno}: {msg}")

    def section(self):
        head, lineno = self.lines[0]
        rest = [(l, n) for l, n in self.lines[1:] if l.strip()]
        if head.strip():
            if rest:
                self.fail(rest[0][1], "unexpected content after a value on the section's line")
            return _Flow(head.strip(), self, lineno).value()
        if not rest:
            return None
        node, i = self.block(rest, 0, indent_of(rest[0][0]))
        if i != len(rest):
            self.fail(rest[i][1], "bad indentation")
        return node

    def block(self, lines, i, indent):
        line, n = lines[i]
        if line.strip().startswith("- ") or line.strip() == "-":
            return self.seq(lines, i, indent)
        return self.mapping(lines, i, indent)

    def seq(self, lines, i, indent):
        items = []
        while i < len(lines) and indent_of(lines[i][0]) == indent and lines[i][0].strip().startswith("-"):
            line, n = lines[i]
            body = line.strip()[1:]
            if not body.strip():
                i += 1
                if i < len(lines) and indent_of(lines[i][0]) > indent:
                    node, i = self.block(lines, i, indent_of(lines[i][0]))
                    items.append(node)
                else:
                    items.append(None)
                continue
            inner_indent = indent + 1 + (len(body) - len(body.lstrip()))
            inner = " " * inner_indent + body.lstrip()
            if _key_of(body.strip()) is not None:
                # "- key: value" starts a mapping whose keys line up with key
                sub = [(inner, n)]
                i += 1
                while i < len(lines) and indent_of(lines[i][0]) >= inner_indent:
                    sub.append(lines[i])
                    i += 1
                node, j = self.mapping(sub, 0, inner_indent)
                if j != len(sub):
                    self.fail(sub[j][1], "bad indentation")
                items.append(node)
            else:
                items.append(_Flow(body.strip(), self, n).value())
                i += 1
        return items, i

    def mapping(self, lines, i, indent):
        out = {}
        while i < len(lines) and indent_of(lines[i][0]) == indent:
            line, n = lines[i]
            kv = _key_of(line.strip())
            if kv is None:
                self.fail(n, f"want key: value, got {line.strip()!r}")
            key, value = kv
            if key in out:
                self.fail(n, f"duplicate key {key}")
            i += 1
            if value:
                out[key] = _Flow(value, self, n).value()
            elif i < len(lines) and indent_of(lines[i][0]) > indent:
                out[key], i = self.block(lines, i, indent_of(lines[i][0]))
            elif i < len(lines) and indent_of(lines[i][0]) == indent and lines[i][0].strip().startswith("-"):
                out[key], i = self.seq(lines, i, indent)
            else:
                out[key] = None
        return out, i


def indent_of(line):
    return len(line) - len(line.lstrip(" "))


def _key_of(text):
    """("key", "value") for "key: value" (the key plain or quoted), else None."""
    if text[:1] in "'\"":
        f = _Flow(text, None, 0)
        try:
            key = f.quoted()
        except ReadError:
            return None
        rest = text[f.i :]
    else:
        m = re.match(r"([^\s:#\[\]{},'\"][^:#]*?)\s*:(\s|$)", text)
        if not m:
            return None
        key, rest = m.group(1), text[m.end(1) :]
    rest = rest.lstrip()
    if not rest.startswith(":"):
        return None
    return key, rest[1:].strip()


class _Flow:
    """A flow value: [a, b], {k: v}, 'quoted', "quoted" or plain."""

    def __init__(self, text, parser, lineno):
        self.t, self.i, self.parser, self.lineno = text, 0, parser, lineno

    def fail(self, msg):
        raise ReadError(f"line {self.lineno}: {msg}" if self.parser is None else f"{self.parser.filename}:{self.lineno}: {msg}")

    def value(self):
        v = self.node(top=True)
        self.ws()
        if self.i != len(self.t):
            self.fail(f"unexpected {self.t[self.i:]!r}")
        return v

    def ws(self):
        while self.i < len(self.t) and self.t[self.i] in " \t":
            self.i += 1

    def node(self, top=False):
        self.ws()
        c = self.t[self.i : self.i + 1]
        if c == "[":
            self.i += 1
            items = []
            while True:
                self.ws()
                if self.t[self.i : self.i + 1] == "]":
                    self.i += 1
                    return items
                items.append(self.node())
                self.ws()
                if self.t[self.i : self.i + 1] == ",":
                    self.i += 1
                elif self.t[self.i : self.i + 1] != "]":
                    self.fail("unclosed [")
        if c == "{":
            self.i += 1
            out = {}
            while True:
                self.ws()
                if self.t[self.i : self.i + 1] == "}":
                    self.i += 1
                    return out
                key = self.node()
                self.ws()
                if self.t[self.i : self.i + 1] != ":":
                    self.fail("want key: value in {}")
                self.i += 1
                out[key] = self.node()
                self.ws()
                if self.t[self.i : self.i + 1] == ",":
                    self.i += 1
                elif self.t[self.i : self.i + 1] != "}":
                    self.fail("unclosed {")
        if c in ("'", '"'):
            return self.quoted()
        if c in ("&", "*", "!", "|", ">"):
            self.fail(f"anchors, tags and block scalars are not supported here: {self.t!r}")
        stop = "" if top else ",]}:"
        start = self.i
        while self.i < len(self.t) and self.t[self.i] not in stop:
            if not top and self.t[self.i] == ":" and self.i + 1 < len(self.t) and self.t[self.i + 1] not in " ,]}":
                self.i += 1
                continue
            self.i += 1
        v = self.t[start : self.i].strip()
        return None if v in ("", "~", "null") else v

    def quoted(self):
        q = self.t[self.i]
        self.i += 1
        out = []
        while self.i < len(self.t):
            c = self.t[self.i]
            if q == "'" and c == "'":
                if self.t[self.i + 1 : self.i + 2] == "'":
                    out.append("'")
                    self.i += 2
                    continue
                self.i += 1
                return "".join(out)
            if q == '"' and c == "\\":
                end = self.i + 2
                if self.t[self.i + 1 : self.i + 2] == "u":
                    end = self.i + 6
                out.append(json.loads('"' + self.t[self.i : end] + '"'))
                self.i = end
                continue
            if q == '"' and c == '"':
                self.i += 1
                return "".join(out)
            out.append(c)
            self.i += 1
        self.fail("unclosed quote")
