"""The command line: ``python -m hpsearch [overrides]`` and the ``hpsearch`` console script.

One Hydra app. Before Hydra runs it, the overrides are composed and validated once, so that a bad
input (unknown experiment, wrong type, value out of range, invalid search space) is one line on
stderr and exit code 2 instead of a traceback; errors found later (data path, weights, storage)
are reported the same way. A storage that stops answering while a worker runs, for longer than
``storage.outage_timeout``, is one line too, with exit code 3 (the input was fine).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple

import hydra
from omegaconf import DictConfig, OmegaConf

from hpsearch.config import CONF_DIR as conf_dir
from hpsearch.config import register_schema, replay_pruner_settings, validate_config
from hpsearch.errors import ConfigError, HpsearchError
from hpsearch.plan import StudyPlan, plan_study
from hpsearch.secrets import (
    hide_secret_overrides,
    make_private,
    redact,
    redact_output,
    register_environment,
    register_url,
)

CONF_DIR = str(conf_dir)
# OpenMP settings for CPU training, set before torch loads OpenMP unless the environment has
# them: threads waiting at the end of a parallel region sleep instead of spinning. On cores that
# other jobs share, a spinning thread burns the time its descheduled partner needs. One policy
# for every case, by the numbers (benchmarks/pipeline.py --wait-policy, low-data FT epoch of a
# channels_last ResNet-18 on 2 cores; benchmarks/results/omp_wait_policy.md): one worker (two
# threads) took 1.8-8.8x the wall time with OpenMP's default as with PASSIVE while other work
# held a core (busy loops, another job, both); on idle cores the default was 13% faster
# (0.87x +- 0.01). workers=2 (one thread each there) measured alike (1.00-1.05x), and keeps
# the policy for machines where cores / N is several threads.
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def _fail(err: HpsearchError) -> None:
    """One line on stderr; exit 2 for a bad input, 3 for a storage that stopped answering."""
    print(f"hpsearch: error: {redact(str(err))}", file=sys.stderr)
    sys.exit(err.exit_code)


def _one_line(err: BaseException) -> str:
    """Hydra/OmegaConf errors as one line: the message, its cause, and the allowed options."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    if "Available options" in str(err):
        options = []
        for line in lines[lines.index(next(x for x in lines if x.startswith("Available"))) + 1 :]:
            if line.startswith("Config search path"):
                break
            options.append(line)
        text += "; available: " + ", ".join(options)
    cause = err.__cause__ or err.__context__
    if cause is not None and str(cause).strip():
        first = str(cause).strip().splitlines()[0]
        if first not in text:
            text += f": {first}"
    return text


