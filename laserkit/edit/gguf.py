"""Write an edited GGUF file, streaming, for llama.cpp / Ollama users who came with a GGUF.

The output keeps the source's metadata as it is (architecture, hyperparameters, tokenizer, chat
template), plus a ``laserkit.record`` key holding laserkit.json. Tensors are written in the
source's order:

- unchanged tensors are copied as they are: same type, same (quantized) bytes;
- an edited tensor is dequantized, read in Hugging Face row order (transformers' GGUF reading,
  as checkpoint.GGUFCheckpoint does), edited exactly as in memory (float32), put back in the GGUF
  row order and re-quantized to its original type where ``gguf.quants.quantize`` can write that
  type (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, TQ1_0, TQ2_0, MXFP4 in gguf 0.19); the
  k-quants (Q2_K..Q6_K) and i-quants have no quantizer there, so such a tensor is stored at F16
  (F32 if it was F32). The record and the model card say, per edited tensor, which type it got.

Peak memory is one edited tensor (float32) and its SVD workspace: edited tensors wait, encoded,
in a temporary spill file until the output is written. Input must be GGUF: a Hugging
Face checkpoint is refused with a pointer to llama.cpp's converter, which knows every
architecture's tensor names and tokenizer conversion (laserkit would otherwise carry a copy of it).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core.errors import LaserkitError
from ..io.checkpoint import GGUFCheckpoint, _release
from ..io.source import ModelSource, pick_device
from .plan import Record, Step, by_tensor, edit_tensor, in_order, plan_edits, skeleton_layout
from .record import EditRecord

RECORD_KEY = "laserkit.record"
CONVERTER = "https://github.com/ggml-org/llama.cpp/blob/master/convert_hf_to_gguf.py"


def writable_type(qtype):
    """The type an edited tensor is written in: its own where gguf can quantize to it."""
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    if qtype in (T.F32, T.F16):
        return qtype
    try:
        quants.quantize(np.zeros((1, 256), dtype=np.float32), qtype)
        return qtype
    except (NotImplementedError, ValueError, TypeError, KeyError):
        return T.F16


def _encode(arr: np.ndarray, qtype) -> np.ndarray:
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    if qtype == T.F32:
        return np.ascontiguousarray(arr, dtype=np.float32)
    if qtype == T.F16:
        return np.ascontiguousarray(arr, dtype=np.float16)
    return quants.quantize(np.ascontiguousarray(arr, dtype=np.float32), qtype)


def _row_order(ckpt: GGUFCheckpoint, tensor, shape: tuple[int, int]) -> np.ndarray:
    """p with hf[i] = gguf[p[i]]: transformers' reading of this tensor, found by reading indices.

    Llama-family q/k rows are permuted for llama.cpp's rotary layout; other tensors keep their
    order. Anything that is not a pure row permutation is refused.
    """
    rows, cols = shape
    probe = np.repeat(np.arange(rows, dtype=np.float32)[:, None], cols, axis=1)
    got = ckpt._processor.process(
        weights=probe, name=tensor.name, tensor_key_mapping={}, parsed_parameters={}
    ).weights
    got = np.asarray(got)
    p = got[:, 0].astype(np.int64) if got.shape == probe.shape else None
    if (
        p is None
        or not np.array_equal(np.sort(p), np.arange(rows))
        or not np.all(got == got[:, :1])
    ):
        raise LaserkitError(
            f"cannot write GGUF tensor {tensor.name}: transformers reads it with "
            "more than a row permutation"
        )
    return p


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (out.is_dir() or not overwrite):
        raise LaserkitError(
            f"{out} exists; choose another --out or add --force"
            if not out.is_dir()
            else f"{out} is a directory, not a .gguf file"
        )
    if not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)


def _check_written(tmp: Path, n_tensors: int, out: Path) -> None:
    """The written file must read back (header parses, every tensor inside the file) before it
    is published as ``out``."""
    from ..io.cache import _tensor_extents

    size = tmp.stat().st_size
    try:
        with open(tmp, "rb") as f:
            start, tensors = _tensor_extents(f, size)
    except (LaserkitError, ValueError, KeyError, OSError) as e:
        raise LaserkitError(
            f"the GGUF file written for {out} does not read back ({e}); nothing was kept"
        ) from None
    if len(tensors) != n_tensors or any(start + a + n > size for a, n in tensors):
        raise LaserkitError(f"the GGUF file written for {out} is incomplete; nothing was kept")


def edit_to_gguf(
    src: ModelSource,
    steps: list[Step],
    out: Path,
    *,
    overwrite: bool = False,
    device: str = "cpu",
    extra_record: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[EditRecord], Path]:
    """Apply ``steps`` to a GGUF source and write ``out`` (.gguf) plus its record files."""
    import gguf

    from ..core.fileio import atomic_file, atomic_write_text
    from ..io.save import edit_record, model_card

    path = src.gguf_file
    if path is None:
        raise LaserkitError(
            f"GGUF output needs a GGUF source; {src.text} is a Hugging Face checkpoint: save it "
            f"as a directory, then convert it with llama.cpp's convert_hf_to_gguf.py ({CONVERTER})"
        )
    from ..io.modelfiles import refuse_overlap

    refuse_overlap(path, out)
    _check_out(out, overwrite)
    ckpt = GGUFCheckpoint(path, source=src.text)
    plan = plan_edits(skeleton_layout(ckpt.config), ckpt.shapes(), steps)
    groups = by_tensor(plan)
    by_gguf = {ckpt._tensors[hf].name: hf for hf in groups}
    dev = pick_device(device)
    reader = ckpt.reader
    types = {
        name: writable_type(reader_t.tensor_type)
        for reader_t in reader.tensors
        if (name := reader_t.name) in by_gguf
    }

    # every edit is computed before anything is written, tensor by tensor (one in memory at a
    # time): the record (written into the file's metadata) needs their results. The encoded
    # tensors wait in a spill file beside the output, not in memory.
    spill = tempfile.TemporaryFile(prefix=f".{out.name}.spill-", dir=out.parent)
    encoded: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = {}
    records: list[Record] = []
    for i, (gname, hf) in enumerate(by_gguf.items()):
        if progress:
            progress(f"editing {hf} ({i + 1}/{len(by_gguf)})")
        t = ckpt._tensors[hf]
        weight = ckpt.get(hf)
        p = _row_order(ckpt, t, (weight.shape[0], weight.shape[1]))
        new, done = edit_tensor(weight, groups[hf], dev)
        records.extend(done)
        back = np.empty_like(new.numpy())
        back[p] = new.numpy()
        e = _encode(back, types[gname])
        encoded[gname] = (spill.tell(), e.dtype, e.shape)
        spill.write(np.ascontiguousarray(e).data.cast("B"))
        del weight, new, back, e
    spill.flush()
    recs = in_order(records)
    stored = {
        by_gguf[g]: {
            "gguf_tensor": g,
            "source_type": t.tensor_type.name,
            "written_type": types[g].name,
        }
        for t in reader.tensors
        if (g := t.name) in types
    }
    record = edit_record(
        recs, base=src.text, extra_record={**(extra_record or {}), "gguf_types": stored}
    )

    arch_field = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    assert arch_field is not None  # a GGUF without general.architecture is no model llama.cpp reads
    arch = arch_field.contents()

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(tmp, arch=arch, endianess=reader.endianess)
        align = reader.get_field(gguf.Keys.General.ALIGNMENT)
        if align is not None:
            writer.data_alignment = align.contents()
        for field in reader.fields.values():
            if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
                continue
            if field.name == RECORD_KEY:  # an earlier laserkit edit's record is replaced
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
        writer.add_key_value(RECORD_KEY, json.dumps(record, default=str), gguf.GGUFValueType.STRING)
        for t in reader.tensors:
            if t.name in encoded:
                _, dtype, shape = encoded[t.name]
                nbytes = int(np.prod(shape)) * dtype.itemsize
                writer.add_tensor_info(
                    t.name,
                    shape,
                    dtype,
                    nbytes,
                    raw_dtype=types[t.name] if dtype == np.uint8 else None,
                )
            else:
                writer.add_tensor_info(
                    t.name, t.data.shape, t.data.dtype, t.data.nbytes, raw_dtype=t.tensor_type
                )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in reader.tensors:
            if t.name in encoded:
                offset, dtype, shape = encoded[t.name]
                writer.write_tensor_data(
                    np.memmap(spill, dtype=dtype, mode="r", offset=offset, shape=shape)
                )
            else:
                writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
                _release(reader, t)
        writer.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _check_written(tmp, len(reader.tensors), out)

    try:
        atomic_file(out, write)  # a temporary sibling renamed into place, the umask's mode
    finally:
        spill.close()
    lines = [f"| `{hf}` | {s['source_type']} | {s['written_type']} |" for hf, s in stored.items()]
    types_md = "\n".join(
        [
            "Edited tensors in the GGUF file:",
            "",
            "| tensor | source type | written type |",
            "| --- | --- | --- |",
            *lines,
        ]
    )
    text = json.dumps(record, indent=2, default=str) + "\n"
    atomic_write_text(Path(f"{out}.laserkit.json"), text)
    atomic_write_text(Path(f"{out}.README.md"), model_card(src.text, recs, extra=types_md))
    return recs, out
