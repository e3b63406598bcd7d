"""Write an edited model: the one place that decides how (``laserkit reduce --out``, ``laserkit
apply``, a search's best model).

1. ``out`` naming a ``.gguf`` file is written by gguf.py, streaming from a GGUF source (there is
   no in-memory route to GGUF; a Hugging Face source is refused with a pointer to llama.cpp);
2. otherwise a local checkpoint is edited out of core by ondisk.py: the model is never built and
   only the edited tensors are read;
3. where out of core does not apply (a hub id, ``.bin`` weights, a ``dtype`` other than the
   stored one, a model whose skeleton cannot be built: ondisk's NotOutOfCore), where the caller
   asks for memory (``in_memory``, a model with its own code: ``trust_remote_code``) or already
   holds the model (``loaded``), it is loaded, edited by the Editor and saved by io/save.py.

Routes 2 and 3 write the same tensors, bit for bit, when the model is loaded in its stored dtype
(docs/bigcheckpoints.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..io.load import Loaded, load
from ..io.save import save
from ..io.source import ModelSource
from .editor import Editor
from .gguf import edit_to_gguf
from .ondisk import edit_checkpoint
from .plan import NotOutOfCore, Step, is_gguf
from .record import EditRecord


@dataclass
class Written:
    """What ``write_edited`` did: the Editor's records, where the model went (None when ``out``
    was None: computed, not written), whether the model was built, and the source as named."""

    records: list[EditRecord]
    path: Path | None
    out_of_core: bool
    source: str


def write_edited(
    source: str | os.PathLike | ModelSource,
    steps: Sequence[Step],
    out: str | os.PathLike | None,
    *,
    loaded: Loaded | None = None,
    in_memory: bool = False,
    overwrite: bool = False,
    device: str = "cpu",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    extra_record: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> Written:
    """Apply ``steps`` (lname, lnum, intervention) to ``source`` and write the result to ``out``
    by the rule of this module's docstring. ``loaded``: the source already in memory (left as it
    was: its edits are restored after the save)."""
    src = ModelSource.parse(source)
    steps = list(steps)
    say = progress or (lambda _: None)
    if out is not None and is_gguf(out):
        say(f"editing {src.text} into GGUF ...")
        records, gguf = edit_to_gguf(
            src,
            steps,
            Path(out),
            overwrite=overwrite,
            device=device,
            extra_record=extra_record,
            progress=progress,
        )
        return Written(records, gguf, True, src.text)
    if loaded is None and not (in_memory or trust_remote_code):
        try:
            say(f"editing {src.text} out of core ...")
            records, path = edit_checkpoint(
                src,
                steps,
                out,
                overwrite=overwrite,
                device=device,
                extra_record=extra_record,
                progress=progress,
                dtype=dtype,
            )
            return Written(records, path, True, src.text)
        except NotOutOfCore as e:
            say(f"loading the whole model ({e})")
    return _load_edit_save(
        src, steps, out, loaded, overwrite, device, dtype, trust_remote_code, extra_record, say
    )


def _load_edit_save(
    src: ModelSource,
    steps: list[Step],
    out: str | os.PathLike | None,
    loaded: Loaded | None,
    overwrite: bool,
    device: str,
    dtype: str,
    trust_remote_code: bool,
    extra_record: dict | None,
    say: Callable[[str], None],
) -> Written:
    """The in-memory route: every step checked before any is applied, then applied and saved."""
    mine = loaded is None
    if loaded is None:
        say(f"loading {src.text} ...")
        loaded = load(src, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    editor = Editor(loaded.model)
    try:
        for lname, lnum, iv in steps:  # a wrong lname/lnum fails before any work
            if not (iv.noop or lname == "dont"):
                editor.targets(lname, lnum)
        for lname, lnum, iv in steps:
            say(f"applying {iv.describe()} to {lname} at {lnum} ...")
            editor.apply(lname, lnum, iv)
        records = list(editor.records)
        path = None
        if out is not None:
            say(f"saving to {out} ...")
            path = save(
                loaded.model,
                loaded.tokenizer,
                out,
                records,
                base=loaded.source,
                overwrite=overwrite,
                extra_record=extra_record,
                source_dir=loaded.path,
            )
        return Written(records, path, False, loaded.source)
    finally:
        if not mine:
            editor.restore()
