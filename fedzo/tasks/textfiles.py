"""What is wrong with a user's text data file, said before a reader fails on it.

The readers behind ``datasets`` report an empty file, a header without rows, a binary file
or another encoding as "An error occurred while generating the dataset", with the cause on
the exception chain. This module looks at the bytes first and names the cause: the file, what
it is, and for an encoding error the byte position and the ``data.encoding`` key to set.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from fedzo.errors import ConfigError

SNIFF = 1 << 16  # bytes read to tell binary from text
_BOMS = {codecs.BOM_UTF16_LE: "utf-16", codecs.BOM_UTF16_BE: "utf-16", codecs.BOM_UTF32_LE: "utf-32",
         codecs.BOM_UTF32_BE: "utf-32"}


def check_text_file(path: Path, encoding: str, builder: str) -> None:
    """Raise a ConfigError naming ``path`` when it is empty, binary, not in ``encoding`` or a
    CSV with a header and no rows."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"data.encoding: {encoding!r} is not an encoding Python knows; e.g. utf-8, latin-1, "
                          "utf-16, cp1252") from None
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"data.task: {path}: cannot read it ({exc.strerror or exc})") from None
    if not raw.strip():
        raise ConfigError(f"data.task: {path} is empty ({len(raw)} bytes): no columns, no rows")
    bom = next((name for mark, name in sorted(_BOMS.items(), key=lambda kv: -len(kv[0])) if raw.startswith(mark)),
               None)
    if bom and not encoding.lower().replace("_", "-").startswith(bom):
        raise ConfigError(f"data.task: {path} is {bom.upper()} text (it starts with a {bom} byte order mark), not "
                          f"{encoding}; set data.encoding: {bom}")
    if not bom and b"\x00" in raw[:SNIFF]:
        at = raw.index(b"\x00")
        kind = "CSV or TSV" if builder == "csv" else "JSON or JSON Lines"
        raise ConfigError(f"data.task: {path} is not a {kind} text file: it holds binary data (a NUL byte at byte "
                          f"{at}); give a text file, or a .parquet file for binary tables")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        bad = raw[exc.start:exc.start + 1].hex()
        raise ConfigError(f"data.task: {path} is not valid {encoding} text: byte {exc.start} (0x{bad}) cannot be "
                          f"decoded ({exc.reason}); set data.encoding to the file's encoding (e.g. latin-1, cp1252, "
                          "utf-16)") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if builder == "csv" and len(lines) < 2:
        raise ConfigError(f"data.task: {path} has a header ({lines[0][:80]!r}) but no rows")
