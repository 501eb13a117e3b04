"""Starting weights: pretrained ones for a torchvision ``model.arch`` (``model.weights``: a torchvision weights
name, a local file or a URL) or an earlier run of this pipeline (``train.init_from``: its ``best.pt`` or
``model.safetensors``), e.g. SIGNS first, then your own photos.

Files are read as tensors only (``torch.load(weights_only=True)`` or safetensors), never unpickled. A file or
URL must be pinned by its sha256 (a param, so DVC re-trains when the pin changes); torchvision's own weights
are checked by torchvision against the hash in their file name. The last layer (``model.head``) is what a new
class list replaces: with the source's class names known (a run of this pipeline), the rows of the classes
both share are carried over by name and new classes start fresh; otherwise a head of another size starts
fresh. Any other layer that does not fit is an error naming it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from handsigns.errors import UserError
from handsigns.fetch import download, is_url, local_path
from handsigns.files import sha256_file
from handsigns.model import Torchvision, head

TORCHVISION_NAME = re.compile(r"DEFAULT|[A-Za-z0-9_]+_Weights\.[A-Z0-9_]+")


def _read(path: Path, what: str) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """(state dict, class names when the file names them) of a weights file."""
    classes = None
    with open(path, "rb") as fh:  # by content, not name: a downloaded file is named by its URL's hash
        safetensors = fh.read(9)[8:] == b"{"  # an 8-byte header length, then the JSON header
    try:
        if safetensors:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("handsigns", "{}"))
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
            classes = meta.get("classes")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # a handsigns best.pt
                classes, obj = obj.get("classes"), obj["state_dict"]
            state = obj
    except Exception as exc:  # torch and safetensors raise many unrelated types for foreign files
        raise UserError(f"{what} = {path}: not a weights file ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{what} = {path}: holds no state dict of tensors")
    if any(k.startswith("net.") for k in state):  # a Classifier's (model.safetensors): the net, less its buffers
        state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    return state, classes


def _fetch(spec: str, sha256: str | None, what: str, pin: str, cache: Path) -> Path:
    """The local file ``spec`` names (downloaded once into ``cache`` when a URL), its sha256 checked."""
    path = download(spec, cache, retries=2, timeout_s=60) if is_url(spec) else local_path(spec)
    if not path.is_file():
        raise UserError(f"{what} = {spec!r}: no such file ({path})")
    observed = sha256_file(path)
    if sha256 is None:
        raise UserError(
            f"{pin} is null; pin {what}'s sha256 so DVC re-trains when the weights change: {pin}: {observed}"
        )
    if observed != sha256.lower():
        raise UserError(
            f"sha256 mismatch for {what} = {spec!r}: expected {sha256}, got {observed}; if the file "
            f"changed on purpose, set {pin} to the new value"
        )
    return path


def _torchvision(spec: str, net: Torchvision) -> dict[str, torch.Tensor]:
    import torchvision

    enum = torchvision.models.get_model_weights(net.arch)
    try:
        weights = enum.DEFAULT if spec == "DEFAULT" else torchvision.models.get_weight(spec)
    except (ValueError, KeyError, AttributeError):
        weights = None
    if weights not in list(enum):
        raise UserError(
            f"model.weights = {spec!r} is not a torchvision weights name for {net.arch}; use DEFAULT "
            f"or one of {', '.join(str(w) for w in enum)}"
        )
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except OSError as exc:  # urllib's URLError is an OSError: no internet here
        raise UserError(
            f"cannot fetch {weights} ({exc}); run once where the internet is reachable (torchvision "
            f"caches it in {torch.hub.get_dir()}), or set model.weights to a local file"
        ) from None


def _source(net: nn.Module, spec: str, sha256: str | None, what: str, pin: str) -> tuple[dict, list[str] | None]:
    """(state dict in ``net``'s names, the source's class names when it names them) of the weights ``spec``
    names: torchvision's, or a file or URL checked against ``sha256``."""
    source_classes = None
    if TORCHVISION_NAME.fullmatch(spec):
        if not isinstance(net, Torchvision):
            raise UserError(
                f"{what} = {spec!r} names torchvision weights, but model.arch is the notes' net; set "
                "model.arch to a torchvision architecture, or name a weights file"
            )
        state = _torchvision(spec, net)
    else:
        state, source_classes = _read(_fetch(spec, sha256, what, pin, Path(torch.hub.get_dir()) / "handsigns"), what)
    if isinstance(net, Torchvision) and not any(k.startswith("body.") for k in state):
        state = {f"body.{k}": v for k, v in state.items()}  # torchvision's own keys: the body of ours
    return state, source_classes


def _check_fits(own: dict, state: dict, top: str, what: str, spec: str) -> None:
    """Every tensor of the model outside its head (``top``) must be in ``state``, of the same shape."""
    for key, tensor in own.items():
        if key.startswith(f"{top}."):
            continue
        if key not in state:
            raise UserError(
                f"{what} = {spec!r} does not fit this model: it has no {key!r}; is it another model.arch or model size?"
            )
        if state[key].shape != tensor.shape:
            raise UserError(
                f"{what} = {spec!r} does not fit this model: {key!r} is {tuple(state[key].shape)}, "
                f"the model's {tuple(tensor.shape)}; set model.num_channels and model.image_size to those it was "
                "trained with (its model card or checkpoint params say them)"
            )


def _merge(own: dict, state: dict, top: str, classes: list[str], source_classes: list[str] | None) -> tuple[dict, int]:
    """(``state``'s weights outside the head, with the head's rows carried over where they can be, and how many
    of ``classes`` were carried). Rows are matched by class name when the source names its classes, and
    the others keep ``own``'s fresh initialisation; otherwise a head of the same shape is kept whole."""
    in_head = [k for k in own if k.startswith(f"{top}.")]
    merged = {k: (v if k in in_head else state[k]) for k, v in own.items()}
    if source_classes is not None:
        index = {c: i for i, c in enumerate(source_classes)}
        for key in in_head:
            if key in state and state[key].shape[1:] == own[key].shape[1:]:
                rows = merged[key].clone()
                for i, c in enumerate(classes):
                    if c in index:
                        rows[i] = state[key][index[c]]
                merged[key] = rows
        return merged, sum(c in index for c in classes)
    if all(k in state and state[k].shape == own[k].shape for k in in_head):
        return {k: state[k] for k in own}, len(classes)  # the same head: kept whole
    return merged, 0


def start_from(net: nn.Module, classes: list[str], spec: str, sha256: str | None, what: str, pin: str) -> dict:
    """Load the weights ``spec`` names into ``net`` (in place); the record the checkpoint and the card keep."""
    state, source_classes = _source(net, spec, sha256, what, pin)
    own, top = net.state_dict(), head(net)
    _check_fits(own, state, top, what, spec)
    merged, carried = _merge(own, state, top, classes, source_classes)
    net.load_state_dict(merged)
    fresh = len(classes) - carried
    print(
        f"train: starting from {what} = {spec}: {len(own)} tensors; head {top}: {carried} of {len(classes)} "
        f"classes carried over, {fresh} fresh",
        flush=True,
    )
    digest = sha256.lower() if sha256 and not TORCHVISION_NAME.fullmatch(spec) else None
    return {"param": what, "source": spec, "sha256": digest, "classes_carried": carried, "classes_fresh": fresh}
