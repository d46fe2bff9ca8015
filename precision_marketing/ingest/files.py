"""Reading landing files: bytes (plain or gzip), records one at a time with CSV quoting and per-line
decoding (a bad line or record is kept with its reason, never costs the file), headers matched to the contract."""

from __future__ import annotations

import codecs
import csv
import gzip
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from precision_marketing.contract import SourceContract
from precision_marketing.ingest.mapping import SourceMapping

MAX_RECORD_CHARS = 1 << 20  # a quoted field running longer than this is broken quoting, not data

csv.field_size_limit(MAX_RECORD_CHARS)


def open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")


@dataclass
class Record:
    row: int  # 1-based data record number in the file
    byte_offset: int  # where the record starts in the (decompressed) file
    fields: list[str]
    error: str | None = None


class _Line:
    __slots__ = ("index", "text", "offset", "error", "raw")

    def __init__(self, index: int, text: str, offset: int, error: str | None, raw: bytes):
        self.index, self.text, self.offset, self.error, self.raw = index, text, offset, error, raw


class _Lines:
    """The file's lines decoded one by one (a line that does not decode is kept, replace-decoded, with the
    reason naming the byte offset), handed to csv.reader; the lines of the record being read are kept so the
    reader can be restarted after a broken record. Memory: one record's lines, whatever the file size."""

    def __init__(self, handle, encoding: str):
        self._source = self._decode(handle, encoding)
        self._replay: deque[_Line] = deque()
        self.consumed: list[_Line] = []  # lines handed out since the last mark

    @staticmethod
    def _decode(handle, encoding: str) -> Iterator[_Line]:
        offset = 0
        utf8 = codecs.lookup(encoding).name == "utf-8"
        for index, raw in enumerate(handle):
            if index == 0 and utf8 and raw.startswith(codecs.BOM_UTF8):  # a byte-order mark is not data
                offset, raw = len(codecs.BOM_UTF8), raw[len(codecs.BOM_UTF8) :]
            try:
                text, error = raw.decode(encoding), None
            except UnicodeDecodeError as failure:
                bad = raw[failure.start : failure.end][:4].hex().upper()
                error = (
                    f"undecodable byte 0x{bad} at byte {offset + failure.start} of the file "
                    f"({encoding}: {failure.reason})"
                )
                text = raw.decode(encoding, errors="replace")
            yield _Line(index, text, offset, error, raw)
            offset += len(raw)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self._replay.popleft() if self._replay else next(self._source)
        self.consumed.append(line)
        return line.text

    def take(self) -> list[_Line]:
        """The lines of the record just read; the next record starts fresh."""
        lines, self.consumed = self.consumed, []
        return lines

    def skip_first_and_replay(self) -> _Line:
        """After a broken record: give up its first line, read the lines after it again."""
        first, rest = self.consumed[0], self.consumed[1:]
        self._replay.extendleft(reversed(rest))
        self.consumed = []
        return first


def csv_dialect(mapping: SourceMapping) -> dict:
    """The csv module's reading of the mapping's delimiter and quote, strict about broken quoting."""
    return dict(delimiter=mapping.delimiter, quotechar=mapping.quotechar, strict=True)


def read_records(path: Path, mapping: SourceMapping) -> tuple[list[str], Iterator[Record]]:
    """(header, records) of a landing file; records carry their row number, byte offset and any error."""
    handle = open_binary(path)
    lines = _Lines(handle, mapping.encoding)
    dialect = csv_dialect(mapping)
    header: list[str] = []
    for text in lines:  # the first non-blank line is the header
        if text.strip():
            header = next(csv.reader([text], **dialect), [])
            break
    lines.take()

    def records() -> Iterator[Record]:
        row = 0
        try:
            while True:
                reader = csv.reader(lines, **dialect)
                try:
                    for fields in reader:
                        record_lines = lines.take()
                        if not fields or (len(fields) == 1 and not fields[0].strip()):
                            continue  # a blank line is not a row
                        row += 1
                        error = next((line.error for line in record_lines if line.error), None)
                        yield Record(row, record_lines[0].offset, fields, error)
                    return
                except csv.Error as failure:
                    if not lines.consumed:
                        return
                    first = lines.skip_first_and_replay()
                    row += 1
                    reason = first.error or (
                        "unterminated quoted field (the quote opened on this row is never closed)"
                        if "end of data" in str(failure) or "field limit" in str(failure)
                        else f"broken CSV quoting ({failure})"
                    )
                    yield Record(row, first.offset, first.text.rstrip("\r\n").split(mapping.delimiter), reason)
        finally:
            handle.close()

    return header, records()


def read_header(path: Path, mapping: SourceMapping) -> list[str]:
    header, records = read_records(path, mapping)
    records.close()
    return header


def match_header(header: list[str], source: SourceContract, mapping: SourceMapping) -> dict[str, int]:
    """Contract column -> index in the export's header (names compared trimmed and case-insensitively)."""
    positions: dict[str, int] = {}
    for index, name in enumerate(header):
        positions.setdefault(name.strip().lower(), index)
    return {
        column: positions[mapping.header_name(column).strip().lower()]
        for column in source.column_names
        if mapping.header_name(column).strip().lower() in positions
    }


# ------------------------------------------------------------------------------------- normalising
