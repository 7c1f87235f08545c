"""Result files of a batch classification that survive interruptions: JSON lines, CSV, Parquet.

One record per input image, in the order the tasks finish::

    {"path": "a.jpg", "top": [{"rank": 1, "index": 281, "wnid": "n02123045",
                              "description": "tabby, tabby cat", "probability": 0.53}, ...]}
    {"path": "b.jpg", "error": "b.jpg: not an image file Pillow can read"}

Each record is written (and flushed) as soon as its task completes, so an interrupted run keeps
everything it finished. Opening an existing file resumes it: :attr:`ResultStore.done` holds the
paths already recorded (the run skips them), and a last line cut short by a kill is dropped.
Failed records count as done unless ``retry_failed`` removes them first.

Formats, by the output's suffix: ``.jsonl`` (also ``.json``, ``.ndjson``), ``.csv`` (one row per
image: path, error, then index, wnid, description and probability of each rank) and
``.parquet`` (needs pyarrow; the records go to ``OUT.parquet.partial.jsonl`` while the run
lasts and become the Parquet file, atomically, when it ends or is interrupted).
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

from ..errors import InputError, VggjitError
from ..fileio import atomic_save, atomic_write

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
#: fsync the results at most this often (seconds): a flush already survives a killed process;
#: the sync bounds what a power cut can take.
SYNC_EVERY_S = 5.0
RANK_FIELDS = ("index", "wnid", "description", "probability")


def record_for(path: str, top) -> dict:
    """The record of one classified image from :meth:`vggjit.network.Network.classify`'s tuples."""
    return {"path": path, "top": [
        {"rank": rank, "index": index, "wnid": wnid, "description": description,
         "probability": round(probability, 6)}
        for rank, index, wnid, description, probability in top]}


def error_record(path: str, message: str) -> dict:
    return {"path": path, "error": message}


def open_store(path, top_k: int, *, overwrite: bool = False, retry_failed: bool = False
               ) -> "ResultStore":
    """The store for ``path``, by its suffix; an existing file is resumed (or replaced with
    ``overwrite``). Raises InputError for an unknown suffix or a file that is not a results
    file, VggjitError when Parquet is asked for without pyarrow."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        raise InputError(f"{path} is a directory; give the results file's name "
                         f"(.jsonl, .csv or .parquet)")
    if suffix in JSONL_SUFFIXES:
        cls = JsonLinesStore
    elif suffix == ".csv":
        cls = CsvStore
    elif suffix == ".parquet":
        cls = ParquetStore
    else:
        raise InputError(f"{path}: unknown results format {path.suffix!r}; use .jsonl, .csv or "
                         f".parquet")
    return cls(path, top_k, overwrite=overwrite, retry_failed=retry_failed)


class ResultStore:
    """Append-only results with resume. Subclasses read and write one format."""

    def __init__(self, path: Path, top_k: int, *, overwrite: bool, retry_failed: bool):
        self.path = path
        self.top_k = top_k
        self.written = 0
        self._last_sync = time.monotonic()
        records = [] if overwrite else self._existing()
        kept = [r for r in records if not (retry_failed and "error" in r)]
        self.done = {r["path"] for r in kept}
        self.resumed = len(kept)
        self.dropped_failed = len(records) - len(kept)
        if overwrite or len(kept) != len(records) or not self._target().exists():
            self._rewrite(kept)
        self._handle = open(self._target(), "a", encoding="utf-8", newline="")

    # -- format hooks ---------------------------------------------------------------------------
    def _target(self) -> Path:
        """The file the records are appended to."""
        return self.path

    def _existing(self) -> list[dict]:
        raise NotImplementedError

    def _rewrite(self, records: list[dict]) -> None:
        raise NotImplementedError

    def _encode(self, record: dict) -> str:
        raise NotImplementedError

    # -- writing --------------------------------------------------------------------------------
    def add(self, record: dict) -> None:
        """Append one record and flush it to the operating system."""
        self._handle.write(self._encode(record))
        self._handle.flush()
        self.done.add(record["path"])
        self.written += 1
        if time.monotonic() - self._last_sync > SYNC_EVERY_S:
            os.fsync(self._handle.fileno())
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _complete_text(path: Path) -> str:
    """The file's text up to its last newline, cutting (in the file too) a line a kill left
    half-written."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(end)
    try:
        return data[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} exists and is not a vggjit results file (not UTF-8 text); "
                         f"give another -o or pass --overwrite to replace it") from None


def _not_results(path: Path, line: int, why: str) -> InputError:
    return InputError(f"{path} exists and is not a vggjit results file (line {line}: {why}); "
                      f"give another -o or pass --overwrite to replace it")


