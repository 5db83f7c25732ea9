"""The writing side of a distributed save: each rank's shards, rank 0's index.

See :mod:`._distributed` for the protocol's steps.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from typing import Any

from pipestate.checkpoint._cleanup import remove_stale_files
from pipestate.checkpoint._distributed import SaveRound, graph_digest
from pipestate.checkpoint._graph import ARRAY_PREFIX, Sharded
from pipestate.checkpoint._index import MAX_SHARDS
from pipestate.checkpoint._paths import index_path, shard_name
from pipestate.checkpoint._storage import Storage
from pipestate.checkpoint._values import parse_sharding
from pipestate.checkpoint._writer import plan_shards, write_index, write_shards
from pipestate.errors import CorruptCheckpointError, DistributedSaveError

__all__ = ["follow", "lead_write"]


def _plan_message(
    nodes: list[dict[str, Any]], shards: list[list[Any]], display: str
) -> dict[str, Any]:
    return {"shards": len(shards), "path": display, "graph": graph_digest(nodes)}


def lead_write(
    round_: SaveRound,
    storage: Storage,
    fs_prefix: str,
    display: str,
    nodes: list[dict[str, Any]],
    arrays: list[Any],
    per_rank: list[int],
    sharded: Sharded,
    *,
    max_shard_bytes: int,
    fsync: bool,
    on_bytes: Callable[[int], None] | None = None,
) -> None:
    """Rank 0: gather the plans, say where to write, write its shards, then the index.

    The other ranks' chunks of the DTensors in ``sharded`` join the chunk
    lists of rank 0's bodies (which the nodes hold) before the index is written.

    Raises:
        DistributedSaveError: When a rank is missing or failed, or the ranks
            disagree on the checkpoint or the object graph.
        OSError: When the storage fails on rank 0.
    """
    shards = plan_shards(arrays, max_shard_bytes)
    mine = _plan_message(nodes, shards, display)
    plans = round_.gather("plan", range(1, round_.world_size))
    plans[0] = mine
    for rank in range(1, round_.world_size):
        plan = plans[rank]
        if plan.get("path") != display:
            raise round_.error(
                f"rank {rank} saves checkpoint {plan.get('path')!r} while rank 0 saves "
                f"{display!r}; every rank must save the same checkpoint (the same directory, "
                "and the same number of saves so far)",
                failed_ranks=(rank,),
            )
        if plan.get("graph") != mine["graph"]:
            raise round_.error(
                f"rank {rank} saves another object graph than rank 0 (other objects or "
                "names); every rank must save the same objects under the same names",
                failed_ranks=(rank,),
            )
        if not isinstance(plan.get("shards"), int) or plan["shards"] < 0:
            raise round_.error(f"rank {rank} sent a malformed plan", failed_ranks=(rank,))
    counts = [plans[rank]["shards"] for rank in range(round_.world_size)]
    total = sum(counts)
    if total > MAX_SHARDS:
        raise ValueError(
            f"the checkpoint needs {total} shards over {round_.world_size} ranks, more than "
            f"{MAX_SHARDS}; raise CheckpointOptions.max_shard_bytes"
        )
    firsts = [0, *itertools.accumulate(counts)][:-1]
    directory, basename = storage.split(fs_prefix)
    storage.makedirs(directory)
    # An older checkpoint at this very prefix is being replaced: drop its index first.
    if storage.remove(index_path(fs_prefix)) and fsync:
        storage.fsync_dir(directory)
    round_.forget_earlier()
    round_.publish("go", {"prefix": fs_prefix, "num_shards": total, "first": firsts})
    round_.leader_step = "done"
    paths = [storage.join(directory, shard_name(basename, i, total)) for i in range(counts[0])]
    try:
        tensors = write_shards(storage, shards, paths, first=0, fsync=fsync, on_bytes=on_bytes)
        written = round_.gather("written", range(1, round_.world_size))
        ranked: dict[int, list[dict[str, Any]]] = {
            nid: [nodes[nid]["attributes"]] for nid in per_rank
        }
        for rank in range(1, round_.world_size):
            message = written[rank]
            theirs = message.get("tensors")
            values = message.get("ranks")
            chunks = message.get("sharded")
            if (
                not isinstance(theirs, dict)
                or not isinstance(values, dict)
                or not isinstance(chunks, dict)
            ):
                raise round_.error(f"rank {rank} sent a malformed report", failed_ranks=(rank,))
            clash = theirs.keys() & tensors.keys()
            if clash:
                raise round_.error(
                    f"rank {rank} saved arrays under keys rank 0 saved too ({sorted(clash)[:3]})",
                    failed_ranks=(rank,),
                )
            tensors.update(theirs)
            _merge_chunks(round_, sharded, rank, chunks)
            for nid in per_rank:
                attributes = values.get(str(nid))
                if not isinstance(attributes, dict):
                    raise round_.error(
                        f"rank {rank} sent no values for object {nid}", failed_ranks=(rank,)
                    )
                ranked[nid].append(attributes)
            _check_visible(round_, storage, directory, basename, rank, firsts, counts, total)
        _check_chunks(round_, sharded)
        merged = list(nodes)
        for nid, attributes in ranked.items():
            merged[nid] = {**nodes[nid], "ranks": attributes}
        if fsync:
            storage.fsync_dir(directory)
        write_index(
            storage, fs_prefix, merged, tensors, total, fsync=fsync, world_size=round_.world_size
        )
        round_.committed = True
    except BaseException:
        if not round_.committed:
            for path in paths:
                with contextlib.suppress(OSError):
                    storage.remove(path)
        raise
    with contextlib.suppress(OSError):
        remove_stale_files(storage, directory, basename, total)


def _merge_chunks(round_: SaveRound, sharded: Sharded, rank: int, theirs: dict[str, Any]) -> None:
    """Add ``rank``'s chunks of each DTensor (and sharded array) to rank 0's body of it."""
    for nid, bodies in theirs.items():
        mine = sharded.get(int(nid)) if nid.isdigit() else None
        if not isinstance(bodies, dict) or mine is None:
            raise round_.error(
                f"rank {rank} saved DTensors in object {nid!r:.40}, where rank 0 saved none",
                failed_ranks=(rank,),
            )
        for key, body in bodies.items():
            own = mine.get(key)
            if (
                own is None
                or not isinstance(body, dict)
                or body.get("shape") != own["shape"]
                or body.get("dtype") != own["dtype"]
                or not isinstance(body.get("chunks"), list)
            ):
                raise round_.error(
                    f"rank {rank} saved {_named(key)} as {_describe(body)}, rank 0 as "
                    f"{_describe(own)}; every rank must save the same sharded values",
                    failed_ranks=(rank,),
                )
            own["chunks"].extend(body["chunks"])


def _named(key: str) -> str:
    if key.startswith(ARRAY_PREFIX):
        return f"the sharded array at {key.removeprefix(ARRAY_PREFIX)!r:.200}"
    return f"the DTensor at {key!r:.200}"


def _describe(body: object) -> str:
    if not isinstance(body, dict):
        return "nothing"
    return f"{body.get('dtype')}{body.get('shape')}"


def _check_chunks(round_: SaveRound, sharded: Sharded) -> None:
    """Refuse to commit a DTensor (or sharded array) whose chunks overlap or do not cover it
    (never lose a range)."""
    for bodies in sharded.values():
        for key, body in bodies.items():
            body["chunks"].sort(key=lambda chunk: chunk["offsets"])
            tag = "sharded" if key.startswith(ARRAY_PREFIX) else "dtensor"
            try:
                parse_sharding(body, key.removeprefix(ARRAY_PREFIX), tag)
            except CorruptCheckpointError as err:
                hint = "every rank holding a part of it must take part in the save"
                if tag == "sharded" and not body["chunks"]:
                    # Each process that holds a jax.Array whole takes it for its own copy of a
                    # replicated value, which rank 0 writes: here rank 0 has none.
                    hint = (
                        "process 0 holds none of it, and the processes that do hold it whole "
                        "(on their own devices alone), so none wrote it: place it on devices "
                        "of process 0 too (e.g. a mesh over every process's devices)"
                    )
                raise round_.error(
                    f"the ranks' chunks of {_named(key)} do not make it up ({err}); {hint}"
                ) from None


def _check_visible(
    round_: SaveRound,
    storage: Storage,
    directory: str,
    basename: str,
    rank: int,
    firsts: list[int],
    counts: list[int],
    total: int,
) -> None:
    """Refuse to commit shards that rank 0 can't see (a directory that is not shared)."""
    for i in range(firsts[rank], firsts[rank] + counts[rank]):
        path = storage.join(directory, shard_name(basename, i, total))
        if not storage.isfile(path):
            raise round_.error(
                f"rank {rank} wrote {path!r}, which rank 0 does not see: the checkpoint "
                "directory must be shared by every rank (a network file system or object "
                "storage)",
                failed_ranks=(rank,),
            )


