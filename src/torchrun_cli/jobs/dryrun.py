"""What `torchjob run --dry-run` shows: the resolved plan, then every effective value of the
spec and of torchjob's settings with where it came from. Nothing is started (a git mirror may
be asked which commits it holds)."""

from __future__ import annotations

import shlex

from torchrun_cli import envs, launch, source
from torchrun_cli.errors import SetupError
from torchrun_cli.jobs.config import setting_rows
from torchrun_cli.jobs.run import Plan, project_id
from torchrun_cli.spec.keys import KEYS, Kind
from torchrun_cli.spec.model import JobSpec, shown

Row = tuple[str, str, "str | None"]  # label, value, where the value came from


def plan_rows(plan: Plan, rebuild: bool = False) -> list[Row]:
    """What --dry-run shows: the resolved plan, then every effective value of the spec and of
    torchjob's settings with where it came from. Nothing is started (but the git mirror may be
    asked which commits it holds)."""
    spec, env, src, job_launch = plan.spec, plan.environment, plan.source, plan.launch
    origins = spec.origins
    problem = launch.launch_problem(job_launch, env.interpreter)
    env_state = "computed after the checkout"
    if src.kind == "local":
        try:
            env_state = envs.explain(spec, env, src.path, project_id(spec), plan.settings, rebuild)
        except (SetupError, OSError) as exc:  # what the run would stop at, shown, not raised
            why = exc.message if isinstance(exc, SetupError) else str(exc)
            env_state = f"a run would exit 125: {why}"
    version = f" (Python {env.python_version})" if env.python_version else ""
    rows: list[Row] = [
        ("dry run", "nothing was started", None),
        ("name", spec.name, origins.get("name")),
        ("source", f"{src.kind} {src.url or src.path}", origins.get("project")),
    ]
    if src.kind == "git":
        rows.append(("ref", src.ref or "(the remote's default branch)", origins.get("ref")))
    if src.subdirectory:
        rows.append(("subdirectory", src.subdirectory, None))
    rows += [
        ("cache", source.cache_state(spec, plan.settings), None),
        ("script", str(job_launch.script_path), origins.get("script")),
        ("interpreter", f"{env.interpreter}{version}", env.origin),
        ("environment", f"manager {env.manager}: {env_state}", origins.get("python.manager")),
        ("argv", shlex.join(job_launch.shown_argv()), None),
        ("cwd", str(job_launch.cwd), None),
    ]
    rows += [
        ("env" if i == 0 else "", f"{k}={v}", None)
        for i, (k, v) in enumerate(sorted(job_launch.shown_env().items()))
    ]
    rows += [
        ("timeout", f"{spec.timeout:g}s" if spec.timeout else "none", origins.get("timeout")),
        ("grace", f"{spec.grace:g}s", origins.get("grace")),
    ]
    if spec.resume_from is not None:
        rows.append(
            (
                "resume",
                plan.resume or f"nothing: {plan.resume_problem} (a run would exit 2)",
                origins.get("resume_from"),
            )
        )
    rows.append(("runs dir", str(plan.runs_dir), None))
    if src.kind != "local":
        rows.append(("launch", "checked after the checkout", None))
    else:
        rows.append(
            (
                "launch",
                "ok" if problem is None else f"would exit {problem.exit_code}: {problem.message}",
                None,
            )
        )
    return rows + _value_rows(spec) + setting_rows(plan.settings)


def _value_rows(spec: JobSpec) -> list[Row]:
    """Every key's effective value (secrets masked) and its origin, one per line; entries of
    params, env and inputs each with their own."""
    rows: list[Row] = [("values", "(each with where it came from)", None)]
    for key in KEYS:
        value = spec.value(key.path)
        if key.kind is Kind.SECTION or value is None or value in ((), {}):
            continue
        shown_value = shown(key, value)
        if isinstance(shown_value, dict):
            rows += [
                ("", f"{key.path}.{k}={v}", spec.origins.get(f"{key.path}.{k}"))
                for k, v in shown_value.items()
            ]
        else:
            text = " ".join(shown_value) if isinstance(shown_value, list) else str(shown_value)
            rows.append(("", f"{key.path}={text}", spec.origins.get(key.path, "default")))
    return rows
