"""Code written for NVIDIA's accvlab.on_demand_video_decoder, run on asyncdecode by changing one import.

    python examples/accvlab_migration.py            # makes two small clips in a temporary folder
    python examples/accvlab_migration.py a.mp4 b.mp4

Runs on the CPU when there is no GPU (the same calls, the same frames).
"""

import sys
import tempfile
from pathlib import Path

import torch

# import accvlab.on_demand_video_decoder as nvc
import asyncdecode.compat.accvlab as nvc


def main(files: list[str], workdir: Path) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"

    # Random access: decode frames by index, get them as tensors without a copy.
    decoder = nvc.CreateGopDecoder(maxfiles=6, iGpu=0)
    frames = decoder.DecodeN12ToRGB(files, [0, 10], as_bgr=False)
    tensors = [torch.as_tensor(f, device=device) for f in frames]
    print("decoded", [tuple(t.shape) for t in tensors], "on", decoder.device)

    # Separate demuxing from decoding: GOP data now, frames later (here or in another process).
    packets, first_ids, gop_lens = decoder.GetGOP(files, [12, 12], useGOPCache=True)
    decoder.GetGOP(files, [13, 13], useGOPCache=True)
    print("GOPs start at", first_ids, "with", gop_lens, "frames; second call from the cache:", decoder.isCacheHit())
    same = decoder.DecodeFromGOPRGB(packets, files, [13, 13])

    # Demuxer-free: save the GOP data, load it back, decode without opening the videos.
    nvc.SavePacketsToFile(packets, workdir / "gops.bin")
    loaded = decoder.LoadGops([str(workdir / "gops.bin")])
    again = decoder.DecodeFromGOPRGB(loaded, files, [13, 13])
    print("from saved GOP data, identical:", all(torch.equal(torch.as_tensor(a, device=device),
                                                             torch.as_tensor(b, device=device))
                                                 for a, b in zip(same, again)))

    # Stream access with one request decoding in the background.
    reader = nvc.CreateSampleReader(num_of_set=1, num_of_file=len(files), iGpu=0)
    reader.DecodeN12ToRGBAsync(files, [0, 0])
    for t in range(5):
        batch = reader.DecodeN12ToRGBAsyncGetBuffer(files, [t, t])
        reader.DecodeN12ToRGBAsync(files, [t + 1, t + 1])  # decodes while this step works on `batch`
        clip_step = torch.stack([torch.as_tensor(f, device=device) for f in batch])
    reader.DecodeN12ToRGBAsyncGetBuffer(files, [5, 5])
    print("stream access: last step", tuple(clip_step.shape))

    # Several frames of each clip per request, in the background: frames[v][f].
    batch_reader = nvc.CreateBatchAsyncStreamReader(num_of_set=1, num_of_file=len(files),
                                                    max_frames_per_decode_call=4, iGpu=0)
    batch_reader.Decode(files, [[0, 1, 2, 3]] * len(files))
    sweep = batch_reader.GetBuffer(files, [[0, 1, 2, 3]] * len(files))
    print("batch reader:", len(sweep), "clips x", len(sweep[0]), "frames")

    # GOP data shared between DataLoader workers and the main process (here all in one process):
    # a worker looks a GOP up or puts it, and hands over a small GopRef; the main process decodes.
    store = nvc.SharedGopStore.create(capacity=16, store_id=0)
    refs = []
    for path in files:
        ref = store.lookup(path, 20)
        if ref is None:  # a miss: demux the GOP and put it
            data, firsts, lens = decoder.GetGOPList([path], [20])[0]
            ref = store.put(path, firsts[0], lens[0], data)
        refs.append(ref)
    shared = decoder.DecodeFromGOPListRGB(store.get_batch(refs), files, [20, 20])
    print("from the shared GOP store:", [tuple(torch.as_tensor(f, device=device).shape) for f in shared])
    store.cleanup()

    # Errors are RuntimeError, as accvlab code expects (and asyncdecode's own error class at once).
    try:
        decoder.DecodeN12ToRGB(files, [10**6, 0])
    except RuntimeError as exc:
        print("error as accvlab raises it:", type(exc).__name__, "-", exc)

    # Not in accvlab: close() frees the engine's threads now (collection does it too).
    reader.close()
    batch_reader.close()
    decoder.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        paths = sys.argv[1:]
        if not paths:
            from asyncdecode.testing import VideoSpec, make_video

            paths = [str(make_video(Path(tmp) / f"cam{i}.mp4", VideoSpec(num_frames=48, gop=12, seed=i)))
                     for i in range(2)]
        main(paths, Path(tmp))