def _override_syntax_hint(err: BaseException) -> str | None:
    """For an override Hydra's lexer cannot read (an emoji, a space, a bracket in a plain value):
    which override, and how to quote it."""
    first = (str(err).strip().splitlines() or [""])[0]
    if not first.startswith("LexerNoViableAltException: "):
        return None
    key, _, value = first.removeprefix("LexerNoViableAltException: ").partition("=")
    if not key or not value:
        return None
    if len(value) > 40:
        value = value[:37] + "..."
    return (
        f"{key}={value}: Hydra's override syntax does not accept this value unquoted; quote "
        f"it, e.g. '{key}=\"{value}\"' (the outer quotes are for the shell)"
    )


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml with command-line overrides and validate it (ConfigError)."""
    return compose_checked(overrides).cfg


class Composed(NamedTuple):
    cfg: DictConfig
    plan: StudyPlan | None  # a search's or a confirmation's
    pinned: list[str]  # the overrides that pinned a searched key


def compose_checked(overrides: list[str]) -> Composed:
    """Compose and validate, like ``compose_config``, and the study plan of a search or a
    confirmation (None for the other modes). A searched key given a value on the command line
    is pinned to it (``pin_searched_keys``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_schema()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    except Exception as err:  # hydra / omegaconf composition and type errors
        raise ConfigError(_override_syntax_hint(err) or _one_line(err)) from None
    finally:
        GlobalHydra.instance().clear()
    pinned = pin_searched_keys(cfg, overrides)
    return Composed(cfg, check_composed(cfg), pinned)


def pin_searched_keys(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """Take each key that an override sets (``hp.epochs=8``) out of ``cfg.search_space``, so
    that the value given is the one every trial runs; the overrides that pinned a key. Without
    this the search space would silently win over the command line."""
    from omegaconf import open_dict

    pinned = []
    for override in overrides:
        key = _override_key(override)
        if "=" in override and not override.startswith("~") and key in cfg.search_space:
            with open_dict(cfg):
                del cfg.search_space[key]
            pinned.append(override.lstrip("+"))
    return pinned


def check_composed(cfg: DictConfig) -> StudyPlan | None:
    """The one check of a composed config, before anything runs (and before torch is imported):
    required keys, the schema's ranges and cross-field rules (``validate_config``), the pruner's
    arguments; for a search or a confirmation also the study plan (every search-space bound,
    fixed trial and baseline, each through the same validator), which it returns, and the
    storage URL."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{missing[0]} must be given for experiment {cfg.experiment!r} "
            f"(e.g. {missing[0]}=...); missing: {', '.join(missing)}"
        )
    register_url(cfg.storage.url)  # a URL from a config file: its password is masked too
    register_url(cfg.pruner.prior_storage)
    try:
        from hpsearch.study.pruning import check_pruner

        validate_config(cfg)
        check_pruner(cfg)
        if cfg.mode not in ("search", "confirm"):
            return None
        from hpsearch.study.storage import check_connection

        plan = plan_study(cfg)
        check_connection(str(cfg.storage.url))  # host, password, database: before torch
        return plan
    except HpsearchError:
        raise
    except Exception as err:  # interpolation or type errors surfacing on access
        raise ConfigError(_one_line(err)) from None


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def replay_configs(cfg: DictConfig, overrides: list[str]) -> dict[str, DictConfig]:
    """``mode=replay``: per name in ``replay.pruners``, the config a live search with that
    pruner would compose from the same overrides (``pruner=NAME``'s settings, then the command
    line's ``pruner.*`` values)."""
    chosen = [o for o in overrides if _override_key(o) in ("pruner", "pruner.name", "pruner.ft")]
    if chosen:
        raise ConfigError(
            f"{chosen[0]}: mode=replay replays the pruners named in "
            "replay.pruners (e.g. 'replay.pruners=[median,energy+median]'); "
            "pruner.* settings such as pruner.n_startup_trials=5 apply to all"
        )
    configs = {}
    for name in cfg.replay.pruners:
        settings = replay_pruner_settings(str(name))
        configs[str(name)] = compose_config(
            overrides
            + [f"pruner={settings['name']}"]
            + ([f"pruner.ft={settings['ft']}"] if "ft" in settings else [])
        )
    return configs


def run(cfg: DictConfig, plan: StudyPlan | None = None) -> None:
    """Dispatch on ``mode``; a search or a confirmation runs the study plan ``plan`` (computed
    here when not given)."""
    if plan is None and cfg.mode in ("search", "confirm"):
        plan = plan_study(cfg)
    if cfg.mode == "dashboard":
        from hpsearch.review.dashboard import serve_dashboard

        serve_dashboard(cfg)
    elif cfg.mode == "report":
        from hpsearch.review.report import write_report

        write_report(cfg)
    elif cfg.mode == "replay":
        from hydra.core.hydra_config import HydraConfig

        from hpsearch.review.replay import write_replay

        write_replay(cfg, replay_configs(cfg, list(HydraConfig.get().overrides.task)))
    elif cfg.mode == "confirm":
        from hpsearch.study.worker import run_confirm

        run_confirm(cfg, plan)
    else:
        from hpsearch.study.worker import run_search

        run_search(cfg, plan)


_checked = False  # main() composed and checked this command's config before Hydra ran it
_plan: StudyPlan | None = None  # and computed its study plan (search, confirm)


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _hydra_app(cfg: DictConfig) -> None:
    _make_run_files_private()
    try:
        from hydra.core.hydra_config import HydraConfig

        pin_searched_keys(cfg, list(HydraConfig.get().overrides.task))  # as main() did
        plan = _plan if _checked else check_composed(cfg)  # Hydra's own flags bypass main()
        run(cfg, plan)
    except HpsearchError as err:
        _fail(err)


def _make_run_files_private() -> None:
    """Hydra's records of this run (``.hydra/*.yaml``, the job log) may name a storage: 0600."""
    from hydra.core.hydra_config import HydraConfig

    try:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # no Hydra run (called directly)
        return
    make_private([*run_dir.glob(".hydra/*.yaml"), *run_dir.glob("*.log")])


def set_openmp_defaults(env: dict[str, str] | None = None) -> None:
    """``OPENMP_DEFAULTS`` into ``env`` (this process's environment: before torch is imported,
    and inherited by the local launcher's workers), keeping values already set."""
    target = os.environ if env is None else env
    for key, value in OPENMP_DEFAULTS.items():
        target.setdefault(key, value)


def main() -> None:
    global _checked, _plan
    from hpsearch.study.launcher import die_with_launcher

    die_with_launcher()  # a worker of workers=N: SIGTERM when the launcher dies (kill -9 too)
    set_openmp_defaults()
    register_environment()  # PGPASSWORD, .pgpass, HPSEARCH_STORAGE_URL: masked in all output
    redact_output()
    sys.argv[1:] = hide_secret_overrides(sys.argv[1:], os.environ)  # Hydra records no password
    register_schema()
    overrides = [a for a in sys.argv[1:] if not a.startswith("-") and not a.startswith("hydra")]
    if not any(a.startswith("-") for a in sys.argv[1:]):  # --help, --cfg, --multirun: Hydra's
        try:
            cfg, _plan, pinned = compose_checked(overrides)
            _checked = True
            for override in pinned:
                print(
                    f"hpsearch: {override} pinned: removed from the search space", file=sys.stderr
                )
            if int(cfg.workers) > 1 or cfg.devices:  # the local launcher: N workers of this
                # same command (one with devices=[...]: it runs on the GPU named there)
                from hpsearch.study.launcher import launch_workers

                sys.exit(launch_workers(cfg, _plan, sys.argv[1:]))
        except HpsearchError as err:
            _fail(err)
    _hydra_app()
