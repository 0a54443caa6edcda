"""torch.hub entry points: the pretrained SALICON model from this repository.

    import torch
    salicon = torch.hub.load("path/to/checkout", "salicon_osie", source="local")   # or "OWNER/REPO"
    saliency_map = salicon.compute_saliency("photo.jpg")           # HxW float32 in [0, 1]

    net = torch.hub.load("path/to/checkout", "salicon_net", source="local", pretrained=True)
    outputs = net(fine_scale=x, coarse_scale=y)   # N x 3 x 1200 x 1600 and 600 x 800; a dict of blobs

The weights are the shipped model (models/salicon_osie.safetensors, SALICON
trained on OSIE); nothing is downloaded beyond the repository itself.
"""
from __future__ import annotations

dependencies = ["torch", "numpy", "scipy", "skimage", "PIL", "google.protobuf"]


def salicon_osie(weights: str | None = None, **kwargs):
    """The ready predictor: :class:`salicon.Salicon` with the shipped pretrained
    model (its default post-processing). ``weights`` is another weights file
    (``torch.hub.load(repo, "salicon_osie", source="local", weights="x.caffemodel")``;
    ``model=`` is torch.hub.load's own parameter). Other keyword arguments go
    to ``Salicon``: ``device``, ``precision``, ``postprocess``, ``prototxt``, ..."""
    from salicon import Salicon

    return Salicon(weights, **kwargs)


def salicon_net(pretrained: bool = True, prototxt: str | None = None, device: str = "cpu"):
    """The two-scale net of ``prototxt`` (default: the shipped test net) as a
    ``torch.nn.Module`` (:class:`salicon.engine.Net`, in eval mode), with the
    shipped weights when ``pretrained``; called with the input blobs by name
    (``fine_scale``: N x 3 x 1200 x 1600, ``coarse_scale``: N x 3 x 600 x 800, BGR, mean
    subtracted, scaled by 1/255), it returns a dict of output blobs, the
    saliency map under ``"saliency_map_out"``."""
    from salicon.device import resolve_device
    from salicon.engine import Net
    from salicon.pretrained import default_model_path, prototxt_path

    net = Net(prototxt if prototxt is not None else prototxt_path(), phase="test", device=resolve_device(device))
    if pretrained:
        net.copy_from(default_model_path(), strict=True)
    return net.eval()


def _registered_entry(name: str):
    def entry(weights: str | None = None, **kwargs):
        from salicon import Salicon

        return Salicon(weights or name, **kwargs)
    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"The registered model {name!r} (models/{name}.json) as a ready :class:`salicon.Salicon`; "
                     f"arguments as :func:`salicon_osie`.")
    return entry


def _add_registered_models() -> None:
    """One entry point per registered model (``salicon models``) not defined above."""
    try:
        from salicon.pretrained import model_records
    except ImportError:  # the package's own dependencies are missing: torch.hub names them
        return
    for name in model_records():
        globals().setdefault(name, _registered_entry(name))


_add_registered_models()
