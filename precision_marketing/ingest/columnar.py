"""The fast path of the ingest step: a landing file that parses cleanly is read whole by Arrow's CSV reader and
normalised column by column, each distinct value once. It writes exactly what land.normalise_file's careful path
(records one at a time) would; any file it cannot vouch for goes to the careful path.

A file takes the fast path when:
- its encoding is UTF-8 (Arrow checks every value is valid UTF-8);
- every record is one line and has the header's number of fields (a quoted newline, a short or long row, a
  whitespace-only line: careful path);
- each line holding the quote character parses to the same fields with Python's strict csv reader (the
  careful path's reader), which rejects broken quoting that Arrow would read some way.
Row numbers are then the records' positions (blank lines are not records in either path).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from precision_marketing.ingest.files import csv_dialect, open_binary


def _has_empty_line(body: bytes) -> bool:
    """An empty line ('' or a lone carriage return) in `body` (the file without its final newline)."""
    return (
        body in (b"", b"\r")
        or body.startswith((b"\n", b"\r\n"))
        or body.endswith((b"\n", b"\n\r"))
        or b"\n\n" in body
        or b"\n\r\n" in body
    )


def read_clean_file(path, mapping) -> tuple[list[str], pa.Table] | None:
    """(header, text columns c0..cN-1) of a landing file that parses cleanly, else None."""
    if codecs.lookup(mapping.encoding).name != "utf-8":
        return None
    with open_binary(path) as handle:
        data = handle.read()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    body = data[:-1] if data.endswith(b"\n") else data
    if _has_empty_line(body):  # Arrow skips empty lines: number the records the careful path's way
        body = b"\n".join(line for line in body.split(b"\n") if line.rstrip(b"\r"))
    header_end = body.find(b"\n")
    if header_end < 0:
        return None  # no data row: nothing to gain
    try:
        header = next(csv.reader([body[:header_end].rstrip(b"\r").decode("utf-8")], **csv_dialect(mapping)))
        table = pacsv.read_csv(
            pa.py_buffer(body[header_end + 1 :]),
            read_options=pacsv.ReadOptions(column_names=[f"c{i}" for i in range(len(header))]),
            parse_options=pacsv.ParseOptions(
                delimiter=mapping.delimiter, quote_char=mapping.quotechar, newlines_in_values=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={f"c{i}": pa.string() for i in range(len(header))},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError, csv.Error):
        return None
    if table.num_rows != body.count(b"\n"):  # a record over several lines, or a lone carriage return
        return None
    quote = mapping.quotechar.encode()
    if quote in body and not _quoted_lines_agree(body, table, quote, mapping, len(header)):
        return None
    return header, table


def _quoted_lines_agree(body: bytes, table: pa.Table, quote: bytes, mapping, n_fields: int) -> bool:
    """Each data line holding the quote character gives the same fields with Python's strict csv reader."""
    lines = body.split(b"\n")[1:]
    quoted = [index for index, line in enumerate(lines) if quote in line]
    for index, arrow_row in zip(quoted, table.take(quoted).to_pylist(), strict=True):
        try:
            fields = next(csv.reader([lines[index].rstrip(b"\r").decode("utf-8")], **csv_dialect(mapping)))
        except csv.Error:
            return False
        if fields != [arrow_row[f"c{i}"] for i in range(n_fields)]:
            return False
    return True


# Python's str.isspace() characters (what the careful path's strip() removes), for Arrow's RE2
_BLANK = r"^[\t\n\x0b\x0c\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]*$"
# 'YYYY-MM-DD HH:MM:SS' with a real time of day; the date is checked once per distinct day
_PLAIN_UTC = r"^\d{4}-\d{2}-\d{2} ([01]\d|2[0-3]):[0-5]\d:[0-5]\d$"


