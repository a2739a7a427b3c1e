"""Bone ages for an archive of any size: streamed to a CSV as they come, resumable, and shardable across
processes (``boneage predict DIR|FILES|--manifest CSV --output results.csv [--resume]``, also under
``torchrun --nproc_per_node=N``).

* **Streaming**: every batch's rows are appended to the CSV and flushed to disk before the next batch is read,
  so memory stays bounded and a killed run loses at most the batch in flight.
* **Resume**: ``resume=True`` reads the rows already written (a torn last line, from a run killed mid-write, is
  cut off) and assesses only the files without a row. Without it an existing output is refused, never
  overwritten or appended to.
* **Shards**: with ``WORLD_SIZE`` > 1 (torchrun's variables), rank *r* of *W* takes every *W*-th file from the
  *r*-th and writes ``OUTPUT.rank<r>-of-<W>.part`` (resumable the same way); when every rank is done (a
  ``torch.distributed`` barrier over gloo), rank 0 merges the parts into ``OUTPUT`` in the input order and removes
  them. The output folder must be shared between the ranks (one machine, or a shared file system).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import time
from pathlib import Path

from ..errors import InvalidInputError
from ..utils import atomic_write, format_months

__all__ = ["COLUMNS", "ArchiveSummary", "Shard", "predict_archive", "read_manifest", "shard_from_environment"]

COLUMNS = ("file", "status", "sex", "sex_source", "sex_probability", "bone_age_months", "bone_age", "interval_low_months",
           "interval_high_months", "sd_months", "model", "error")


@dataclasses.dataclass
class Shard:
    rank: int = 0
    world: int = 1


@dataclasses.dataclass
class ArchiveSummary:
    output: Path
    assessed: int  # in this run
    rejected: int  # in this run
    skipped: int  # already in the output (resume)
    seconds: float

    @property
    def images_per_second(self) -> float:
        return (self.assessed + self.rejected) / self.seconds if self.seconds > 0 else 0.0


def shard_from_environment() -> Shard:
    """This process's shard from torchrun's ``RANK`` and ``WORLD_SIZE`` (one shard without them)."""
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise InvalidInputError("RANK and WORLD_SIZE must be integers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise InvalidInputError(f"RANK {rank} is not within WORLD_SIZE {world}")
    return Shard(rank, world)


def read_manifest(path: str | Path) -> list[tuple[str, str | None]]:
    """A CSV with a ``path`` (or ``file``) column and an optional ``sex`` column -> ``[(file, sex or None)]``;
    relative paths are read from the manifest's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"{path}: cannot read the manifest ({err.__class__.__name__})") from None
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    column = "path" if "path" in fields else "file" if "file" in fields else None
    if column is None:
        raise InvalidInputError(f"{path}: the manifest needs a 'path' (or 'file') column; it has {fields or 'no header'}")
    items = []
    for row in reader:
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not row.get(column):
            continue
        file = Path(row[column])
        items.append((str(file if file.is_absolute() else path.parent / file), row.get("sex") or None))
    if not items:
        raise InvalidInputError(f"{path}: the manifest lists no files")
    return items


def _row(assessment, file: str) -> dict:
    a = assessment
    if a.status != "ok":
        return {"file": file, "status": a.status, "error": a.rejection}
    interval = a.uncertainty or {}
    number = lambda v, digits=2: "" if v is None else f"{v:.{digits}f}"  # noqa: E731
    return {"file": file, "status": "ok", "sex": a.sex, "sex_source": a.sex_source,
            "sex_probability": number(a.sex_probability, 3), "bone_age_months": number(a.bone_age_months),
            "bone_age": format_months(a.bone_age_months), "interval_low_months": number(interval.get("low_months")),
            "interval_high_months": number(interval.get("high_months")), "sd_months": number(interval.get("sd_months")),
            "model": (a.model or {}).get("name", "")}


def _written_files(path: Path) -> set[str]:
    """The files that have a row in ``path`` (cutting off a torn last line); the header is checked."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):  # killed mid-write: drop the partial row
        data = data[: data.rfind(b"\n") + 1]
        with open(path, "r+b") as stream:
            stream.truncate(len(data))
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    if not rows:
        return set()
    if tuple(rows[0]) != COLUMNS:
        raise InvalidInputError(f"{path}: not a boneage results CSV (its header differs); choose another --output")
    return {row[0] for row in rows[1:] if row}


def _part_path(output: Path, shard: Shard) -> Path:
    return output if shard.world == 1 else output.with_name(f"{output.name}.rank{shard.rank}-of-{shard.world}.part")


def predict_archive(assessor, items: list[tuple[str, str | None]], output: str | Path, *, resume: bool = False,
                    batch_size: int = 32, shard: Shard | None = None, progress: bool = False) -> ArchiveSummary:
    """Assess ``items`` (``(file, sex or None)``) with ``assessor`` into the CSV ``output`` (see the module)."""
    shard = shard or Shard()
    output = Path(output)
    target = _part_path(output, shard)
    if output.exists() and shard.world > 1 and not resume:
        raise InvalidInputError(f"{output} exists; --resume continues it, or choose another --output")
    done: set[str] = set()
    if shard.world > 1 and output.exists():  # a merged earlier run: its rows count as done
        done = _written_files(output)
    if target.exists():
        if not resume:
            raise InvalidInputError(f"{target} exists; --resume continues it, or choose another --output")
        done |= _written_files(target)
    mine = [item for k, item in enumerate(items) if k % shard.world == shard.rank and item[0] not in done]
    skipped = sum(1 for k, item in enumerate(items) if k % shard.world == shard.rank) - len(mine)
    started, assessed, rejected = time.time(), 0, 0
    target.parent.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(mine), unit="img", desc=f"rank {shard.rank}" if shard.world > 1 else "assessing")
    with open(target, "a", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS, restval="", lineterminator="\n")
        if stream.tell() == 0:
            writer.writeheader()
        for start in range(0, len(mine), batch_size):
            chunk = mine[start : start + batch_size]
            results = assessor.assess_files([f for f, _ in chunk], sexes=[s for _, s in chunk], batch_size=batch_size)
            for (file, _), assessment in zip(chunk, results):
                writer.writerow(_row(assessment, file))
                assessed, rejected = assessed + (assessment.status == "ok"), rejected + (assessment.status != "ok")
            stream.flush()
            os.fsync(stream.fileno())
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    if shard.world > 1:
        _merge(output, items, shard)
    return ArchiveSummary(output, assessed, rejected, skipped, time.time() - started)


def _barrier() -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()


def _merge(output: Path, items: list, shard: Shard) -> None:
    """After every rank is done, rank 0 writes the parts' rows into ``output`` in the input order."""
    _barrier()
    if shard.rank == 0:
        rows: dict[str, list[str]] = {}
        parts = [_part_path(output, Shard(rank, shard.world)) for rank in range(shard.world)]
        for part in ([output] if output.exists() else []) + parts:
            for row in list(csv.reader(io.StringIO(part.read_text(encoding="utf-8"))))[1:]:
                if row:
                    rows[row[0]] = row
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        for file, _ in items:
            if file in rows:
                writer.writerow(rows.pop(file))
        atomic_write(output, buffer.getvalue())
        for part in parts:
            part.unlink(missing_ok=True)
    _barrier()
