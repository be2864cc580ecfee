"""The caches as commands see them: environments and git mirrors, listed and pruned. The
policy (what a prune keeps) lives here; the CLI only prints what comes back."""

from __future__ import annotations

import time

from torchrun_cli.durations import parse_duration
from torchrun_cli.envs import cache as env_cache
from torchrun_cli.errors import UsageError
from torchrun_cli.settings import Settings
from torchrun_cli.source import git
from torchrun_cli.store import Removed


def duration(flag: str, text: str, zero_means_all: bool = False) -> float:
    """A --unused-for value in seconds (exit 2 when it is not a duration)."""
    if zero_means_all and text.strip() == "0":
        return 0.0
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag} {text!r}: {exc}", "write e.g. 30d or 12h") from None


def envs(settings: Settings) -> list[env_cache.CachedEnv]:
    return env_cache.list_envs(env_cache.root(settings.cache_home))


def prune_envs(settings: Settings, unused_for: str | None, keep: int | None) -> list[Removed]:
    """Remove environments unused for that long, or beyond the `keep` most recently used
    ready ones, and incomplete ones; one a running job holds is kept."""
    if unused_for is None and keep is None:
        raise UsageError("say what to prune", "pass --unused-for 30d and/or --keep N")
    seconds = duration("--unused-for", unused_for) if unused_for else None
    root = env_cache.root(settings.cache_home)
    found = sorted(env_cache.list_envs(root), key=lambda e: e.last_used, reverse=True)
    now = time.time()
    out = []
    rank = 0  # among ready environments: a half-built folder is not one of the N kept
    for env in found:
        old = seconds is not None and now - env.last_used >= seconds
        extra = keep is not None and rank >= keep
        rank += env.ready
        if not env.ready or old or extra:
            removed = env_cache.remove(root, env)
            out.append(Removed(env.key, env.manager, env.size_bytes, removed))
        else:
            env_cache.tidy(root, env)  # what a --rebuild replaced, once no job uses it
    return out


def remove_env(settings: Settings, key: str) -> Removed:
    """Remove one environment by a unique key prefix (not while a job uses it)."""
    root = env_cache.root(settings.cache_home)
    matches = [e for e in env_cache.list_envs(root) if e.key.startswith(key)]
    if len(matches) != 1:
        raise UsageError(
            f"{key!r} matches {len(matches)} environments",
            "give a longer key prefix (see `torchjob env list`)",
        )
    if not env_cache.remove(root, matches[0]):
        raise UsageError(
            f"environment {key} is in use by a running job", "try again when the job has ended"
        )
    return Removed(matches[0].key, matches[0].manager, matches[0].size_bytes, True)


def mirrors(settings: Settings) -> list[git.CachedRepo]:
    return git.list_mirrors(settings.cache_home)


def prune_mirrors(settings: Settings, unused_for: str) -> list[Removed]:
    """Remove mirrors not used for that long (0: all), and any a killed clone left."""
    seconds = duration("--unused-for", unused_for, zero_means_all=True)
    return [
        Removed(r.key, r.url, r.size_bytes, True) for r in git.prune(settings.cache_home, seconds)
    ]
