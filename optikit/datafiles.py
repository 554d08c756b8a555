"""Reading the user's evaluation data from disk: tables (CSV, TSV, Parquet, JSON Lines), `datasets.save_to_disk`
folders and image folder trees, each identified by a content hash so a variant can check it later."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from optikit.errors import DataError

Source = Literal["digits", "csv", "parquet", "jsonl", "hf-disk", "imagefolder"]
TABLE_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
                  ".ndjson": "jsonl", ".json": "jsonl"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# A `datasets.DatasetDict` saved to disk: its split names become this column, read as a split column.
DATASET_DICT_SPLIT = "__split__"
FORMATS_HINT = ("a CSV, TSV, Parquet or JSON Lines file, a datasets.save_to_disk folder, or an image folder "
                "tree class_name/*.png|jpg")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_sha256(root: Path) -> str:
    """A folder's content hash: every file's relative path and bytes, in a fixed order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def content_sha256(path: Path) -> str:
    return folder_sha256(path) if path.is_dir() else file_sha256(path)


def detect_source(path: Path) -> Source:
    """What kind of data lies at `path`, from what is on disk (never from a guess about its contents)."""
    if not path.exists():
        raise DataError(f"data {path} does not exist: pass {FORMATS_HINT}")
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return "hf-disk"
        if any(p.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir()) for p in path.iterdir()):
            return "imagefolder"
        raise DataError(f"data folder {path} is neither a datasets.save_to_disk folder nor an image folder tree "
                        "(class_name/*.png|jpg): pass one of those, or a table file")
    source = TABLE_SUFFIXES.get(path.suffix.lower())
    if source is None:
        raise DataError(f"cannot tell the format of {path.name} from its suffix {path.suffix or '(none)'!r}: "
                        f"pass {FORMATS_HINT}")
    return source  # type: ignore[return-value]


def read_frame(path: Path, source: Source) -> Any:
    """A pandas frame of the table at `path`; one DataError line when it cannot be read."""
    import pandas as pd

    try:
        if source == "parquet":
            return pd.read_parquet(path)
        if source == "jsonl":
            try:
                return pd.read_json(path, lines=True)
            except ValueError:  # a .json file holding one array of records
                return pd.read_json(path)
        if source == "hf-disk":
            return _read_saved_dataset(path)
        return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except DataError:
        raise
    except ImportError as exc:
        raise DataError(f"reading {path.name} needs {exc.name or 'pyarrow'}: pip install pyarrow") from None
    except Exception as exc:  # pandas and pyarrow raise many types for unreadable files
        raise DataError(f"cannot read {path.name} as {source} ({type(exc).__name__}): pass {FORMATS_HINT}") from None


def _read_arrow_folder(folder: Path) -> Any:
    """One `Dataset.save_to_disk` folder: its Arrow stream files (listed in state.json), read with pyarrow alone."""
    import pyarrow as pa

    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    files = [folder / f["filename"] for f in state.get("_data_files", [])]
    if not files:
        raise DataError(f"{folder} lists no data files in state.json: save it again with save_to_disk")
    tables = []
    for file in files:
        with pa.memory_map(str(file)) as source:
            tables.append(pa.ipc.open_stream(source).read_all())
    return pa.concat_tables(tables).to_pandas()


def _read_saved_dataset(path: Path) -> Any:
    import pandas as pd

    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        frames = [_read_arrow_folder(path / s).assign(**{DATASET_DICT_SPLIT: s}) for s in splits]
        if not frames:
            raise DataError(f"{path} holds a DatasetDict without splits: save one with at least a test split")
        return pd.concat(frames, ignore_index=True)
    return _read_arrow_folder(path)


def table_columns(frame: Any, path: Path, wanted: tuple[str, ...]) -> None:
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(f"{path.name} has no column {', '.join(map(repr, missing))}: its columns are "
                        f"{', '.join(map(str, frame.columns))}; choose them with --text-cols, --image-col and "
                        "--label-col")
