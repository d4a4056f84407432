"""Line-accurate readers: CSV/TSV, JSON Lines / JSON arrays and Parquet into a :class:`Table` that remembers where
every row came from (1-based physical line, ``row N`` or ``record N``), so every skip and error names it."""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa

from .summary import DataFormatError, Issues

# csv's default field limit (128 KiB) would make one long title / id fail the whole file.
_CSV_FIELD_SIZE_LIMIT = 2**31 - 1


@dataclass
class Table:
    """Rows of one source with the location of each (1-based line, ``"row 3"``, ``"record 3"``)."""

    path: Path | str
    columns: list[str]
    locations: list  # int (1-based line) or str ("row 3", "record 3")
    _rows: list = field(default_factory=list)  # list[list[str]] for CSV, list[dict] for JSON
    _arrow: pa.Table | None = None
    _columns: dict[str, list] | None = None  # name -> values (a pandas DataFrame)

    def __len__(self) -> int:
        return len(self.locations)

    def column(self, name: str) -> list:
        if self._arrow is not None:
            return self._arrow.column(name).to_pylist()
        if self._columns is not None:
            return self._columns[name]
        if self._rows and isinstance(self._rows[0], dict):
            return [row.get(name) for row in self._rows]
        index = self.columns.index(name)
        return [row[index] for row in self._rows]

    def require(self, *names: str | None, hint: str = "") -> None:
        """Raise a DataFormatError naming the first of ``names`` (``None``: not needed) that is not a column."""
        missing = [n for n in names if n is not None and n not in self.columns]
        if missing:
            raise DataFormatError(
                f"{self.path}: missing required column {missing[0]!r}"
                + (f" (also missing: {missing[1:]})" if len(missing) > 1 else "")
                + f"; available columns: {self.columns}{hint}",
                path=self.path,
                column=missing[0],
                reason="missing_column",
            )


def check_file(path: str | os.PathLike, what: str = "data file") -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.is_dir():
        raise DataFormatError(f"{path}: expected a {what}, got a directory", path=path)
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: file is empty (0 bytes)", path=path, reason="empty_file")
    return path


def infer_format(path: Path, file_format: str | None) -> str:
    formats = {"csv": "csv", "tsv": "tsv", "tab": "tsv", "jsonl": "jsonl", "ndjson": "jsonl", "json": "json",
               "parquet": "parquet", "pq": "parquet"}
    if file_format is not None:
        key = file_format.lower().lstrip(".")
        if key not in formats:
            raise ValueError(f"unknown file_format {file_format!r}; expected one of {sorted(set(formats.values()))}")
        return formats[key]
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise DataFormatError(
            f"{path}: cannot infer the file format from the suffix {path.suffix!r}; pass file_format= one of "
            f"{sorted(set(formats.values()))}",
            path=path,
        )
    return formats[suffix]


def read_table(path: Path, file_format: str, issues: Issues) -> Table:
    if file_format in ("csv", "tsv"):
        return read_delimited(path, "," if file_format == "csv" else "\t", issues, quoted=file_format == "csv")
    if file_format in ("jsonl", "json"):
        return _read_json(path, file_format, issues)
    table = _read_parquet(path)
    issues.summary.rows_read += len(table)
    return table


