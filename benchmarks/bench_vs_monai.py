"""Benchmark: this engine vs MONAI ``sliding_window_inference``, same weights, same image.

Both sides get the same synthetic 2048x2048 nuclei-like image (see
``bench_segment.synthetic_nuclei``), the same network object (the shipped
``nuclei`` model when present, else a random-weight U-Net with the default
architecture), the same normalisation limits, the same arithmetic (precision
and memory format chosen by the engine for this device: MONAI's predictor is
wrapped in the same autocast / channels_last), and the same post-processing
(``instances_from_maps`` with the card's parameters).  MONAI runs with
``roi_size`` = our ``--tile-size``, ``overlap=0.25``, ``mode="gaussian"``,
``sw_batch_size`` = our batch size.  Runs are interleaved after a warm-up;
medians of ``--repeats`` are printed, one figure per line::

    ours_s=...          monai_s=...        speedup=...   (goal >= 1.5 on CPU)
    ours_network_px=... monai_network_px=...   (pixels the network processed)
    fg_iou=...          equal_label_px=...      ap50=...  (ours vs MONAI's labels)

``equal_label_px`` is the fraction of pixels whose object matches, after
matching objects one-to-one (IoU >= 0.5) - not raw id equality.

Run: ``python benchmarks/bench_vs_monai.py [--size 2048] [--repeats 1]``.
Needs ``pip install monai`` (check that it leaves torch as it is).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def monai_segment(img, net, card, pred, roi: int, sw_batch: int, pp: dict):
    """MONAI sliding-window inference + the same post-processing; returns (labels, seconds, network px)."""
    import torch
    from monai.inferers import sliding_window_inference

    from napari_medseg.inference.instances import instances_from_maps
    from napari_medseg.inference.normalize import normalization_limits

    t = time.perf_counter()
    low, high = normalization_limits(img, "YX", card.input.get("normalization"))
    x = (img.astype(np.float32) - low[0]) / max(float(high[0] - low[0]), 1e-6)
    seen = [0]

    def predictor(batch):
        seen[0] += int(np.prod(batch.shape[-2:])) * batch.shape[0]
        if pred.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return pred.network(batch)

    with torch.inference_mode():
        logits = sliding_window_inference(torch.from_numpy(x)[None, None].to(pred.device), (roi, roi), sw_batch,
                                          predictor, overlap=0.25, mode="gaussian")
        prob = torch.sigmoid(logits[0]).cpu().numpy()
    labels = instances_from_maps(prob[0], prob[1], **pp)
    return labels, time.perf_counter() - t, seen[0]


def matched_agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Foreground IoU, fraction of pixels with matching objects, AP at IoU 0.5 (b as reference)."""
    from napari_medseg.analysis.metrics import average_precision, match_instances

    fa, fb = a > 0, b > 0
    fg_iou = float((fa & fb).sum() / max(1, (fa | fb).sum()))
    m = match_instances(b, a, 0.5)
    lut = np.zeros(int(b.max()) + 1, np.int64)  # MONAI id -> matched id of ours (0: none)
    lut[m.pairs[:, 0]] = m.pairs[:, 1]
    equal = (lut[b] == a) & (fa | fb)
    bg_both = ~(fa | fb)
    equal_px = float((equal.sum() + bg_both.sum()) / a.size)
    ap = float(average_precision(b, a, 0.5))
    return fg_iou, equal_px, ap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--tile-size", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--random-model", action="store_true",
                    help="a random-weight U-Net (base 32, depth 4) instead of the shipped nuclei model")
    args = ap.parse_args()

    import torch
    from bench_segment import default_model, synthetic_nuclei

    from napari_medseg.inference.instances import DEFAULT_POSTPROCESS
    from napari_medseg.inference.predictor import Predictor
    from napari_medseg.inference.segment import segment_iter
    from napari_medseg.models.cache import get_model
    from napari_medseg.models.device import configure_cpu_threads, select_device
    from napari_medseg.progress import run

    img = synthetic_nuclei(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        path, desc = default_model(Path(tmp), random=args.random_model)
        dev, _ = select_device("auto")
        if dev.type == "cpu":
            configure_cpu_threads()
        net, card = get_model(path, dev)
        pred = Predictor(path, net, card, dev, "", 1, 0, None, args.precision)
        batch = args.batch_size or (1 if dev.type == "cpu" else 4)
        pp = {**DEFAULT_POSTPROCESS, **{k: v for k, v in (card.output.get("postprocess") or {}).items()
                                         if k in DEFAULT_POSTPROCESS}}
        kw = {"tile_size": args.tile_size, "batch_size": batch, "precision": args.precision}
        print(f"model={desc}")
        print(f"image={args.size}x{args.size} tile={args.tile_size} batch={batch} precision={pred.dtype_name} "
              f"channels_last={pred.channels_last} threads={torch.get_num_threads()} device={dev.type}")
        # warm-up both paths on a small crop
        run(segment_iter(img[:512, :512], path, **kw))
        monai_segment(img[:1024, :1024], pred.net, card, pred, min(args.tile_size, 1024), batch, pp)
        ours_t, monai_t = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            res = run(segment_iter(img, path, **kw))
            ours_t.append(time.perf_counter() - t)
            m_lab, m_t, m_px = monai_segment(img, pred.net, card, pred, args.tile_size, batch, pp)
            monai_t.append(m_t)
        ours_s, monai_s = statistics.median(ours_t), statistics.median(monai_t)
        ours_px = res.info["tiles"] * int(np.prod(res.info["tile_shape"]))
        print(f"ours_s={ours_s:.2f} (runs {', '.join(f'{v:.2f}' for v in ours_t)}; "
              f"network {res.timings['network']:.2f}, postprocess {res.timings['postprocess']:.2f})")
        print(f"monai_s={monai_s:.2f} (runs {', '.join(f'{v:.2f}' for v in monai_t)})")
        print(f"speedup={monai_s / ours_s:.3f}")
        print(f"ours_network_px={ours_px} ({res.info['tiles']} tiles of {tuple(res.info['tile_shape'])})")
        print(f"monai_network_px={m_px}")
        print(f"objects_ours={int(np.asarray(res.labels).max())} objects_monai={int(m_lab.max())}")
        fg_iou, equal_px, ap50 = matched_agreement(np.asarray(res.labels), m_lab)
        print(f"fg_iou={fg_iou:.4f}")
        print(f"equal_label_px={equal_px:.4f}")
        print(f"ap50={ap50:.4f}")


if __name__ == "__main__":
    main()