def follow(
    round_: SaveRound,
    storage: Storage,
    display: str,
    nodes: list[dict[str, Any]],
    arrays: list[Any],
    per_rank: list[int],
    sharded: Sharded,
    *,
    max_shard_bytes: int,
    fsync: bool,
    on_bytes: Callable[[int], None] | None = None,
) -> str:
    """A rank other than 0: publish its plan, write where rank 0 says, wait for the commit.

    Its chunks of the DTensors in ``sharded`` go to rank 0 with the report of
    what it wrote.

    Returns:
        The path of the checkpoint rank 0 committed.

    Raises:
        DistributedSaveError: When rank 0 reports a failure or does not arrive.
        OSError: When the storage fails on this rank (rank 0 is told).
    """
    try:
        shards = plan_shards(arrays, max_shard_bytes)
        round_.publish("plan", _plan_message(nodes, shards, display))
    except BaseException as err:
        round_.fail("plan", err)
        raise
    go = round_.wait_leader("go")
    round_.forget_earlier()
    try:
        fs_prefix, total = str(go["prefix"]), int(go["num_shards"])
        first = int(go["first"][round_.rank])
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise round_.error(f"rank 0 sent a malformed message ({err})") from None
    directory, basename = storage.split(fs_prefix)
    paths = [
        storage.join(directory, shard_name(basename, first + i, total)) for i in range(len(shards))
    ]
    try:
        tensors = write_shards(storage, shards, paths, first=first, fsync=fsync, on_bytes=on_bytes)
        values = {str(nid): nodes[nid]["attributes"] for nid in per_rank}
        chunks = {str(nid): bodies for nid, bodies in sharded.items()}
        round_.publish("written", {"tensors": tensors, "ranks": values, "sharded": chunks})
    except BaseException as err:
        _remove(storage, paths)
        round_.fail("written", err)
        raise
    try:
        done = round_.wait_leader("done")
    except DistributedSaveError:
        if not round_.committed:
            _remove(storage, paths)
        raise
    return str(done.get("path", display))


def _remove(storage: Storage, paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            storage.remove(path)