def normalise_column(
    values: pa.ChunkedArray, function: Callable[[str], str] | None, *, plain_utc: bool = False
) -> pa.Array:
    """A blank value is NULL, any other goes through `function` (None: kept as delivered): the careful path's
    rule, applied once per distinct value. plain_utc: `function` is the timestamp rule of a mapping that reads
    ISO times in UTC, whose bulk ('YYYY-MM-DD HH:MM:SS', a real date and time) it writes as
    'YYYY-MM-DDTHH:MM:SSZ': those are rewritten here without calling it."""
    values = values.combine_chunks()
    if function is None:
        return pc.if_else(pc.match_substring_regex(values, _BLANK), pa.scalar(None, pa.string()), values)
    plain = None
    if plain_utc:
        days = pc.utf8_slice_codeunits(values, 0, 10)
        real_day = _per_distinct(days, _is_iso_date).cast(pa.bool_())
        plain = pc.and_(pc.match_substring_regex(values, _PLAIN_UTC), real_day)
        canonical = pc.binary_join_element_wise(days, pc.utf8_slice_codeunits(values, 11, 19), "T")
        canonical = pc.binary_join_element_wise(canonical, "Z", "")
        values = pc.if_else(plain, pa.scalar(None, pa.string()), values)  # the others go through `function`
    encoded = pc.dictionary_encode(values)
    normalised = [None if not v.strip() else function(v) for v in encoded.dictionary.to_pylist()]
    result = pa.array(normalised, pa.string()).take(encoded.indices)
    return result if plain is None else pc.if_else(plain, canonical, result)


def _is_iso_date(text: str | None) -> bool:
    try:
        dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        return False
    return True


def _per_distinct(values: pa.Array, function: Callable) -> pa.Array:
    """function(value) for each row, computed once per distinct value (NULL stays NULL)."""
    encoded = pc.dictionary_encode(values)
    results = [function(v) for v in encoded.dictionary.to_pylist()]
    return pa.array(results).take(encoded.indices)


def normalise_table(
    table: pa.Table,
    *,
    schema: pa.Schema,
    columns: list[str],
    positions: dict[str, int],
    functions: dict[str, Callable | None],
    excluded: dict[str, set[str]],
    relative: str,
    erased: Callable[[str], bool] | None = None,
    user_position: int | None = None,
    plain_utc: frozenset[str] = frozenset(),
) -> tuple[pa.Table, dict]:
    """The careful path's output for a file read by read_clean_file: every contract column normalised, the
    mapping's exclusions as ingest_error (the first excluded column of the row names it), rows of erased people
    dropped and counted; source_row is the record's number in the file."""
    n = table.num_rows
    output = {}
    for name in columns:
        index = positions.get(name)
        output[name] = (
            normalise_column(table.column(index), functions[name], plain_utc=name in plain_utc)
            if index is not None
            else pa.nulls(n, pa.string())
        )
    error = pa.nulls(n, pa.string())
    for column, values in excluded.items():
        reason = _per_distinct(
            output[column],
            lambda v, c=column, excluded_values=values: (
                f"excluded by the mapping: {c} = '{v.strip()}'"
                if v is not None and v.strip() in excluded_values
                else None
            ),
        )
        error = pc.coalesce(error, reason.cast(pa.string()))
    landed = pa.table(
        {
            **output,
            "source_file": pa.array([relative] * n, pa.string()),
            "source_row": pa.array(range(1, n + 1), pa.int64()),
            "ingest_error": error,
        },
        schema=schema,
    )
    erased_rows = 0
    if erased is not None and user_position is not None:
        names = _per_distinct(table.column(user_position).combine_chunks(), erased).cast(pa.bool_())
        erased_rows = pc.sum(names).as_py() or 0
        landed = landed.filter(pc.invert(names))
    counts = {
        "rows": landed.num_rows,
        "ingest_errors": landed.num_rows - landed.column("ingest_error").null_count,
        "erased_rows": erased_rows,
    }
    return landed, counts
