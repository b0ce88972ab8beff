"""What the accvlab decoders share: argument checks, the engine and GOP extraction, frames out of
bundles, and their lifetime."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .._output import OutputSpec, planar_layout
from ..errors import InvalidRequestError, UnsupportedStreamError
from ..gop import GopBundle
from . import _bundles
from ._bundles import GopSource
from ._errors import SAME_LENGTH
from ._frames import DecodedFrameExt, RGBFrame, nv12_from_planes
from ._runner import Device, Runner
from ._values import FastStreamInfo

__all__ = ["BGR", "RGB", "Decoder", "as_list", "at_most", "check_nv12", "collect", "decode_plan", "distinct", "flag",
           "nv12_frame", "path_list", "positive", "request_pairs"]

log = logging.getLogger("asyncdecode")


def path_list(method: str, filepaths: Any, *, allow_empty: bool = False) -> list[str]:
    """The paths of a list of paths, as ``str``; it must not be empty unless ``allow_empty``."""
    if isinstance(filepaths, (str, bytes, os.PathLike)) or not isinstance(filepaths, Sequence):
        raise InvalidRequestError(f"{method}: filepaths must be a list of paths, not {type(filepaths).__name__}")
    if not filepaths and not allow_empty:
        raise InvalidRequestError(f"{method}: filepaths is empty")
    out = []
    for p in filepaths:
        if not isinstance(p, (str, os.PathLike)):
            raise InvalidRequestError(f"{method}: a path must be str or os.PathLike, not {type(p).__name__} ({p!r})")
        out.append(os.fspath(p))
    return out


def request_pairs(method: str, filepaths: Any, frame_ids: Any, fast_infos: Any = (), *,
                  allow_empty: bool = False) -> list[tuple[str, int]]:
    """``(absolute path, frame id)`` per requested frame, after checking the arguments. Empty lists
    are a request for nothing where ``allow_empty`` (accvlab's answer to them is then ``[]``)."""
    paths = path_list(method, filepaths, allow_empty=allow_empty)
    if isinstance(frame_ids, np.ndarray):
        frame_ids = frame_ids.tolist()
    if isinstance(frame_ids, (str, bytes)) or not isinstance(frame_ids, Sequence):
        raise InvalidRequestError(f"{method}: frame_ids must be a list of ints, not {type(frame_ids).__name__}")
    if len(frame_ids) != len(paths):
        raise InvalidRequestError(f"{method}: {len(paths)} filepaths but {len(frame_ids)} frame_ids; {SAME_LENGTH} "
                                  "(one frame id per file path)")
    for p, f in zip(paths, frame_ids):
        if isinstance(f, bool) or not isinstance(f, (int, np.integer)):
            raise InvalidRequestError(f"{method}: frame ids must be ints, not {type(f).__name__} ({f!r}) for {p}",
                                      path=p)
    if fast_infos is not None and len(fast_infos):
        if len(fast_infos) != len(paths) or not all(isinstance(i, FastStreamInfo) for i in fast_infos):
            raise InvalidRequestError(f"{method}: fastStreamInfos must be empty or one FastStreamInfo per file "
                                      f"path ({len(paths)})")
    return [(os.path.abspath(p), int(f)) for p, f in zip(paths, frame_ids)]


def as_list(method: str, name: str, value: Any, holds: str) -> list[Any]:
    """``value`` as a list, checked to be a sequence (a numpy array too) and not a string."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidRequestError(f"{method}: {name} must be a list of {holds}, not {type(value).__name__}")
    return list(value)


def flag(method: str, name: str, value: Any) -> bool:
    """``value``, checked to be a bool (numpy's too)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidRequestError(f"{method}: {name} must be a bool, not {type(value).__name__} ({value!r})")
    return bool(value)


def at_most(method: str, count: int, most: int, *, counted: str, setting: str, phrase: str) -> None:
    """Raise :class:`InvalidRequestError` when a call asks for more than a size the object was made
    with allows (accvlab's limits: ``maxfiles``, ``num_of_file`` ...), with accvlab's ``phrase``."""
    if count > most:
        raise InvalidRequestError(f"{method}: {count} {counted}, more than {setting}={most} allows ({phrase}); "
                                  f"ask for at most {most} per call, or create the object with a larger {setting}")


def positive(name: str, value: Any) -> int:
    """``value``, checked to be an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(f"{name} must be a positive int, not {value!r}")
    return value


RGB = OutputSpec()
BGR = OutputSpec(format="bgr")


class Decoder:
    """What the accvlab decoders share: the engine, GOP extraction, frames out of bundles, lifetime."""

    def __init__(self, files: int, gpu: int, suppress_warning: bool, device: Device) -> None:
        flag(type(self).__name__, "suppressNoColorRangeWarning", suppress_warning)
        self._runner = Runner(device, gpu)
        self._source = GopSource(max(64, 4 * files))
        # accvlab objects free themselves when collected; so do these (not at interpreter exit:
        # daemon threads end with the process, and the engine's executors refuse work by then).
        self._finalizer = weakref.finalize(self, collect, self._runner)
        self._finalizer.atexit = False
        self._runner.engine()  # fail here, as accvlab does, if the device cannot be used

    # -- frames -------------------------------------------------------------------------------

    def _rgb_by_path(self, method: str, pairs: Sequence[tuple[str, int]], as_bgr: Any) -> list[RGBFrame]:
        """Frames asked for by ``(absolute path, frame id)`` (checked by :func:`request_pairs`), as RGB."""
        bgr = flag(method, "as_bgr", as_bgr)
        if not pairs:
            return []
        tensors = self._runner.decode([p for p, _ in pairs], [f for _, f in pairs], BGR if bgr else RGB)
        return [RGBFrame(t, is_bgr=bgr) for t in tensors]

    def _nv12_by_path(self, pairs: Sequence[tuple[str, int]]) -> list[DecodedFrameExt]:
        """Frames asked for by ``(absolute path, frame id)``, in the decoder's own samples."""
        if not pairs:
            return []
        bundles, which = distinct(self._source.extract(pairs))
        return self._nv12(bundles, which, pairs)

    def _from_data(self, method: str, datas: Sequence[Any],
                   pairs: Sequence[tuple[str, int]]) -> tuple[list[GopBundle], list[int]]:
        """Parse GOP data given to ``method`` and find the bundle of each requested frame. An empty
        array is nothing (what ``GetGOP`` of no frames gives) when no frame is asked for."""
        files = list(dict.fromkeys(p for p, _ in pairs))
        names = ", ".join(os.path.basename(p) for p in files) or "no frames"
        bundles: list[GopBundle] = []
        for i, data in enumerate(datas):
            if not pairs and isinstance(data, np.ndarray) and data.size == 0:
                continue
            what = f"{method}: GOP data{f' {i}' if len(datas) > 1 else ''} for {names}"
            bundles.extend(_bundles.split(data, what=what, path=files[0] if len(files) == 1 else None))
        return bundles, _bundles.assign(bundles, pairs, method=method)

    def _decode(self, bundles: Sequence[GopBundle], which: Sequence[int], fids: Sequence[int],
                output: OutputSpec | None) -> list[Any]:
        """Frame ``fids[k]`` of bundle ``which[k]`` for every k, one decode pass per bundle."""
        jobs, finish = decode_plan(bundles, which, fids, output)
        return finish(self._runner.decode_bundles(jobs, output)) if jobs else []

    def _nv12(self, bundles: Sequence[GopBundle], which: Sequence[int],
              pairs: Sequence[tuple[str, int]]) -> list[DecodedFrameExt]:
        fids = [f for _, f in pairs]
        check_nv12(bundles, which, fids)
        planes = self._decode(bundles, which, fids, None)
        return [nv12_frame(bundles[b], fid, p) for b, fid, p in zip(which, fids, planes)]

    # -- lifetime -----------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Where frames are decoded and returned (an asyncdecode addition)."""
        return self._runner.torch_device

    def release_decoder(self) -> None:
        """Free the decoder sessions, their threads and caches; the next call makes new ones."""
        self._runner.release()

    def release_device_memory(self) -> None:
        """Give GPU memory that torch keeps cached but unused back to the driver (nothing on the CPU).

        Frames already returned stay valid: they own their memory.
        """
        self._runner.empty_device_cache()

    def close(self) -> None:
        """Stop the engine for good (an asyncdecode addition; idempotent). Later calls raise
        :class:`~asyncdecode.EngineClosedError`."""
        self._finalizer.detach()
        self._runner.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._runner.closed else str(self.device)
        return f"<{type(self).__name__} on {state}>"


def collect(runner: Runner) -> None:
    """Close the engine of a collected decoder. Collection can happen on one of the engine's own
    threads, which must not wait for the engine to stop: the closing then runs on a thread of its own."""
    if not threading.current_thread().name.startswith("asyncdecode"):
        runner.close()
        return

    def close() -> None:
        try:
            runner.close()
        except Exception as exc:  # noqa: BLE001  (nobody to raise to)
            log.warning("asyncdecode.compat.accvlab: closing a collected decoder failed: %s", str(exc))

    threading.Thread(target=close, name="accvlab-close", daemon=True).start()


def distinct(bundles: Sequence[GopBundle]) -> tuple[list[GopBundle], list[int]]:
    """The distinct bundles of a list in which requests of one GOP share a bundle, and the index of
    each request's bundle among them (one decode pass per GOP)."""
    index: dict[int, int] = {}
    out: list[GopBundle] = []
    for b in bundles:
        if id(b) not in index:
            index[id(b)] = len(out)
            out.append(b)
    return out, [index[id(b)] for b in bundles]




def decode_plan(bundles: Sequence[GopBundle], which: Sequence[int], fids: Sequence[int], output: OutputSpec | None
                ) -> tuple[list[tuple[GopBundle, list[int]]], Callable[[Sequence[dict[int, Any]]], list[Any]]]:
    """The decode jobs for frame ``fids[k]`` of bundle ``which[k]`` for every k (one job per bundle,
    with all its wanted frames: one decode pass per GOP), and the function that turns the jobs'
    results back into one frame per k, in order."""
    wanted: dict[int, set[int]] = {}
    for b, f in zip(which, fids):
        wanted.setdefault(b, set()).add(f)
    order = list(wanted)

    def finish(results: Sequence[dict[int, Any]]) -> list[Any]:
        by_bundle = dict(zip(order, results))
        out, seen = [], set()
        for b, f in zip(which, fids):
            frame = by_bundle[b][f]
            if (b, f) in seen and output is not None:  # the same frame twice: each entry its own tensor
                frame = frame.clone()
            seen.add((b, f))
            out.append(frame)
        return out

    return [(bundles[b], sorted(wanted[b])) for b in order], finish


def check_nv12(bundles: Sequence[GopBundle], which: Sequence[int], fids: Sequence[int]) -> None:
    """Raise :class:`UnsupportedStreamError` for a frame whose stream has no NV12 / P016 form."""
    for b, fid in zip(which, fids):
        bundle = bundles[b]
        layout = planar_layout(bundle.pix_fmt)
        if layout.gray or (layout.sx, layout.sy) != (2, 2):
            raise UnsupportedStreamError(
                f"{bundle.source}: frame {fid} is {bundle.pix_fmt}, which has no NV12 form (4:2:0 only); "
                "use the RGB methods", path=bundle.source, frame_id=fid)


def nv12_frame(bundle: GopBundle, fid: int, planes: Any) -> DecodedFrameExt:
    """Frame ``fid`` of ``bundle`` as a :class:`DecodedFrameExt`, from the decoder's planes."""
    buf = nv12_from_planes(planes, bit_depth=bundle.bit_depth, pix_fmt=bundle.pix_fmt, source=bundle.source,
                           frame_id=fid)
    pts = int(bundle.packets["pts"][bundle.decode_index[fid]])
    return DecodedFrameExt(buf, height=bundle.height, width=bundle.width, bit_depth=bundle.bit_depth,
                           color_range=_bundles.COLOR_RANGES.get(bundle.color_range, 0), timestamp=pts)