def read_delimited(path: Path, delimiter: str, issues: Issues, *, quoted: bool = True) -> Table:
    """Read a CSV/TSV file with a header line; rows with the wrong number of fields are skipped.

    ``quoted=True`` (CSV) follows RFC 4180 quoting, so a quoted field may hold delimiters and line breaks. A
    record spanning several physical lines that has the wrong number of fields, an unclosed quote at the end of
    the file or more than :data:`MAX_RECORD_LINES` lines is not a record but an unbalanced quote: its first line
    is skipped (``unbalanced_quote``) and reading resumes on the next line, so one stray ``"`` costs one line,
    not the rest of the file. ``quoted=False`` (TSV, as logs are written) reads every line as it is: quotes are
    kept (``"Weird Al" Yankovic live``) and no field spans lines.
    """
    rows: list[list[str]] = []
    lines: list[int] = []
    header: list[str] | None = None
    n_fields = 0
    rows_read = 0
    multi_line = [0, 0, None]  # records spanning several lines, their physical lines, first "start-end"
    old_field_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_field_limit, _CSV_FIELD_SIZE_LIMIT))
    quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    feed = None
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            feed = _LineFeed(f)
            reader = csv.reader(feed, delimiter=delimiter, quoting=quoting)
            while True:
                start = feed.consumed + 1
                feed.mark()
                try:
                    row = next(reader)
                except StopIteration:
                    break
                end = feed.consumed
                # Only a record of several lines, of the wrong width or ending in a line break (an open quote
                # ran into the end of the file, taking the line end into its last field) can be a stray quote.
                suspect = end > start or len(row) != n_fields or (row and row[-1][-1:] in ("\n", "\r"))
                if quoted and header is not None and suspect and _runaway_quote(feed.record, row, n_fields, delimiter):
                    rows_read += 1
                    issues.skip(
                        "unbalanced_quote", path, start,
                        f"a quoted field opened on this line is not closed where it should be (read as one record, "
                        f"it would swallow lines {start}-{end} into {len(row)} fields); line skipped, reading "
                        f"resumes on line {start + 1}",
                    )
                    feed.replay_after_first()
                    reader = csv.reader(feed, delimiter=delimiter, quoting=quoting)
                    continue
                if len(row) != n_fields or header is None:
                    if not row or (len(row) == 1 and not row[0].strip()):
                        if header is not None:
                            issues.skip("blank_line", path, start, "blank line")
                        continue
                    if header is None:
                        header = _check_header([h.strip() for h in row], path, start)
                        n_fields = len(header)
                        continue
                    rows_read += 1
                    issues.skip(
                        "wrong_field_count", path, start,
                        f"expected {n_fields} fields ({', '.join(header)}), got {len(row)}: {_preview(row)}",
                    )
                    continue
                if end > start:
                    multi_line[0] += 1
                    multi_line[1] += end - start + 1
                    multi_line[2] = multi_line[2] or f"{path}:{start}-{end}"
                rows_read += 1
                rows.append(row)
                lines.append(start)
    except UnicodeDecodeError:
        raise utf8_error(path) from None
    except csv.Error as e:
        line = feed.consumed if feed is not None else 1
        raise DataFormatError(f"{path}:{line}: cannot parse the line: {e}", path=path, line=line) from None
    finally:
        csv.field_size_limit(old_field_limit)
    issues.summary.rows_read += rows_read
    issues.summary.lines_read += feed.consumed
    if multi_line[0]:
        issues.summary.notes.append(
            f"{multi_line[0]:,} {'record spans' if multi_line[0] == 1 else 'records span'} several lines through "
            f"quoted line breaks ({multi_line[1]:,} physical "
            f"lines in all), e.g. {multi_line[2]}"
        )
    if header is None:
        raise DataFormatError(f"{path}: file is empty (only blank lines)", path=path, reason="empty_file")
    return Table(path=path, columns=header, locations=lines, _rows=rows)


# A quoted field may hold line breaks, but a record longer than this many physical lines is a stray quote.
MAX_RECORD_LINES = 100


def _runaway_quote(record_lines: list[str], row: list[str], n_fields: int, delimiter: str) -> bool:
    """Whether a record is an unbalanced quote rather than a record (with quoted line breaks, maybe).

    One line: its quote is not closed (the row has the wrong width, or a field ran into the end of the file).
    Several lines: the wrong number of fields, more than MAX_RECORD_LINES lines, or not strictly well-formed
    RFC 4180 (a closing quote followed by more text, a quote open at the end of the file): a stray quote paired
    with a quote on a later line reads as one record otherwise.
    """
    odd = sum(line.count('"') for line in record_lines) % 2 == 1
    if len(record_lines) == 1:
        return odd and (len(row) != n_fields or any("\n" in value or "\r" in value for value in row))
    if len(row) != n_fields or len(record_lines) > MAX_RECORD_LINES or odd:
        return True
    try:
        return len(list(csv.reader(record_lines, delimiter=delimiter, strict=True))) != 1
    except csv.Error:
        return True


class _LineFeed:
    """The physical lines of a text file for ``csv.reader``, remembering the lines of the current record so that
    reading can resume on the line after a record's first line."""

    def __init__(self, lines: Iterable[str]):
        self._lines = iter(lines)
        self._replay: list[str] = []  # lines to give again, last first
        self.record: list[str] = []  # lines given since mark()
        self.consumed = 0  # physical lines given so far (net of replays): the number of the last one

    def __iter__(self) -> "_LineFeed":
        return self

    def __next__(self) -> str:
        line = self._replay.pop() if self._replay else next(self._lines)
        self.record.append(line)
        self.consumed += 1
        return line

    def mark(self) -> None:
        self.record = []

    def replay_after_first(self) -> None:
        again = self.record[1:]
        self._replay.extend(reversed(again))
        self.consumed -= len(again)
        self.record = []


