"""Read documents from local files through HF `datasets`, streaming (constant memory, any corpus size).

One file at a time, so an error names its file, and files of one domain may differ in their other columns.
`datasets` is kept offline here: its packaged loaders would otherwise ping the Hub to count downloads
(a multi-second stall without a network). Empty documents and null texts are skipped.

Memory: JSONL is read in 10 MB blocks and Parquet by record batch, so their files may be of any size. A plain-text
file is one document and is read whole: split a larger-than-memory plain-text corpus into files (or JSONL).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from mta_lab.data.errors import DataConfigError
from mta_lab.data.sources import SourceFile

BUILDERS = {"text": "text", "jsonl": "json", "parquet": "parquet"}


@contextlib.contextmanager
def _quiet_offline_datasets() -> Iterator[None]:
    """No Hub access, and no log lines of its own: a bad file is reported once, by us."""
    import datasets.config

    logger = logging.getLogger("datasets")
    saved = datasets.config.HF_HUB_OFFLINE, datasets.config.HF_UPDATE_DOWNLOAD_COUNTS, logger.level
    datasets.config.HF_HUB_OFFLINE, datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = True, False
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, datasets.config.HF_UPDATE_DOWNLOAD_COUNTS, level = saved
        logger.setLevel(level)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _bad_file(file: SourceFile, problem: str) -> DataConfigError:
    return DataConfigError(f"data file {file.path}: {problem}")


def _check_parquet_column(file: SourceFile, text_field: str) -> None:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(file.path).names
    except Exception as err:
        raise _bad_file(file, f"not a readable Parquet file ({_first_line(err)}); re-export it or remove it") from None
    if text_field not in names:
        raise _bad_file(
            file, f"has no column {text_field!r} (columns: {', '.join(names)}); set data.text_field to the text column"
        )


def read_documents(file: SourceFile, text_field: str = "text", batch_size: int = 256) -> Iterator[list[str]]:
    """Batches of the documents of one file, in file order."""
    import datasets

    if os.path.getsize(file.path) == 0:
        return
    kwargs: dict = {}
    if file.format == "text":
        kwargs["sample_by"] = "document"  # the whole file is one document
    elif file.format == "parquet":
        _check_parquet_column(file, text_field)
        kwargs["columns"] = [text_field]
    column = "text" if file.format == "text" else text_field
    with _quiet_offline_datasets():
        try:
            stream = datasets.load_dataset(
                BUILDERS[file.format], data_files=[file.path], split="train", streaming=True, **kwargs
            )
            for batch in stream.iter(batch_size=batch_size):
                if column not in batch:
                    raise _bad_file(
                        file, f"has no field {column!r} (fields: {', '.join(batch)}); set data.text_field to the "
                        "field that holds the text"
                    )
                texts = [t for t in batch[column] if t]
                if any(not isinstance(t, str) for t in texts):
                    kind = next(type(t).__name__ for t in texts if not isinstance(t, str))
                    raise _bad_file(file, f"field {column!r} holds {kind} values, not text; set data.text_field")
                if texts:
                    yield texts
        except DataConfigError:
            raise
        except UnicodeDecodeError as err:
            raise _bad_file(file, f"is not valid UTF-8 ({err.reason} at byte {err.start}); re-encode it") from None
        except Exception as err:
            raise _bad_file(
                file, f"could not be read as {file.format} ({_first_line(err)}); "
                "fix or remove the file, or set data.format if its name misleads"
            ) from None
