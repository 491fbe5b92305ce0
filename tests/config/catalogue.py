"""Our own translatable messages, read from the source the way `makemessages` reads it (xgettext over the
Python modules, Django's templatize over the templates), without writing into any locale directory.

Used by the zh-hans walk over the admin: a message of ours whose zh-hans translation is itself is a
missing translation, and a rendered text that equals the English of a message that has a Chinese
translation was shown untranslated."""

from __future__ import annotations

import ast
import functools
import importlib
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.utils import translation
from django.utils.translation.template import templatize

REPO = Path(__file__).resolve().parents[2]
OUR_CODE = ("config", "crm", "loyalty", "campaigns", "journeys")
OUR_TEMPLATES = ("templates",)
KEYWORDS = [
    "--keyword=gettext_noop",
    "--keyword=gettext_lazy",
    "--keyword=ngettext_lazy:1,2",
    "--keyword=pgettext:1c,2",
    "--keyword=npgettext:1c,2,3",
    "--keyword=pgettext_lazy:1c,2",
    "--keyword=npgettext_lazy:1c,2,3",
]


@dataclass(frozen=True)
class Message:
    msgid: str
    context: str | None = None
    plural: str | None = None
    where: str = ""

    def translated(self, language: str) -> str:
        with translation.override(language):
            if self.context is not None and self.plural is not None:
                return translation.npgettext(self.context, self.msgid, self.plural, 1)
            if self.context is not None:
                return translation.pgettext(self.context, self.msgid)
            if self.plural is not None:
                return translation.ngettext(self.msgid, self.plural, 1)
            return translation.gettext(self.msgid)


def _sources() -> list[Path]:
    files = []
    for top in OUR_CODE:
        files += [p for p in (REPO / top).rglob("*.py") if "migrations" not in p.parts]
    return sorted(files)


def _templates() -> list[Path]:
    files = []
    for top in OUR_TEMPLATES:
        files += (REPO / top).rglob("*.html")
        files += (REPO / top).rglob("*.txt")
    return sorted(files)


@functools.cache
def package_messages(package: str) -> tuple[Message, ...]:
    """The messages of an installed package's Python modules (for one that ships no zh-hans catalogue,
    whose messages we translate in ours)."""
    root = Path(importlib.import_module(package).__file__).parent
    files = sorted(str(p) for p in root.rglob("*.py") if "migrations" not in p.parts)
    with tempfile.TemporaryDirectory() as tmp:
        pot = Path(tmp) / "package.pot"
        subprocess.run(
            ["xgettext", "--language=Python", "--from-code=UTF-8", *KEYWORDS, f"--output={pot}", *files],
            check=True,
            capture_output=True,
        )
        entries = parse_po(pot.read_text(encoding="utf-8"))
    return tuple(
        Message(msgid=e["msgid"], context=e.get("msgctxt"), plural=e.get("msgid_plural"), where=package)
        for e in entries
    )


def _inline_templates(source: Path) -> list[str]:
    text = source.read_text(encoding="utf-8")
    if "{% translate" not in text and "{% blocktranslate" not in text:
        return []
    return [
        node.value
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and ("{% translate" in node.value or "{% blocktranslate" in node.value)
    ]


def _po_unquote(chunks: list[str]) -> str:
    return "".join(ast.literal_eval(c) for c in chunks)


def parse_po(text: str) -> list[dict]:
    """Entries of a .po/.pot file: dicts of msgctxt, msgid, msgid_plural, msgstr (msgstr[0] for plurals),
    and the #: references. Enough of the format for xgettext's and our hand-written files."""
    entries, current, field, refs = [], {}, None, []

    def flush():
        nonlocal current, refs
        if "msgid" in current:
            entry = {k: _po_unquote(v) for k, v in current.items()}
            entry["refs"] = " ".join(refs)
            entries.append(entry)
        current, refs = {}, []

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            flush()
            field = None
            continue
        if line.startswith("#:"):
            refs.append(line[2:].strip())
            continue
        if line.startswith("#"):
            continue
        m = re.match(r"^(msgctxt|msgid_plural|msgid|msgstr(?:\[0\])?|msgstr\[\d+\])\s+(\".*\")$", line)
        if m:
            key = m.group(1)
            if key == "msgid" and "msgid" in current:
                flush()
            field = "msgstr" if key == "msgstr[0]" else key
            if field.startswith("msgstr["):
                field = None  # further plural forms: zh-hans has one
                continue
            current[field] = [m.group(2)]
        elif line.startswith('"') and field is not None:
            current[field].append(line)
    flush()
    return [e for e in entries if e["msgid"]]


