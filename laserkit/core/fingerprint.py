"""Short content fingerprints of what a result was computed on (a model's weights, the scored
examples): a resumed run, a worker or a continued evaluation compares them to refuse mixing
two experiments (docs/search.md, "Runs stay one experiment")."""

from __future__ import annotations

import dataclasses
import hashlib
import json


def digest(chunks) -> str:
    """A SHA-256 prefix (16 hex digits) of byte chunks."""
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()[:16]


def weights_fingerprint(model) -> str:
    """Of the model's parameters and buffers by name, shape and value, each floating tensor
    rounded to bfloat16 first: a worker that loads the same checkpoint in bfloat16 on a GPU
    and one that loads it in float32 on a CPU agree, any edited or other weights do not."""
    import torch  # noqa: PLC0415

    from .offload import real_value  # noqa: PLC0415

    def chunks():
        for name, t in sorted(model.state_dict().items()):
            t = real_value(model, name, t).detach()  # an offloaded weight: its value
            if t.is_floating_point():
                t = t.to(torch.bfloat16).view(torch.int16)
            yield f"{name}:{tuple(t.shape)}:{t.dtype};".encode()
            yield t.to("cpu").contiguous().numpy()

    return digest(chunks())


def data_fingerprint(items) -> str:
    """Of the scored examples (dataclasses or plain JSON values), in order."""

    def chunks():
        for x in items:
            d = dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x
            yield json.dumps(d, sort_keys=True, default=str).encode() + b"\n"

    return digest(chunks())
