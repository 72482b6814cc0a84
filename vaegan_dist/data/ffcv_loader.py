"""FFCV Loader over a `vaegan-prep` .beton; FFCV is an optional extra (`ffcv`)."""

from __future__ import annotations


def require_ffcv() -> None:
    """Raise MissingExtra (one line naming the `ffcv` extra) when FFCV cannot be imported."""
    from ..extras import require

    require("ffcv.loader", "ffcv", "data.source=ffcv")


def make_loader(path: str, batch: int, workers: int, seed: int, distributed: bool = False,
                order: str = "random", drop_last: bool = True):
    """Yields (uint8 images [B, H, W, 3], attrs [B, A], index [B, 1]) on the CPU."""
    require_ffcv()
    import torch
    from ffcv.fields.decoders import IntDecoder, NDArrayDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import ToDevice, ToTensor

    cpu = torch.device("cpu")
    pipelines = {"image": [SimpleRGBImageDecoder(), ToTensor(), ToDevice(cpu)],
                 "attrs": [NDArrayDecoder(), ToTensor()],
                 "index": [IntDecoder(), ToTensor()]}
    opt = {"random": OrderOption.RANDOM, "sequential": OrderOption.SEQUENTIAL}[order]
    return Loader(path, batch_size=batch, num_workers=workers, order=opt, seed=seed,
                  distributed=distributed, pipelines=pipelines, drop_last=drop_last)
