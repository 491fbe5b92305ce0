"""Reading the uploaded file: its encoding (UTF-8, or GBK/GB18030 from a Chinese Excel), its header and
its rows, with the line number each row starts on.

A row the file cannot give as it was written is handed on with a problem (a column and a message) instead
of its values, so that the importer rejects it by its line and keeps every other row:

- a line in another encoding than the rest of the file (a GBK line pasted into a UTF-8 file, or the reverse):
  decoding the whole file in one encoding would turn the other lines into mojibake;
- a NUL character in a cell (no text column can store one);
- a cell longer than the CSV reader's field limit (csv.field_size_limit, 131,072 characters);
- a quote that opens and is not closed, which would swallow the lines after it into one cell: the row where
  it opens is rejected and the lines after it are read again as rows.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.utils.translation import gettext_noop

from crm.services.imports.messages import ImportMessage, message
from crm.services.imports.report import ImportFileError, ImportReport, _line_list

_READ_CHUNK = 1 << 20
_TEXT_CHUNK = 1 << 20  # characters of decoded lines handed to the CSV reader at a time


class _Source:
    """A path or a stored file (ImportJob.file), opened in binary as often as needed."""

    def __init__(self, source):
        self.source = source

    def open(self):
        if isinstance(self.source, str | Path):
            return open(self.source, "rb")
        return self.source.storage.open(self.source.name, "rb")


@dataclass
class FileScan:
    """What reading the whole file once found, before any row is written."""

    encoding: str
    lines: int
    note: ImportMessage | None = None
    has_nul: bool = False
    # Physical lines (1-based) not in `encoding`: a mixed file. Their rows are rejected with `foreign_reason`.
    foreign: dict[int, ImportMessage] = field(default_factory=dict)


_NOT_UTF8_LINE = gettext_noop(
    "This line is not UTF-8 text like the rest of the file (it looks like GBK, as a Chinese Excel saves "
    'it), so it was not imported: save the whole file as "CSV UTF-8" and import it again.'
)
_UTF8_LINE = gettext_noop(
    "This line is UTF-8 text while the rest of the file is GBK, so it was not imported: save the whole "
    'file as "CSV UTF-8" and import it again.'
)
_NO_TEXT_LINE = gettext_noop("This line is neither UTF-8 nor GBK text, so it was not imported.")


def file_scan(source) -> FileScan:
    """The file's encoding, line count, whether it holds a NUL byte, and its lines in another encoding.
    Reads the whole file once in chunks (twice, line by line, when it is not all UTF-8)."""
    src = _Source(source)
    with src.open() as f:
        head = f.read(4)
        if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            raise ImportFileError(
                message(
                    gettext_noop(
                        'The file is UTF-16 (Excel\'s "Unicode text"). Save it as "CSV UTF-8 (comma delimited)".'
                    )
                )
            )
        f.seek(0)
        bom = head[:3] == codecs.BOM_UTF8
        encoding = "utf-8-sig" if bom else "utf-8"
        scan = _scan_whole(f, encoding)
    if scan is not None:
        if scan.lines == 0:
            raise ImportFileError(message(gettext_noop("The file is empty.")))
        return scan
    with src.open() as f:
        return _scan_lines(f, bom=bom)


def _scan_whole(f, encoding: str) -> FileScan | None:
    """The file as one text in `encoding`, or None if it is not."""
    decoder = codecs.getincrementaldecoder(encoding)()
    lines = 0
    last = b""
    nul = False
    try:
        while chunk := f.read(_READ_CHUNK):
            decoder.decode(chunk)
            lines += chunk.count(b"\n")
            nul = nul or b"\x00" in chunk
            last = chunk
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return None
    if last and not last.endswith(b"\n"):
        lines += 1
    return FileScan(encoding=encoding, lines=lines, has_nul=nul)


def _scan_lines(f, *, bom: bool) -> FileScan:
    """A file that is not all UTF-8: each line that is not plain ASCII is UTF-8, GBK (GB18030), or neither.
    The file is read in the encoding most of those lines are in (UTF-8 when it starts with a BOM); the
    others are foreign. Lines are split as the CSV reader splits them (\\n, \\r\\n or \\r)."""
    utf8: list[int] = []
    gbk: list[int] = []
    neither: list[int] = []
    number = 0
    nul = False
    tail = b""
    while True:
        chunk = f.read(_READ_CHUNK)
        nul = nul or b"\x00" in chunk
        pieces = (tail + chunk).splitlines(keepends=True)
        tail = b""
        if chunk and pieces and not pieces[-1].endswith(b"\n"):
            tail = pieces.pop()  # may go on in the next chunk (a "\r" may be half of "\r\n")
        for piece in pieces:
            number += 1
            if piece.isascii():
                continue
            try:
                piece.decode("utf-8")
                utf8.append(number)
            except UnicodeDecodeError:
                try:
                    piece.decode("gb18030")
                    gbk.append(number)
                except UnicodeDecodeError:
                    neither.append(number)
        if not chunk:
            break
    if len(neither) > len(utf8) + len(gbk):
        raise ImportFileError(
            message(
                gettext_noop(
                    'The file is neither UTF-8 nor GBK text. Save it as "CSV UTF-8 (comma delimited)" and upload '
                    "it again."
                )
            )
        )
    foreign: dict[int, ImportMessage] = {n: message(_NO_TEXT_LINE) for n in neither}
    note = None
    if bom or len(utf8) >= len(gbk):
        encoding = "utf-8-sig" if bom else "utf-8"
        foreign.update((n, message(_NOT_UTF8_LINE)) for n in gbk)
    else:
        encoding = "gb18030"
        foreign.update((n, message(_UTF8_LINE)) for n in utf8)
        note = message(
            gettext_noop(
                "The file is not UTF-8; it was read as GBK/GB18030 (Chinese Excel's CSV). "
                'Save as "CSV UTF-8" to avoid this guess.'
            )
        )
    return FileScan(encoding=encoding, lines=number, note=note, has_nul=nul, foreign=foreign)


def _header_key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.replace("\ufeff", "").strip().lower())


# A row as the readers hand it on: (line where it starts, cells, problem or None). A problem is (column,
# message); its cells are what could be read of it (an importer needs the order id to reject the order).
Row = tuple[int, list[str], tuple[str, ImportMessage] | None]


@dataclass
class _Csv:
    columns: dict[str, int]
    rows: Iterator[Row]


def _open_csv(
    binary, scan: FileScan, *, required: tuple[str, ...], optional: set[str], report: ImportReport
) -> _Csv:
    # A foreign line is decoded with replacement characters; its row is rejected before anything reads it.
    text = io.TextIOWrapper(binary, encoding=scan.encoding, errors="replace", newline="")
    lines = _Lines(text)
    reader = csv.reader(lines.stream)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError(message(gettext_noop("The file is empty.")))
    except csv.Error as exc:
        raise ImportFileError(
            message(gettext_noop("The header line is not valid CSV: %(error)s"), error=str(exc))
        )
    if 1 in scan.foreign:
        raise ImportFileError(scan.foreign[1])
    keys = [_header_key(h) for h in header]
    columns: dict[str, int] = {}
    for n, key in enumerate(keys):
        if not key:
            continue
        if key in columns:
            raise ImportFileError(
                message(gettext_noop("Column %(name)s appears twice in the header."), name=key)
            )
        columns[key] = n
    missing = [c for c in required if c not in columns]
    if missing:
        msgid = gettext_noop("Missing required column(s): %(missing)s. The header has: %(found)s.")
        if len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
            msgid = gettext_noop(
                "Missing required column(s): %(missing)s. The header has: %(found)s. "
                "The columns must be separated by commas."
            )
        raise ImportFileError(message(msgid, missing=", ".join(missing), found=", ".join(keys) or "-"))
    ignored = [k for k in columns if k not in required and k not in optional]
    if ignored:
        report.notes.append(
            message(gettext_noop("Ignored unknown columns: %(names)s."), names=", ".join(ignored))
        )
    if scan.foreign:
        foreign = sorted(scan.foreign)
        report.notes.append(
            message(
                gettext_noop(
                    "The file mixes encodings: lines not in the encoding of the rest of the file, rejected: "
                    "%(count)d (line %(lines)s)."
                ),
                count=len(foreign),
                lines=_line_list(foreign),
            )
        )
    names = {n: key for key, n in columns.items()}
    return _Csv(columns=columns, rows=_rows(reader, lines, scan, names, report))


def _rows(
    reader, lines: _Lines, scan: FileScan, names: dict[int, str], report: ImportReport
) -> Iterator[Row]:
    width = max(names) + 1
    limit = csv.field_size_limit()
    base = 0  # physical lines read before `reader` started (a new reader replays lines after a bad row)
    previous = reader.line_num
    foreign, has_nul = scan.foreign, scan.has_nul
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error:
            # The one error of a non-strict reader on text: a cell longer than the field limit.
            start, end = base + previous + 1, base + reader.line_num
            lines.keep_from = end + 1
            cells = _cells_before(lines.between(start, start)[0], limit)
            column = names.get(len(cells) - 1, "")
            if end > start:  # inside a quoted cell: the quote was never closed
                problem = (column, message(_UNCLOSED_QUOTE))
                reader, base, previous = _replay(lines, start, end)
            else:
                problem = (column, message(_FIELD_TOO_LARGE, limit=f"{limit:,}"))
                previous = reader.line_num
            report.unread_lines.append(start)
            yield start, cells, problem
            continue
        start, previous = base + previous + 1, reader.line_num
        end = base + previous
        lines.keep_from = start
        # A row over several lines, or one that ends in a line break (a quote open at the end of the file).
        if (end > start or (cells and cells[-1][-1:] in ("\n", "\r"))) and (
            column := _unclosed_quote(cells, lines.between(start, end), width, names)
        ) is not None:
            cells = _cells_before(lines.between(start, start)[0], limit)
            report.unread_lines.append(start)
            reader, base, previous = _replay(lines, start, end)
            yield start, cells, (column, message(_UNCLOSED_QUOTE))
            continue
        # Blank lines are skipped. Almost every row has its first cell filled, which settles it without
        # looking at the others (this runs once per row of a million-row file).
        if not (cells and (cells[0].strip() or any(c.strip() for c in cells))):
            continue
        if foreign and (bad := next((n for n in range(start, end + 1) if n in foreign), None)):
            yield start, cells, ("", foreign[bad])
            continue
        if has_nul and any("\x00" in c for c in cells):
            n = next(n for n, c in enumerate(cells) if "\x00" in c)
            yield (
                start,
                cells,
                (
                    names.get(n, ""),
                    message(gettext_noop("Contains a NUL character, which no text can hold.")),
                ),
            )
            continue
        yield start, cells, None


_FIELD_TOO_LARGE = gettext_noop(
    "A cell of this line is longer than %(limit)s characters, more than the CSV reader accepts, so the line "
    "was not imported."
)
_UNCLOSED_QUOTE = gettext_noop(
    'A quote (") opens in this cell and is not closed, so this line was not imported; the lines after it '
    "were read again as rows."
)


def _replay(lines: _Lines, start: int, end: int):
    """A new reader that reads again the lines after `start` up to `end`, then the rest of the file."""
    again = lines.between(start + 1, end)
    lines.keep_from = start + 1
    return csv.reader(itertools.chain(again, lines.stream)), start, 0


def _cells_before(line: str, limit: int) -> list[str]:
    """The cells of a line that could not be read as a row, up to the one at fault (the last one)."""
    try:
        return next(csv.reader([line[: limit - 1]]), [])
    except csv.Error:
        return []


def _unclosed_quote(cells: list[str], raw: list[str], width: int, names: dict[int, str]) -> str | None:
    """For a row that spans lines: the column of a quoted cell that swallowed the lines after it, or None.
    A quoted cell may hold line breaks (an address); it is taken as an unclosed quote when the row's text
    is not valid CSV read strictly (a quote never closed, or closed with text after it), or when one of
    the lines inside the cell has as many commas as a row of the file."""
    try:
        list(csv.reader(raw, strict=True))
        strict_ok = True
    except csv.Error:
        strict_ok = False
    for n, cell in enumerate(cells):
        if "\n" not in cell and "\r" not in cell:
            continue
        inner = cell.splitlines()[1:]
        if not strict_ok or (width > 2 and any(line.count(",") >= width - 1 for line in inner)):
            return names.get(n, "")
    return None


class _Lines:
    """The decoded file's physical lines for the CSV reader (`stream`), handed over in chunks of lines, with
    the chunks from line `keep_from` on kept so that a misread row's lines can be read again."""

    def __init__(self, text):
        self.text = text
        self.chunks: list[tuple[int, list[str]]] = []  # (number of its first line, lines)
        self.keep_from = 1
        self.next_number = 1
        self.stream = itertools.chain.from_iterable(self._read())

    def _read(self):
        while chunk := self.text.readlines(_TEXT_CHUNK):
            keep = self.keep_from
            self.chunks = [c for c in self.chunks if c[0] + len(c[1]) > keep]
            self.chunks.append((self.next_number, chunk))
            self.next_number += len(chunk)
            yield chunk

    def between(self, first: int, last: int) -> list[str]:
        """Lines `first` to `last` (inclusive), all read already."""
        found = []
        for number, chunk in self.chunks:
            if number + len(chunk) <= first or number > last:
                continue
            found.extend(chunk[max(first - number, 0) : last - number + 1])
        return found


def _cell_getter(columns: dict[str, int]):
    def get(cells: list[str], name: str) -> str:
        n = columns.get(name)
        if n is None or n >= len(cells):
            return ""
        return cells[n].strip()

    return get


def _too_many_cells(cells: list[str], width: int) -> bool:
    return len(cells) > width and any(c.strip() for c in cells[width:])