@functools.cache
def our_messages() -> tuple[Message, ...]:
    """Every message our code and templates mark for translation, once each."""
    shims: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = [str(p.relative_to(REPO)) for p in _sources()]
        for i, template in enumerate(_templates()):
            shim = Path(tmp) / f"t{i}.py"
            shim.write_text(templatize(template.read_text(encoding="utf-8"), origin=str(template)))
            inputs.append(str(shim))
            shims[str(shim)] = str(template.relative_to(REPO))
        # Django templates written as Python strings (an admin panel's Template("""...""")): xgettext
        # reads them as plain strings, so they are templatized like the template files.
        for source in _sources():
            for n, text in enumerate(_inline_templates(source)):
                shim = Path(tmp) / f"{source.stem}_inline{n}.py"
                shim.write_text(templatize(text, origin=str(source)))
                inputs.append(str(shim))
                shims[str(shim)] = str(source.relative_to(REPO))
        listing = Path(tmp) / "files.txt"
        listing.write_text("\n".join(inputs))
        pot = Path(tmp) / "ours.pot"
        subprocess.run(
            [
                "xgettext",
                "--language=Python",
                "--from-code=UTF-8",
                "--no-wrap",
                *KEYWORDS,
                f"--files-from={listing}",
                f"--output={pot}",
            ],
            check=True,
            capture_output=True,
            cwd=REPO,
        )
        entries = parse_po(pot.read_text(encoding="utf-8"))

    def where(refs: str) -> str:
        first = refs.split(" ")[0]
        path, _sep, line = first.rpartition(":")
        return f"{shims[path]} (template)" if path in shims else first

    return tuple(
        Message(
            msgid=e["msgid"], context=e.get("msgctxt"), plural=e.get("msgid_plural"), where=where(e["refs"])
        )
        for e in entries
    )


CATALOGUES = (
    REPO / "locale/zh_Hans/LC_MESSAGES/django.po",
    REPO / "loyalty/locale/zh_Hans/LC_MESSAGES/django.po",
)


@functools.cache
def catalogue_entries() -> tuple[tuple[Message, str], ...]:
    """(message, msgstr) of every entry of our zh-hans catalogues."""
    out = []
    for path in CATALOGUES:
        for e in parse_po(path.read_text(encoding="utf-8")):
            message = Message(msgid=e["msgid"], context=e.get("msgctxt"), plural=e.get("msgid_plural"))
            out.append((message, e.get("msgstr", "")))
    return tuple(out)


def missing_translations(language: str = "zh-hans") -> list[Message]:
    """Messages of ours with words in them that `language` shows in English: no entry, an empty one, or
    one that the lookup does not find. An entry whose msgstr is deliberately the msgid ("App", "SKU")
    is a translation."""
    same_on_purpose = {(m.context, m.msgid) for m, msgstr in catalogue_entries() if msgstr == m.msgid}
    return [
        m
        for m in our_messages()
        if needs_words(m.msgid)
        and (m.context, m.msgid) not in same_on_purpose
        and m.translated(language) == m.msgid
    ]


def needs_words(msgid: str) -> bool:
    """Whether a message holds words to translate: not only placeholders, numbers, punctuation, or a
    symbol or acronym that reads the same in Chinese (¥, GMV, RFM, CSV)."""
    bare = re.sub(r"%\(\w+\)[sdif]|%[sdif]|\{\w*\}|%\(\w+\)\.\d+f", " ", msgid)
    words = re.findall(r"[A-Za-z][A-Za-z'’-]*", bare)
    return any(not (w.isupper() and len(w) <= 5) for w in words)
