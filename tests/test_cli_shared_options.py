"""An option that several commands offer is declared once (cli/options.py): its flags, default
and help read the same in search, greedy, compose, compare and reproduce."""

from __future__ import annotations

from typing import Any

import typer.main

from laserkit.cli import _register, app

_register()  # the command modules put their commands on app

# the flags each pair of commands shares by declaration; a flag named here but declared twice
# with different words fails the test
SHARED = {
    ("search", "reproduce"): {
        "--data", "--workers", "--run-dir", "--run", "--resume", "--storage", "--batch-size",
        "--no-save", "--dtype", "--device", "--trust-remote-code",
    },
    ("search", "compare"): {
        "--task", "--data", "--include-path", "--limit", "--batch-size", "--storage", "--resume",
        "--dtype", "--device", "--trust-remote-code",
    },
    ("greedy", "compose"): {
        "--task", "--data", "--include-path", "--final-eval", "--limit", "--max-new-tokens",
        "--workers", "--run-dir", "--run", "--resume", "--storage", "--batch-size", "--shuffle",
        "--no-prefix-cache", "--no-save",
    },
    ("greedy", "compare"): {"--shuffle"},
}  # fmt: skip


def params(command: str) -> dict[str, Any]:
    """The command's parameters by flag (typer ≥ 0.22 vendors its own click: no click types)."""
    group: Any = typer.main.get_command(app)
    out: dict[str, Any] = {}
    for p in group.commands[command].params:
        for flag in p.opts:
            out[flag] = p
    return out


def described(p: Any) -> tuple:
    return (tuple(p.opts), p.default, getattr(p, "help", None))


def test_shared_options_read_the_same_in_every_command():
    for (a, b), flags in SHARED.items():
        pa, pb = params(a), params(b)
        assert flags <= set(pa) & set(pb), (a, b)
        for flag in sorted(flags):
            assert described(pa[flag]) == described(pb[flag]), (a, b, flag)


def test_search_shuffle_shares_its_words_but_not_seed():
    """`search` has its own --seed (TPE's); its --shuffle reads as everywhere else."""
    search, greedy = params("search"), params("greedy")
    assert search["--shuffle"].help == greedy["--shuffle"].help
    assert search["--seed"] is not search["--shuffle"] and greedy["--seed"] is greedy["--shuffle"]


def test_the_model_argument_reads_the_same_in_the_search_commands():
    helps = {c: params(c)["model"].help for c in ("search", "greedy", "compose", "compare")}
    assert set(helps.values()) == {"hub id, model directory, .gguf, or 'default'"}
