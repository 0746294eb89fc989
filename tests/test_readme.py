"""README's commands as a newcomer runs them: the quick start, then every command of the "Use"
section that needs no network, on the toy, each checked against what its comment says.

One working directory plays the newcomer's checkout: the quick start (``python -m hpsearch``)
makes study ``toy``; ``mode=replay`` runs right after it (20 trials: the budget adapts), then the
report and the dashboard; then the search commands, in the order README lists them, each adding
its trials to the same study. The commands that need the network, a GPU, Docker, a PostgreSQL
server or hours of CPU are composed and checked as written, not run (``NOT_RUN``). Every command
README's "Use" section holds is one of the two lists, so a new one fails here until it is covered.

The runs are marked slow: minutes of CPU (the quick start twice, 5 searches, a 200-order
replay).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import REPO, run_cli

from hpsearch.app import compose_config
from hpsearch.errors import ConfigError
from hpsearch.record import BASELINE as BASELINE_ATTR

QUICK_START = "python -m hpsearch"
RUN = [  # in this order, in one directory, after the quick start
    "python -m hpsearch mode=replay",
    "python -m hpsearch mode=report",
    "python -m hpsearch mode=dashboard",
    "python -m hpsearch hp.epochs=8 ft.lr=0.003 study.n_trials=50 study.name=tau8",
    "python -m hpsearch schedule=lp_ft search_space=none study.n_trials=1 study.name=lp_ft",
    "python -m hpsearch 'study.baselines=[ft_only,lp_ft]'",
    "python -m hpsearch pruner=energy",
    "python -m hpsearch workers=4 study.n_trials=10",
]
NOT_RUN = {  # command -> why it is only composed here
    "python -m hpsearch +experiment=cifar": "downloads CIFAR-10 and ImageNet weights",
    "python -m hpsearch +experiment=split_cifar data.root=storage/data/cifar10 "
    "backbone.weights=storage/weights/resnet18_cifar10_src5.pt": "16 ResNet-18 trials: hours",
    "python -m hpsearch +experiment=split_cifar_lowdata data.root=storage/data/cifar10 "
    "backbone.weights=storage/weights/resnet18_cifar10_src5.pt": "ResNet-18 trials: an hour",
    "python benchmarks/make_split_cifar.py": "downloads CIFAR-10 (tests/benchmarks covers it)",
    "python -m hpsearch +experiment=split_cifar_lowdata data.root=storage/data/cifar10 "
    "backbone=torchvision backbone.name=resnet18 "
    "backbone.weights=storage/weights/resnet18_cifar10_src5.pt": "ResNet-18 trials: an hour",
    "python -m hpsearch +experiment=split_cifar_lowdata data.root=storage/data/cifar10 "
    "backbone=timm backbone.name=resnet10t backbone.weights=imagenet": "downloads weights",
    "python -m hpsearch +experiment=split_cifar_lowdata data.root=storage/data/cifar10 "
    "backbone=hf backbone.name=facebook/dinov2-small backbone.weights=hub": "downloads a model",
    "python -m hpsearch +experiment=split_cifar_lowdata data.root=storage/data/cifar10 "
    "backbone=custom backbone._target_=my_pkg.make_backbone backbone.weights=none": "a user's "
    "own package (tests/test_backbones.py covers the protocol)",
    "python -m hpsearch +experiment=cifar workers=8 devices=[0,1] workers_per_device=4": "GPUs",
    "export HPSEARCH_STORAGE_URL=postgresql+psycopg2://user:pass@dbhost:5432/hpsearch": "a host",
    "python -m hpsearch +experiment=cifar storage=postgres study.n_trials=20": "a server",
    "cp .env.example .env": "docker compose",
    "docker compose up -d --scale worker=2": "Docker",
    "docker compose -f docker-compose.yml -f docker-compose.gpu.yml up -d --scale worker=4": "GPUs",
    "docker compose down": "Docker",
}


def use_commands() -> list[str]:
    """Every command in README's "Use" section: continuations joined, comments dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    use = text[text.index("\n## Use\n") : text.index("\n## ", text.index("\n## Use\n") + 1)]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", use, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            command = " ".join(line.split("#", 1)[0].split())
            if command:
                commands.append(command)
    return commands


def args_of(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "hpsearch"], command
    return words[3:]


def test_every_use_command_is_run_or_composed() -> None:
    assert sorted(use_commands()) == sorted([QUICK_START, *RUN, *NOT_RUN])


@pytest.mark.parametrize("command", [c for c in NOT_RUN if c.startswith("python -m hpsearch")])
def test_commands_not_run_here_compose_as_written(command: str) -> None:
    """Each composes, or, where checking it needs the model itself (a hub download, a user's
    package that is not here), stops in one line that says what to pass instead."""
    args = [a for a in args_of(command) if not a.startswith("storage=postgres")]
    if "backbone=hf" in command or "backbone=custom" in command:
        with pytest.raises(ConfigError) as err:
            compose_config(args)
        message = str(err.value)
        assert "\n" not in message and ("offline, pass" in message or "cannot import" in message)
        return
    cfg = compose_config(args)
    assert cfg.experiment in ("cifar", "split_cifar", "split_cifar_lowdata")


def study(cwd: Path, name: str = "toy") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd}/storage/hpsearch.db")


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr  # Hydra logs to stdout, errors go to stderr


