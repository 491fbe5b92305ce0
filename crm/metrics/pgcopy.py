"""NumPy columns in and out of PostgreSQL with binary COPY.

A binary COPY of NOT NULL fixed-width columns (int2/int4/int8/float8/bool) has the same layout for
every row: a 16-bit field count, then per field a 32-bit length and the big-endian value. NumPy reads
and writes that as a structured array in one step, which moves a million rows in well under a second
where a Python loop over tuples would take several."""

from __future__ import annotations

import struct

import numpy as np

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = _SIGNATURE + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)
_TYPES = {"int2": ">i2", "int4": ">i4", "int8": ">i8", "float8": ">f8", "bool": "?"}


def _row_dtype(columns: list[tuple[str, str]]) -> np.dtype:
    fields = [("_count", ">i2")]
    for name, pg_type in columns:
        fields += [(f"_len_{name}", ">i4"), (name, _TYPES[pg_type])]
    return np.dtype(fields)


def copy_out(cursor, query: str, columns: list[tuple[str, str]], params=None) -> dict[str, np.ndarray]:
    """Run `COPY (query) TO STDOUT (FORMAT binary)` and return its columns as native-endian arrays.
    `columns` names each selected column and its PostgreSQL type, in order; none may be NULL."""
    chunks = []
    with cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT binary)", params) as copy:
        for chunk in copy:
            chunks.append(bytes(chunk))
    data = b"".join(chunks)
    if not data.startswith(_SIGNATURE):
        raise ValueError("not a binary COPY stream")
    (extension,) = struct.unpack_from(">i", data, len(_SIGNATURE) + 4)
    start = len(_HEADER) + extension
    dtype = _row_dtype(columns)
    rows, rest = divmod(len(data) - start - len(_TRAILER), dtype.itemsize)
    if rest:
        raise ValueError("binary COPY rows are not fixed-width: is a column NULL or of another type?")
    table = np.frombuffer(data, dtype=dtype, offset=start, count=rows)
    if rows and not np.all(table["_count"] == len(columns)):
        raise ValueError("unexpected field count in binary COPY")
    return {name: table[name].astype(table[name].dtype.newbyteorder("=")) for name, _ in columns}


def copy_in(cursor, table: str, columns: list[tuple[str, str]], arrays: dict[str, np.ndarray]) -> None:
    """`COPY table (columns) FROM STDIN (FORMAT binary)` from NumPy arrays of equal length."""
    dtype = _row_dtype(columns)
    n = len(arrays[columns[0][0]])
    rows = np.empty(n, dtype=dtype)
    rows["_count"] = len(columns)
    for name, pg_type in columns:
        rows[f"_len_{name}"] = np.dtype(_TYPES[pg_type]).itemsize
        rows[name] = arrays[name]
    names = ", ".join(name for name, _ in columns)
    with cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT binary)") as copy:
        copy.write(_HEADER)
        # Written in slices so that a million rows do not need a second full-size bytes copy at once.
        step = 200_000
        for i in range(0, n, step):
            copy.write(rows[i : i + step].tobytes())
        copy.write(_TRAILER)
