"""`torchjob env list|prune|rm` and `torchjob cache list|prune`: the environment cache and the
git mirrors."""

from typing import Annotated

import typer

from torchrun_cli import console, settings
from torchrun_cli.commands import AsJson
from torchrun_cli.commands.usage import epilog

app = typer.Typer()
env_app = typer.Typer(help="The environment cache.", no_args_is_help=True)
app.add_typer(env_app, name="env")
cache_app = typer.Typer(help="The cache of git mirrors.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@env_app.command("list", epilog=epilog("env list"))
def env_list(as_json: AsJson = False) -> None:
    """Cached environments: key, manager, python, size, created, last used, projects."""
    from torchrun_cli.jobs import caches, views  # measured: the cache code only for these commands

    found = caches.envs(settings.read())
    if as_json:
        console.data([vars(e) for e in found])
    else:
        console.table(*views.envs(found))


@env_app.command("prune", epilog=epilog("env prune"))
def env_prune(
    unused_for: Annotated[
        str | None,
        typer.Option("--unused-for", help="Remove environments not used for this long (30d, 12h)."),
    ] = None,
    keep: Annotated[
        int | None, typer.Option("--keep", min=0, help="Keep only the N most recently used.")
    ] = None,
) -> None:
    """Remove old environments; one in use by a running job is never removed. Says what went
    and how much space came back."""
    from torchrun_cli.jobs import caches, views  # measured: the cache code only for these commands

    console.removals(views.removed(caches.prune_envs(settings.read(), unused_for, keep)))


@env_app.command("rm", epilog=epilog("env rm"))
def env_rm(
    key: Annotated[str, typer.Argument(help="An environment key, or a unique prefix of one.")],
) -> None:
    """Remove one environment (not while a job uses it)."""
    from torchrun_cli.jobs import caches, views  # measured: the cache code only for these commands

    console.removals(views.removed([caches.remove_env(settings.read(), key)]))


@cache_app.command("list", epilog=epilog("cache list"))
def cache_list(as_json: AsJson = False) -> None:
    """Cached git mirrors: size and last use."""
    from torchrun_cli.jobs import caches, views  # measured: the cache code only for these commands

    repos = caches.mirrors(settings.read())
    if as_json:
        console.data([vars(r) for r in repos])
    else:
        console.table(*views.mirrors(repos))


@cache_app.command("prune", epilog=epilog("cache prune"))
def cache_prune(
    unused_for: Annotated[
        str,
        typer.Option(
            "--unused-for", help="Remove mirrors not used for this long (30d, 12h, 0 for all)."
        ),
    ] = "30d",
) -> None:
    """Remove mirrors not used recently, and any left incomplete by a killed clone. Says what
    went and how much space came back."""
    from torchrun_cli.jobs import caches, views  # measured: the cache code only for these commands

    console.removals(views.removed(caches.prune_mirrors(settings.read(), unused_for)))
