"""How training batches reach the device: three feeds of one interface, chosen by `make_feed`.

A feed turns an epoch's plan (each step's cache rows and the seed of its random flips) into
`Batch`es on the device, and every feed gives the same batch for the same plan entry:

  HostFeed      per step, one fancy-index copy out of the memory-mapped cache, flips and the
                uint8 -> float conversion on the CPU (`read_batch`). The CPU default.
  ResidentFeed  the train split copied to the device once as uint8 (NHWC, so a gathered batch
                is channels_last without a copy); per epoch one upload of every step's row
                positions and flip masks; per step a gather, the flips and the conversion run on
                the device, with no host work and no host-device transfer. The GPU default when the
                split fits (`fits_on_device`).
  PrefetchFeed  a background thread copies each batch's rows out of the memmap into one of a
                ring of pinned buffers and uploads it on a side stream, a few steps ahead of the
                loop; flips and conversion on the device. The GPU fallback for a split that does
                not fit (all of CelebA at 128x128 is 10 GB).

The flips of a step come from `flip_mask(seed, B)` (a CPU generator seeded per step), so every feed,
and a resumed run, flips the same images.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, Literal, NamedTuple, Sequence

import numpy as np
import torch

from faceedit.cache import Cache

FeedKind = Literal["auto", "host", "resident", "prefetch"]
RESIDENT_SHARE = 0.5  # the train split stays resident when it takes at most this share of free memory


class Batch(NamedTuple):
    images: torch.Tensor  # (B, 3, S, S) float32 in [0, 1]
    labels: torch.Tensor  # (B, 40) float32 in {0, 1}


class Step(NamedTuple):
    rows: np.ndarray  # (B,) cache row numbers, ascending
    flip_seed: int | None  # seed of this step's flips; None: no flips


def flip_mask(seed: int, n: int) -> torch.Tensor:
    """(n,) bool on the CPU: which images of a step are mirrored (each with probability 1/2)."""
    return torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.5


def read_batch(cache: Cache, rows: np.ndarray, device: torch.device,
               flip: torch.Generator | None = None, channels_last: bool = False) -> Batch:
    """Rows of the cache as a Batch on `device`; with `flip`, each image is mirrored left-right
    with probability 1/2 (faces are symmetric; CelebA's attributes have no side)."""
    images = torch.from_numpy(cache.images[rows])  # (B, 3, S, S) uint8, one copy out of the memmap
    if flip is not None:
        mask = torch.rand(len(rows), generator=flip) < 0.5
        images[mask] = images[mask].flip(-1)
    labels = torch.from_numpy(cache.labels[rows].astype(np.float32))
    non_blocking = device.type == "cuda"
    x = images.to(device, non_blocking=non_blocking).float().div_(255.0)  # convert on the device
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return Batch(x, labels.to(device, non_blocking=non_blocking))


def _on_device(images: torch.Tensor, flips: torch.Tensor | None, channels_last: bool) -> torch.Tensor:
    """uint8 (B, 3, S, S) on the device, in either memory layout -> float32 (B, 3, S, S) in [0, 1],
    the flagged images mirrored left-right, channels_last memory when asked."""
    if flips is not None:
        images = torch.where(flips[:, None, None, None], images.flip(-1), images)
    x = images.float().div_(255.0)  # keeps the layout: NHWC strides stay NHWC
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class HostFeed:
    """Each step read on the CPU by `read_batch`, then moved to the device."""

    def __init__(self, cache: Cache, device: torch.device, channels_last: bool):
        self.cache, self.device, self.channels_last = cache, device, channels_last

    def epoch(self, steps: Sequence[Step]) -> Iterator[Batch]:
        for step in steps:
            flip = None if step.flip_seed is None else torch.Generator().manual_seed(step.flip_seed)
            yield read_batch(self.cache, step.rows, self.device, flip, self.channels_last)


class ResidentFeed:
    """The rows `rows` of the cache held on the device as uint8 (N, S, S, 3)."""

    def __init__(self, cache: Cache, rows: np.ndarray, device: torch.device, channels_last: bool):
        self.rows = np.asarray(rows, dtype=np.int64)  # ascending: positions by searchsorted
        if np.any(np.diff(self.rows) <= 0):
            raise ValueError("ResidentFeed: rows must be ascending and distinct")
        self.device, self.channels_last = device, channels_last
        images = np.ascontiguousarray(np.asarray(cache.images[self.rows]).transpose(0, 2, 3, 1))
        self.images = torch.from_numpy(images).to(device)  # (N, S, S, 3) uint8
        self.labels = torch.from_numpy(cache.labels[self.rows].astype(np.float32)).to(device)

    def positions(self, rows: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.rows, rows)
        if np.any(pos >= len(self.rows)) or np.any(self.rows[np.minimum(pos, len(self.rows) - 1)] != rows):
            raise ValueError("ResidentFeed: a batch asks for rows that are not resident")
        return pos

    def epoch(self, steps: Sequence[Step]) -> Iterator[Batch]:
        if not steps:
            return
        sizes = {len(s.rows) for s in steps}
        if len(sizes) != 1:  # a short last batch (drop_last=False): one step at a time
            for s in steps:
                yield from self.epoch([s])
            return
        # one upload for the whole epoch: (steps, B) positions and flip masks
        index = torch.from_numpy(np.stack([self.positions(s.rows) for s in steps]))
        flipping = steps[0].flip_seed is not None
        masks = (torch.stack([flip_mask(s.flip_seed, len(s.rows)) for s in steps]) if flipping
                 else None)
        non_blocking = self.device.type == "cuda"
        if non_blocking:
            index = index.pin_memory()
            masks = masks.pin_memory() if masks is not None else None
        index = index.to(self.device, non_blocking=non_blocking)
        masks = masks.to(self.device, non_blocking=non_blocking) if masks is not None else None
        for i in range(len(steps)):
            x = self.images.index_select(0, index[i]).permute(0, 3, 1, 2)  # (B, 3, S, S), NHWC strides
            yield Batch(_on_device(x, masks[i] if masks is not None else None, self.channels_last),
                        self.labels.index_select(0, index[i]))


class PrefetchFeed:
    """Batches read by a background thread into pinned buffers and uploaded on a side stream,
    `depth` steps ahead of the loop."""

    def __init__(self, cache: Cache, device: torch.device, channels_last: bool, depth: int = 3):
        self.cache, self.device, self.channels_last, self.depth = cache, device, channels_last, depth
        self.cuda = device.type == "cuda"

    def _reader(self, steps: Sequence[Step], out: queue.Queue, stop: threading.Event) -> None:
        """Fills `out` with (images on device (B, 3, S, S) uint8, labels, flip mask, ready event)."""
        try:
            stream = torch.cuda.Stream(self.device) if self.cuda else None
            ring: list[tuple[np.ndarray, torch.Tensor, torch.cuda.Event | None]] = []
            for i, step in enumerate(steps):
                if stop.is_set():
                    return
                B = len(step.rows)
                slot = i % (self.depth + 2)  # a slot is refilled only once its upload is done
                if slot == len(ring) or ring[slot][0].shape[0] != B:
                    host = torch.empty((B, *self.cache.images.shape[1:]), dtype=torch.uint8,
                                       pin_memory=self.cuda)
                    entry = (host.numpy(), host, None)
                    ring[slot: slot + 1] = [entry]
                buf, host, done = ring[slot]
                if done is not None:
                    done.synchronize()
                # (B, 3, S, S) rows out of the memmap straight into the pinned buffer: one copy
                # (the layout change for channels_last is left to the device)
                np.take(self.cache.images, step.rows, axis=0, out=buf)
                labels = torch.from_numpy(self.cache.labels[step.rows].astype(np.float32))
                mask = None if step.flip_seed is None else flip_mask(step.flip_seed, B)
                ready = None
                if self.cuda:
                    with torch.cuda.stream(stream):
                        images = host.to(self.device, non_blocking=True)
                        labels = labels.pin_memory().to(self.device, non_blocking=True)
                        mask = mask.pin_memory().to(self.device, non_blocking=True) if mask is not None else None
                        ready = torch.cuda.Event()
                        ready.record(stream)
                    ring[slot] = (buf, host, ready)
                else:
                    images = host.clone()
                _put(out, (images, labels, mask, ready), stop)
        except BaseException as e:  # handed to the loop, which raises it
            _put(out, e, stop)
            return
        _put(out, None, stop)

    def epoch(self, steps: Sequence[Step]) -> Iterator[Batch]:
        out: queue.Queue = queue.Queue(maxsize=self.depth)
        stop = threading.Event()
        thread = threading.Thread(target=self._reader, args=(list(steps), out, stop), daemon=True,
                                  name="faceedit-prefetch")
        thread.start()
        try:
            while (item := out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                images, labels, mask, ready = item
                if ready is not None:  # the compute stream waits for the upload, not the host
                    torch.cuda.current_stream(self.device).wait_event(ready)
                    for t in (images, labels, mask):
                        if t is not None:
                            t.record_stream(torch.cuda.current_stream(self.device))
                yield Batch(_on_device(images, mask, self.channels_last), labels)
        finally:
            stop.set()
            thread.join()


def _put(out: queue.Queue, item: object, stop: threading.Event) -> None:
    """Put `item` unless the consumer stopped first (never blocks a reader the loop has left)."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


Feed = HostFeed | ResidentFeed | PrefetchFeed


def fits_on_device(cache: Cache, rows: np.ndarray, device: torch.device) -> bool:
    """Whether the rows' images take at most RESIDENT_SHARE of the device's free memory."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return len(rows) * int(np.prod(cache.images.shape[1:])) <= RESIDENT_SHARE * free


def make_feed(kind: FeedKind, cache: Cache, rows: np.ndarray, device: torch.device,
              channels_last: bool) -> Feed:
    """auto: resident on a GPU when the train rows fit, else prefetched; host reads on the CPU."""
    if kind == "auto":
        kind = ("resident" if fits_on_device(cache, rows, device) else "prefetch") \
            if device.type == "cuda" else "host"
    if kind == "resident":
        return ResidentFeed(cache, rows, device, channels_last)
    if kind == "prefetch":
        return PrefetchFeed(cache, device, channels_last)
    if kind == "host":
        return HostFeed(cache, device, channels_last)
    raise ValueError(f"feed {kind!r}: expected auto, host, resident or prefetch")