def run_ok(command: str, cwd: Path, timeout: float = 900) -> str:
    proc = run_cli(args_of(command), cwd, timeout=timeout)
    assert proc.returncode == 0, f"{command}: {output(proc)[-3000:]}"
    return output(proc)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The newcomer's directory after the quick start."""
    cwd = tmp_path_factory.mktemp("newcomer")
    out = run_ok(QUICK_START, cwd)
    assert "best trials of study 'toy'" in out and "already has" not in out
    done = study(cwd).get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(done) == 20  # "20 trials, offline, results in storage/hpsearch.db"
    return cwd


@pytest.mark.slow
def test_replay_right_after_the_quick_start_adapts_its_budget(checkout: Path) -> None:
    out = run_ok("python -m hpsearch mode=replay", checkout)
    said = [line for line in out.splitlines() if "replay.budget:" in line]
    assert len(said) == 1 and "each order replays all 20" in said[0], out[-3000:]
    for pruner in ("none", "hp_rule", "epoch_rule", "rules", "energy"):  # replay.pruners
        assert f"| {pruner} |" in out
    assert (checkout / "storage" / "reports" / "toy" / "replay.md").is_file()


@pytest.mark.slow
def test_report_writes_what_its_comment_lists(checkout: Path) -> None:
    run_ok("python -m hpsearch mode=report", checkout)
    folder = checkout / "storage" / "reports" / "toy"  # "-> storage/reports/toy/"
    for name in ("summary.md", "trials.csv", "config.yaml"):
        assert (folder / name).is_file(), name
    assert len(list(folder.glob("*.png"))) >= 5  # "plots"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_dashboard_serves_the_study_at_the_address_it_prints(checkout: Path) -> None:
    args = args_of("python -m hpsearch mode=dashboard")
    port = 8080  # "http://127.0.0.1:8080"
    if not _port_free(port):  # another program holds it on this machine: the same, elsewhere
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        args.append(f"dashboard.port={port}")
    log = checkout / "dashboard.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpsearch", *args],
            cwd=checkout,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + 90
            while True:
                assert proc.poll() is None, log.read_text()[-2000:]
                try:
                    url = f"http://127.0.0.1:{port}/api/studies"
                    with urllib.request.urlopen(url, timeout=2) as resp:
                        studies = json.loads(resp.read())["study_summaries"]
                    break
                except OSError:
                    assert time.monotonic() < deadline, "no answer within 90 s"
                    time.sleep(0.5)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    ids = {s["study_name"]: s["study_id"] for s in studies}
    assert f"open http://127.0.0.1:{port}/dashboard/studies/{ids['toy']}" in log.read_text()


@pytest.mark.slow
def test_search_commands_do_what_their_comments_say(checkout: Path) -> None:
    """In README's order, in the same directory: the first two in studies of their own, the
    others adding to study ``toy`` (and saying so)."""

    def new_trials(command: str, expect: int, name: str = "toy") -> list[optuna.trial.FrozenTrial]:
        before = len(study(checkout, name).trials) if name == "toy" else 0
        out = run_ok(command, checkout)
        assert ("already has" in out) == (name == "toy")  # the rerun line: the study had trials
        trials = study(checkout, name).trials[before:]
        assert len(trials) == expect, (command, len(trials))
        return trials

    # the quick start again: 20 more trials, said in one line
    out = run_ok(QUICK_START, checkout)
    said = [line for line in out.splitlines() if "already has" in line]
    assert len(said) == 1 and "already has 20 finished trials" in said[0], out[-2000:]

    command = "python -m hpsearch hp.epochs=8 ft.lr=0.003 study.n_trials=50 study.name=tau8"
    trials = new_trials(command, 50, "tau8")
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # the values given on the command line are the ones every trial ran (pinned), the rest
    # was searched
    assert {(t.user_attrs["tau"], t.user_attrs["ft_lr"]) for t in trials} == {(8, 0.003)}
    assert all("hp.epochs" not in t.params and "ft.lr" not in t.params for t in trials)
    assert len({t.params["hp.lr"] for t in trials}) > 1

    command = (
        "python -m hpsearch schedule=lp_ft search_space=none study.n_trials=1 study.name=lp_ft"
    )
    (lp_ft,) = new_trials(command, 1, "lp_ft")
    assert lp_ft.user_attrs["schedule"] == "lp_ft" and lp_ft.user_attrs["hp_until_converged"]

    trials = new_trials("python -m hpsearch 'study.baselines=[ft_only,lp_ft]'", 20)
    baselines = [t for t in trials if t.user_attrs.get(BASELINE_ATTR)]
    assert sorted(t.user_attrs["schedule"] for t in baselines) == ["ft_only", "lp_ft"]
    assert {t.number for t in baselines} == {trials[0].number, trials[1].number}  # run first

    trials = new_trials("python -m hpsearch pruner=energy", 20)
    assert all(t.user_attrs.get("gate_decision") in ("keep", "prune") for t in trials)
    at_gate = [t for t in trials if t.user_attrs["gate_decision"] == "prune"]
    assert all(t.intermediate_values == {} for t in at_gate)  # pruned before FT: no FT epoch
    after_ft = [t for t in trials if t.user_attrs.get("pruned_at", "").startswith("ft_epoch")]
    assert all(0 < len(t.intermediate_values) < 8 for t in after_ft)  # cut after an FT epoch

    out = run_ok("python -m hpsearch workers=4 study.n_trials=10", checkout)
    assert "starting 4 search workers" in out  # "4 processes, 40 trials, SQLite"
    assert len(study(checkout).trials) == 20 + 20 + 20 + 20 + 40
