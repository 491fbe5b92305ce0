"""Reading the uploaded file: its encoding (UTF-8, or GBK/GB18030 from a Chinese Excel), its header and
its rows, with the line number each row starts on."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.utils.translation import gettext as _

from crm.services.imports.report import ImportFileError, ImportReport

_READ_CHUNK = 1 << 20


class _Source:
    """A path or a stored file (ImportJob.file), opened in binary as often as needed."""

    def __init__(self, source):
        self.source = source

    def open(self):
        if isinstance(self.source, str | Path):
            return open(self.source, "rb")
        return self.source.storage.open(self.source.name, "rb")


def detect_encoding(source) -> tuple[str, str | None, int]:
    """(codec, note for the user or None, number of lines). Reads the whole file once, in chunks."""
    src = _Source(source)
    with src.open() as f:
        head = f.read(4)
        if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            raise ImportFileError(
                _('The file is UTF-16 (Excel\'s "Unicode text"). Save it as "CSV UTF-8 (comma delimited)".')
            )
        f.seek(0)
        encoding = "utf-8-sig" if head[:3] == codecs.BOM_UTF8 else "utf-8"
        lines, ok = _scan(f, encoding)
    if ok:
        if lines == 0:
            raise ImportFileError(_("The file is empty."))
        return encoding, None, lines
    with src.open() as f:
        lines, ok = _scan(f, "gb18030")
    if ok:
        return (
            "gb18030",
            _(
                "The file is not UTF-8; it was read as GBK/GB18030 (Chinese Excel's CSV). "
                'Save as "CSV UTF-8" to avoid this guess.'
            ),
            lines,
        )
    raise ImportFileError(
        _(
            'The file is neither UTF-8 nor GBK text. Save it as "CSV UTF-8 (comma delimited)" and upload it again.'
        )
    )


def _scan(f, encoding: str) -> tuple[int, bool]:
    decoder = codecs.getincrementaldecoder(encoding)()
    lines = 0
    last = b""
    try:
        while chunk := f.read(_READ_CHUNK):
            decoder.decode(chunk)
            lines += chunk.count(b"\n")
            last = chunk
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return 0, False
    if last and not last.endswith(b"\n"):
        lines += 1
    return lines, True


def _header_key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.replace("\ufeff", "").strip().lower())


@dataclass
class _Csv:
    columns: dict[str, int]
    rows: Iterator[tuple[int, list[str]]]  # (line number where the row starts, cells)


def _open_csv(
    binary, encoding: str, *, required: tuple[str, ...], optional: set[str], report: ImportReport
) -> _Csv:
    text = io.TextIOWrapper(binary, encoding=encoding, newline="")
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError(_("The file is empty."))
    except csv.Error as exc:
        raise ImportFileError(_("The header line is not valid CSV: %(error)s") % {"error": exc})
    keys = [_header_key(h) for h in header]
    columns: dict[str, int] = {}
    for n, key in enumerate(keys):
        if not key:
            continue
        if key in columns:
            raise ImportFileError(_("Column %(name)s appears twice in the header.") % {"name": key})
        columns[key] = n
    missing = [c for c in required if c not in columns]
    if missing:
        hint = ""
        if len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
            hint = " " + _("The columns must be separated by commas.")
        raise ImportFileError(
            _("Missing required column(s): %(missing)s. The header has: %(found)s.")
            % {"missing": ", ".join(missing), "found": ", ".join(keys) or "-"}
            + hint
        )
    ignored = [k for k in columns if k not in required and k not in optional]
    if ignored:
        report.notes.append(_("Ignored unknown columns: %(names)s.") % {"names": ", ".join(ignored)})

    def rows():
        previous = reader.line_num
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise ImportFileError(
                    _("Line %(line)d is not valid CSV: %(error)s") % {"line": previous + 1, "error": exc}
                )
            start, previous = previous + 1, reader.line_num
            # Blank lines are skipped. Almost every row has its first cell filled, which settles it without
            # looking at the others (this runs once per row of a million-row file).
            if cells and (cells[0].strip() or any(c.strip() for c in cells)):
                yield start, cells

    return _Csv(columns=columns, rows=rows())


def _cell_getter(columns: dict[str, int]):
    def get(cells: list[str], name: str) -> str:
        n = columns.get(name)
        if n is None or n >= len(cells):
            return ""
        return cells[n].strip()

    return get


def _too_many_cells(cells: list[str], width: int) -> bool:
    return len(cells) > width and any(c.strip() for c in cells[width:])