class JsonLinesStore(ResultStore):
    """One JSON object per line."""

    def _existing(self) -> list[dict]:
        return self._read(self.path) if self.path.exists() else []

    def _read(self, path: Path) -> list[dict]:
        records = []
        for n, line in enumerate(_complete_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise _not_results(path, n, "not JSON") from None
            if not isinstance(record, dict) or "path" not in record or not (
                    "top" in record or "error" in record):
                raise _not_results(path, n, "no path with top or error")
            if "top" in record and len(record["top"]) != self.top_k:
                raise InputError(f"{path} holds the top {len(record['top'])} classes per "
                                 f"image (line {n}), this run asks for {self.top_k}; use "
                                 f"--top-k {len(record['top'])}, another -o, or --overwrite")
            records.append(record)
        return records

    def _rewrite(self, records: list[dict]) -> None:
        with atomic_write(self.path, "w") as handle:
            handle.write("".join(self._encode(r) for r in records))

    def _encode(self, record: dict) -> str:
        return json.dumps(record, ensure_ascii=False) + "\n"


class CsvStore(ResultStore):
    """path, error, then top<r>_index, top<r>_wnid, top<r>_description, top<r>_probability."""

    def header(self) -> list[str]:
        return ["path", "error"] + [f"top{r}_{f}" for r in range(1, self.top_k + 1)
                                    for f in RANK_FIELDS]

    def _existing(self) -> list[dict]:
        if not self.path.exists():
            return []
        rows = list(csv.reader(io.StringIO(_complete_text(self.path))))
        if not rows:
            return []
        if rows[0][:2] != ["path", "error"]:
            raise _not_results(self.path, 1, "no path,error header")
        if rows[0] != self.header():
            ranks = (len(rows[0]) - 2) // len(RANK_FIELDS)
            raise InputError(f"{self.path} holds the top {ranks} classes per image, this run "
                             f"asks for {self.top_k}; use --top-k {ranks}, another -o, or "
                             f"--overwrite")
        records = []
        for n, row in enumerate(rows[1:], start=2):
            if len(row) != len(rows[0]):
                raise _not_results(self.path, n, f"{len(row)} fields, expected {len(rows[0])}")
            records.append(self._decode(row))
        return records

    def _decode(self, row: list[str]) -> dict:
        if row[1]:
            return error_record(row[0], row[1])
        top = []
        for r in range(self.top_k):
            index, wnid, description, probability = row[2 + 4 * r:6 + 4 * r]
            top.append({"rank": r + 1, "index": int(index), "wnid": wnid,
                        "description": description, "probability": float(probability)})
        return {"path": row[0], "top": top}

    def _rewrite(self, records: list[dict]) -> None:
        with atomic_write(self.path, "w") as handle:
            handle.write(self._line(self.header()))
            handle.write("".join(self._encode(r) for r in records))

    def _line(self, cells: list) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(cells)
        return out.getvalue()

    def _encode(self, record: dict) -> str:
        if "error" in record:
            return self._line([record["path"], record["error"]]
                              + [""] * (len(RANK_FIELDS) * self.top_k))
        cells = [record["path"], ""]
        for entry in record["top"]:
            cells += [entry[f] for f in RANK_FIELDS]
        return self._line(cells)


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise VggjitError("Parquet output needs pyarrow: pip install pyarrow (or write .jsonl "
                          "or .csv)") from None
    return pyarrow


class ParquetStore(JsonLinesStore):
    """Records journalled as JSON lines while the run lasts, a Parquet file when it closes."""

    def __init__(self, path: Path, top_k: int, *, overwrite: bool, retry_failed: bool):
        self._pa = _pyarrow()
        self.journal = path.with_name(path.name + ".partial.jsonl")
        super().__init__(path, top_k, overwrite=overwrite, retry_failed=retry_failed)

    def _target(self) -> Path:
        return self.journal

    def _existing(self) -> list[dict]:
        if self.journal.exists():  # a run that was killed: its journal has everything
            return self._read(self.journal)
        if not self.path.exists():
            return []
        try:
            rows = self._pa.parquet.read_table(self.path).to_pylist()
        except Exception as exc:
            raise InputError(f"{self.path} exists and is not a readable Parquet file ({exc}); "
                             f"give another -o or pass --overwrite to replace it") from None
        return [{k: v for k, v in row.items() if v is not None} for row in rows]

    def _rewrite(self, records: list[dict]) -> None:
        with atomic_write(self.journal, "w") as handle:
            handle.write("".join(self._encode(r) for r in records))

    def close(self) -> None:
        if self._handle.closed:
            return
        super().close()
        records = self._read(self.journal)
        table = self._pa.Table.from_pylist(
            [{"path": r["path"], "error": r.get("error"), "top": r.get("top")} for r in records],
            schema=self._schema())
        atomic_save(self.path, lambda tmp: self._pa.parquet.write_table(table, tmp))
        self.journal.unlink()

    def _schema(self):
        pa = self._pa
        entry = pa.struct([("rank", pa.int32()), ("index", pa.int32()), ("wnid", pa.string()),
                           ("description", pa.string()), ("probability", pa.float64())])
        return pa.schema([("path", pa.string()), ("error", pa.string()),
                          ("top", pa.list_(entry))])

