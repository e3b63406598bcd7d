"""A model spread over devices (``--device map``, accelerate's device_map) on the CPU: a tiny
llama split across the CPU, disk offload and CPU offload (weights on ``meta``, values in the
hooks' weights_map). Edits must change what the forward uses exactly as on a plainly loaded copy,
restore must be bit for bit, the user's files must not change, and the caches keep their budget
per device. Several CUDA devices and real memory sizing cannot be tested here (docs/models.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_tiny
from safetensors.torch import load_file

import laserkit as lk
from laserkit.core.errors import LaserkitError
from laserkit.core.offload import real_value
from laserkit.edit.editor import Editor, FactorCache
from laserkit.interventions import Factors
from laserkit.io.source import parse_device
from laserkit.model.placement import offload_slot
from laserkit.search.prefix_cache import PrefixCache

LAYERS = 4
SPLIT = {  # blocks 2 and 3 offloaded to disk: their weights are read from the user's files
    "model.embed_tokens": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "cpu",
    "model.layers.2": "disk",
    "model.layers.3": "disk",
    "model.norm": "cpu",
    "model.rotary_emb": "cpu",
    "lm_head": "cpu",
}
EDITS = [("fc_in", 3), ("attn", 2), ("fc_out", 1), ("fc_up", 0)]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file's bytes, mode and modification time."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(folder))] = (p.read_bytes(), st.st_mode, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-split")
    make_tiny("llama", num_hidden_layers=LAYERS).save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LASERKIT_CACHE", str(tmp_path / "cache"))


def split_model(model_dir: Path) -> torch.nn.Module:
    """Blocks 2-3 on disk (transformers), block 1 offloaded to CPU memory (accelerate's
    cpu_offload: what a GPU run does with the blocks past the GPUs' memory)."""
    from accelerate import cpu_offload

    model = lk.load(model_dir, dtype="float32", device_map=SPLIT).model
    cpu_offload(model.model.layers[1], execution_device=torch.device("cpu"))
    return model


def logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_edits_on_a_split_model_equal_a_plain_one_and_restore_bit_for_bit(model_dir):
    before = snapshot(model_dir)
    split = split_model(model_dir)
    plain = lk.load(model_dir, dtype="float32", device="cpu").model
    for name in ("model.layers.3.mlp.gate_proj.weight", "model.layers.1.mlp.down_proj.weight"):
        assert split.get_parameter(name).device.type == "meta"  # offloaded, disk and CPU
        assert offload_slot(split, name) is not None
    assert offload_slot(split, "model.layers.0.mlp.up_proj.weight") is None
    base = logits(split)
    assert torch.equal(base, logits(plain))
    iv = lk.Intervention(kind="rank-reduction", rho=0.25)
    on_split, on_plain = Editor(split), Editor(plain)
    for lname, lnum in EDITS:
        on_split.apply(lname, lnum, iv)
        on_plain.apply(lname, lnum, iv)
    edited = logits(split)
    assert not torch.equal(edited, base)  # the forward uses the edited offloaded weights
    assert torch.equal(edited, logits(plain))  # exactly: same float32 edit, same forward
    assert [r.rel_error for r in on_split.records] == [r.rel_error for r in on_plain.records]
    on_split.restore()
    original = load_file(model_dir / "model.safetensors")
    state = split.state_dict()
    assert set(state) == set(original)
    for name, t in state.items():  # offloaded ones read back through their hooks
        assert torch.equal(real_value(split, name, t), original[name]), name
    assert torch.equal(logits(split), base)
    assert snapshot(model_dir) == before  # bytes, modes and times of the user's files


@pytest.mark.filterwarnings("ignore:Attempting to save a model with offloaded modules")
def test_a_save_of_an_edited_split_model_writes_the_edited_values(model_dir, tmp_path):
    """transformers' save reads offloaded weights through the hooks: the overlay's edits. (Not
    with cpu_offload stacked on a dispatched model, whose SequentialHook it cannot read.)"""
    split = lk.load(model_dir, dtype="float32", device_map=SPLIT).model
    plain = lk.load(model_dir, dtype="float32", device="cpu").model
    iv = lk.Intervention(kind="rank-reduction", rho=0.25)
    on_split, on_plain = Editor(split), Editor(plain)
    for lname, lnum in EDITS:
        on_split.apply(lname, lnum, iv)
        on_plain.apply(lname, lnum, iv)
    lk.save(split, None, tmp_path / "saved", on_split.records, base=str(model_dir))
    saved, want = load_file(tmp_path / "saved" / "model.safetensors"), plain.state_dict()
    assert set(saved) == set(want) and all(torch.equal(saved[k], want[k]) for k in want)


def test_composed_edits_on_an_offloaded_weight_undo_one_step_at_a_time(model_dir):
    split = split_model(model_dir)
    name = "model.layers.2.mlp.gate_proj.weight"
    slot = offload_slot(split, name)
    assert slot is not None
    first = slot.get().clone()
    ed = Editor(split)
    ed.apply("fc_in", 2, lk.Intervention(kind="rank-reduction", rho=0.5))
    once = slot.get().clone()
    mark = ed.mark()
    ed.apply("fc_in", 2, lk.Intervention(kind="rank-reduction", rho=0.1))
    assert not torch.equal(slot.get(), once)
    ed.restore(to=mark)
    assert torch.equal(slot.get(), once)
    ed.restore()
    assert torch.equal(slot.get(), first) and slot.key not in slot.store  # overlay emptied


def test_the_offload_folder_is_laserkits_and_never_inside_the_model(model_dir, tmp_path):
    loaded = lk.load(model_dir, dtype="float32", device_map=SPLIT)
    hook = loaded.model.model.layers[2].mlp.gate_proj._hf_hook
    folder = Path(hook.weights_map.dataset.save_folder)
    assert folder.is_relative_to(tmp_path / "cache" / "offload")
    # safetensors weights are read in place from the user's file (read-only): nothing copied
    entry = hook.weights_map.dataset.index["model.layers.2.mlp.gate_proj.weight"]
    assert Path(entry["safetensors_file"]) == model_dir / "model.safetensors"
    assert not any(folder.iterdir())
    with pytest.raises(LaserkitError, match="inside the model directory"):
        lk.load(model_dir, dtype="float32", device_map=SPLIT, offload_dir=model_dir / "off")
    assert not (model_dir / "off").exists()


def test_device_texts():
    assert parse_device("cpu").device_map is None
    plan = parse_device("map:0=70GiB,cuda:1=1GB,cpu=200GiB")
    assert plan.device_map == "auto"
    assert plan.max_memory == {0: 70 << 30, 1: 10**9, "cpu": 200 << 30}
    for bad, said in (("map:0", "not DEVICE=SIZE"), ("map:gpu=1GB", "not DEVICE=SIZE")):
        with pytest.raises(LaserkitError, match=said):
            parse_device(bad)
    with pytest.raises(LaserkitError, match="bad size 'lots'"):
        parse_device("map:cpu=lots")


def test_factor_cache_budget_and_lru_are_per_device():
    """A second device's factors (here on ``meta``) neither count against the CPU's budget nor
    are evicted by the CPU's new ones."""
    g = torch.Generator().manual_seed(0)
    mats = [torch.randn(16, 12, generator=g) for _ in range(4)]
    one = FactorCache._size(Factors.of(mats[0]))
    cache = FactorCache(max_bytes={"cpu": 2 * one, "meta": one})
    other = Factors(*(torch.empty(s, device="meta") for s in ((16, 12), (12,), (12, 12))))
    cache._items[("other", None, torch.float32, "full")] = other
    for i, W in enumerate(mats):
        cache.get((f"w{i}", None, torch.float32), W)
    assert cache.held_bytes() == {"cpu": 2 * one, "meta": one}
    assert [k[0] for k in cache._items] == ["other", "w2", "w3"]  # the CPU's LRU went
    cache.get(("w2", None, torch.float32), mats[2])
    cache.get(("w0", None, torch.float32), mats[0])
    assert [k[0] for k in cache._items] == ["other", "w2", "w0"]  # w3 was least recent
    assert FactorCache(max_bytes=5).budget(torch.device("cpu")) == 5
    assert FactorCache().budget(torch.device("cpu")) == 4 << 30


def test_prefix_cache_on_a_split_model_is_exact_and_budgeted_per_device(model_dir):
    split = split_model(model_dir)
    ref = logits(split)
    cache = PrefixCache(split, budget_bytes={"cpu": 1 << 20}, wanted={1, 2, 3})
    with torch.no_grad(), cache.at(None):
        logits(split)
    assert cache.stats["recorded"] == 3
    state = 2 * 9 * 32 * 4  # batch × tokens × hidden × float32
    assert cache.held_bytes() == {"cpu": 3 * state}
    for layer in (3, 2, 1):  # injected into offloaded blocks, through accelerate's hooks
        with cache.at(layer):
            assert torch.equal(logits(split), ref)
    assert cache.stats["hits"] == 3
    small = PrefixCache(split, budget_bytes={"cpu": 2 * state}, wanted={1, 2, 3})
    with torch.no_grad(), small.at(None):
        logits(split)
    assert small.held_bytes() == {"cpu": 2 * state} and small.stats["not_kept"] == 1
    assert PrefixCache(split, budget_bytes={"cuda": 5}).budget(torch.device("cpu")) == 0


def test_prefix_cache_keeps_each_state_on_its_blocks_device_within_that_devices_budget():
    """Block 3 on a second device (``meta`` stands in for a GPU): its states go there and count
    against that device's budget only."""
    model = make_tiny("llama", num_hidden_layers=LAYERS)
    h = torch.ones(2, 9, 32)
    size = h.numel() * h.element_size()
    cache = PrefixCache(model, budget_bytes={"cpu": size, "meta": 2 * size})
    cache._devices = {1: torch.device("cpu"), 2: torch.device("cpu"), 3: torch.device("meta")}
    for key in ((1, "a"), (2, "a"), (3, "a"), (3, "b"), (3, "c")):
        cache._record(key, h)
    assert cache.held_bytes() == {"cpu": size, "meta": 2 * size}
    assert cache._memory[(3, "a")].device.type == "meta"
    assert cache.stats["recorded"] == 3 and cache.stats["not_kept"] == 2
    cache.layer = 2  # scoring layer 2 now: layer 1 makes room on the CPU, the GPU keeps its own
    cache._record((2, "b"), h)
    assert (2, "b") in cache._memory and (1, "a") not in cache._memory
    assert cache.held_bytes() == {"cpu": size, "meta": 2 * size}


def test_a_grid_search_on_a_split_model_equals_one_on_a_plain_model(
    model_dir, tmp_path, one_thread
):
    """The search engine in this process (edits, restores, factor and prefix caches,
    fingerprints) on the split model: the same trials, exactly, as on a plain copy."""
    from laserkit.search import Context, ObjectiveConfig, RunConfig, TrialStore, run
    from laserkit.search.store import default_url

    split = split_model(model_dir)
    plain = lk.load(model_dir, dtype="float32", device="cpu").model
    seqs = torch.randint(0, 128, (10, 8), generator=torch.Generator().manual_seed(1)).tolist()
    results = []
    for name, model in (("split", split), ("plain", plain)):
        cfg = RunConfig(
            strategy="grid",
            model="tiny",
            objective=ObjectiveConfig(type="next-token", sequences=seqs, batch_size=8),
            intervention=lk.Intervention(rho=1.0).to_dict(),
            lnames=["fc_in"],
            layers=[2, 3],
            rhos=[0.5, 0.1],
        )
        (tmp_path / name).mkdir()
        store = TrialStore(default_url(tmp_path / name), "run", create=cfg)
        ctx = Context(store.config, model)
        results.append(run(store, ctx=ctx))
        assert ctx.prefix is not None and ctx.prefix.stats["hits"] > 0
    assert len(results[0]["trials"]) == 4
    for key in ("trials", "chosen", "base", "best"):
        assert results[0][key] == results[1][key], key
    assert torch.equal(logits(split), logits(plain))  # every trial restored


def _cli(*args, env) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("laserkit")
    return subprocess.Popen(
        [exe, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


@pytest.fixture(scope="module")
def tok_model_dir(tmp_path_factory, default_model_dir) -> Path:
    """A 4-layer llama with SmolLM2's tokenizer, so the shipped tasks run."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    path = tmp_path_factory.mktemp("tiny-tok")
    make_tiny("llama", vocab_size=len(tok), num_hidden_layers=LAYERS).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_eval_with_device_map_equals_one_device(tok_model_dir, tmp_path):
    """--device map:cpu=12MB puts most of the 16 MB model on disk; the scores are those of the
    plainly loaded model (the library's evaluate, in this process)."""
    env = {**os.environ, "LASERKIT_CACHE": str(tmp_path / "cache")}
    before = snapshot(tok_model_dir)
    task = ("--task", "fever-bigbench", "--limit", "8", "--dtype", "float32")
    out = tmp_path / "o"
    ran = _cli("eval", tok_model_dir, *task, "--device", "map:cpu=12MB", "--out", out, env=env)
    bad = _cli("eval", tok_model_dir, *task, "--device", "map:cpu=lots", env=env)
    plain = lk.load(tok_model_dir, dtype="float32", device="cpu")
    ref = lk.evaluate(plain.model, plain.tokenizer, "fever-bigbench", limit=8, progress=False)
    assert ran.wait() == 0, ran.stderr.read()  # type: ignore[union-attr]
    summary = json.loads((out / "summary.json").read_text())
    for k in ("n", "accuracy", "log_loss", "score"):
        assert summary[k] == ref.summary[k], k
    assert snapshot(tok_model_dir) == before
    assert not any((tmp_path / "cache" / "offload").iterdir())  # removed at exit
    assert bad.wait() == 2
    assert bad.stderr.read().strip().splitlines() == [  # type: ignore[union-attr]
        "laserkit: error: --device map:cpu=lots: bad size 'lots' for cpu: use e.g. 70GiB, 500MB"
    ]


def test_local_workers_refuse_a_device_map(tok_model_dir, tmp_path):
    """Two workers on this machine would each load the whole map within the same limits: the
    installed command refuses before it loads or writes anything, and so does the library."""
    from laserkit.search.session import check_workers

    env = {**os.environ, "LASERKIT_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "run"
    cmd = ("search", tok_model_dir, "--task", "fever", "--limit", "8", "--run-dir", out)
    refused = _cli(*cmd, "--workers", "2", "--device", "map:cpu=12MB", env=env)
    assert refused.wait() == 2
    assert refused.stderr.read().strip().splitlines() == [  # type: ignore[union-attr]
        "laserkit: error: --workers 2 with --device map:cpu=12MB: each worker would load the "
        "whole model within the same memory limits; use --workers 1 (the map spreads the one "
        "model over the devices), or `laserkit worker URL --run NAME` on other machines"
    ]
    assert not out.exists() and not (tmp_path / "cache").exists()
    with pytest.raises(LaserkitError, match="--workers 3 with --device map"):
        check_workers(3, "map")
    check_workers(1, "map")  # one worker: the map is what spreads the model
    check_workers(3, "cpu")


def test_offload_folders_of_killed_processes_are_removed_by_the_next(tmp_path):
    """A folder left by a process that no longer runs on this host goes; one of a running
    process, or of another host (a shared cache), stays."""
    import socket

    from laserkit.io.load import offload_folder

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    left = tmp_path / f"offload-{dead.pid}@{host}-abc"
    running = tmp_path / f"offload-{os.getppid()}@{host}-def"
    elsewhere = tmp_path / f"offload-{dead.pid}@{host}-1-ghi"  # host "HOST-1"
    for d in (left, running, elsewhere):
        d.mkdir()
        (d / "weights.dat").write_bytes(b"x" * 10)
    new = offload_folder(None, tmp_path)
    assert new.name.startswith(f"offload-{os.getpid()}@{host}-") and new.is_dir()
    assert not left.exists()
    assert (running / "weights.dat").exists() and (elsewhere / "weights.dat").exists()


def _layout(kind: str, src: Path, root: Path) -> tuple[Path, Path]:
    """``src`` laid out as a user's folder laserkit did not make: (model folder, what to watch)."""
    import hashlib
    import shutil

    if kind == "hub cache snapshot":  # files are relative symlinks into blobs/
        repo = root / "models--me--tiny"
        snap, blobs = repo / "snapshots" / "abc123", repo / "blobs"
        snap.mkdir(parents=True)
        blobs.mkdir()
        for f in src.iterdir():
            blob = blobs / hashlib.sha256(f.read_bytes()).hexdigest()
            shutil.copy(f, blob)
            (snap / f.name).symlink_to(os.path.relpath(blob, snap))
        return snap, repo
    folder = root / "out" / "checkpoint-500"
    shutil.copytree(src, folder)
    if kind == "Trainer checkpoint":
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": 500}))
        torch.save({"step": torch.zeros(2)}, folder / "optimizer.pt")
    else:  # read-only
        for p in [*folder.iterdir(), folder]:
            p.chmod(0o555 if p.is_dir() else 0o444)
    return folder, folder


@pytest.mark.parametrize("kind", ["hub cache snapshot", "Trainer checkpoint", "read-only"])
def test_a_split_model_from_folders_laserkit_did_not_make(model_dir, tmp_path, kind):
    """Disk offload reads the user's safetensors in place: through the snapshot's symlinks, next
    to a Trainer's files, from a read-only folder. Logits equal a plain copy's before and after
    an edit and after restore; not a byte, mode or time of the folder changes."""
    folder, watched = _layout(kind, model_dir, tmp_path / "user")
    before = snapshot(watched)
    split = lk.load(folder, dtype="float32", device_map=SPLIT).model
    plain = lk.load(model_dir, dtype="float32", device="cpu").model
    assert torch.equal(logits(split), logits(plain))
    eds = [Editor(m) for m in (split, plain)]
    for ed in eds:
        ed.apply("fc_in", 3, lk.Intervention(kind="rank-reduction", rho=0.1))  # offloaded
    assert torch.equal(logits(split), logits(plain))
    for ed in eds:
        ed.restore()
    assert torch.equal(logits(split), logits(plain))
    assert snapshot(watched) == before
    if kind == "read-only":
        for p in [*folder.iterdir(), folder]:
            p.chmod(0o755 if p.is_dir() else 0o644)  # let pytest clean up