def utf8_error(path: Path) -> DataFormatError:
    """A DataFormatError naming the line and the byte offset (in the file) of the first byte that is not UTF-8."""
    offset, line_no = 0, 1
    with open(path, "rb") as f:
        for raw in f:  # binary lines end at b"\n"; no UTF-8 multi-byte sequence contains that byte
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                before = raw[: e.start]
                line_no += len(re.findall(rb"\r(?!\n)", before))  # old Mac line ends inside this chunk
                column = e.start - max(before.rfind(b"\r"), -1)
                return DataFormatError(
                    f"{path}:{line_no}: not valid UTF-8 ({e.reason}: byte {offset + e.start:,} of the file, "
                    f"byte {column} of the line, {raw[e.start:e.end]!r})",
                    path=path, line=line_no, reason="not_utf8",
                )
            line_no += 1 + len(re.findall(rb"\r(?!\n)", raw))
            offset += len(raw)
    return DataFormatError(f"{path}: not valid UTF-8", path=path, reason="not_utf8")  # pragma: no cover


def _check_header(header: list[str], path: Path, line: int) -> list[str]:
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise DataFormatError(
            f"{path}:{line}: duplicate column name(s) {duplicates} in the header {header}",
            path=path, line=line, reason="duplicate_column",
        )
    return header


def _read_json(path: Path, file_format: str, issues: Issues) -> Table:
    """Read JSON Lines (one object per line), or a JSON array of objects for ``.json`` files."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise utf8_error(path) from None
    if not text.strip():
        raise DataFormatError(f"{path}: file is empty (only whitespace)", path=path, reason="empty_file")
    records: list[tuple[object, object]] = []  # (location, parsed value, _BLANK or exception message)
    if file_format == "json" and text.lstrip().startswith("["):
        try:
            values = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}:{e.lineno}: invalid JSON: {e.msg}", path=path, line=e.lineno) from None
        except RecursionError:
            raise DataFormatError(f"{path}: invalid JSON: nested too deeply", path=path) from None
        except _DuplicateKey as e:
            raise DataFormatError(f"{path}: invalid JSON: duplicate key {e.args[0]!r} in an object", path=path) from None
        records = [(f"record {i}", value) for i, value in enumerate(values, start=1)]
    else:
        lines = re.split(r"\r\n|\r|\n", text)  # not str.splitlines: JSON strings may hold U+2028, U+0085, ...
        if lines[-1] == "":
            lines.pop()
        issues.summary.lines_read += len(lines)
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                records.append((line_no, _BLANK))
                continue
            try:
                records.append((line_no, json.loads(line, object_pairs_hook=_unique_keys)))
            except json.JSONDecodeError as e:
                records.append((line_no, _JsonError(e.msg)))
            except RecursionError:
                records.append((line_no, _JsonError("nested too deeply")))
            except _DuplicateKey as e:
                records.append((line_no, _JsonError(f"duplicate key {e.args[0]!r} (which value is meant?)")))
    rows: list[dict] = []
    locations: list = []
    columns: dict[str, None] = {}
    for where, value in records:
        if value is _BLANK:  # not None: a JSON line `null` is a record that is not an object
            issues.skip("blank_line", path, where, "blank line")
            continue
        issues.summary.rows_read += 1
        if isinstance(value, _JsonError):
            issues.skip("unparsable_line", path, where, f"invalid JSON: {value.message}")
            continue
        if not isinstance(value, dict):
            issues.skip("unparsable_line", path, where, f"expected a JSON object, got {type(value).__name__}")
            continue
        for key in value:
            columns.setdefault(key, None)
        rows.append(value)
        locations.append(where)
    return Table(path=path, columns=list(columns), locations=locations, _rows=rows)


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list) -> dict:
    """``json`` object hook: a key given twice in one object is an error, not "the last one wins"."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


@dataclass
class _JsonError:
    message: str


_BLANK = object()  # a blank JSON Lines line


def _read_parquet(path: Path) -> Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataFormatError(f"{path}: cannot read as Parquet: {e}", path=path) from None
    return Table(
        path=path,
        columns=list(table.column_names),
        locations=[f"row {i}" for i in range(1, table.num_rows + 1)],
        _arrow=table,
    )


def _preview(row: Sequence[str], limit: int = 80) -> str:
    text = repr(list(row))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def iter_lines(path: Path) -> Iterable[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for line_no, line in enumerate(f, start=1):
                yield line_no, line.rstrip("\r\n")
    except UnicodeDecodeError:
        raise utf8_error(path) from None

