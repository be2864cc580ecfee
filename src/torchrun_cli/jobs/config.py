"""`torchjob config`: the config files looked at, then every key a config file may set, with
its effective value and where it came from; --dry-run shows the same settings rows."""

from __future__ import annotations

import sys
from typing import Any

from torchrun_cli.settings import Settings
from torchrun_cli.settings.files import CONFIG_KEYS
from torchrun_cli.spec.model import DEFAULT_GRACE_S, DISTRIBUTED_GRACE_S, JobSpec, PythonSpec

Row = tuple[str, str, "str | None"]  # label, value, where the value came from
SCHEMA_VERSION = 1  # of `torchjob config --json`
_UNSET = {
    "home": "(not set: the user data and cache folders)",
    "conda": "(not set: conda, mamba or micromamba on PATH)",
}


def values(settings: Settings) -> list[tuple[str, Any, str, str | None]]:
    """(config key, effective value, origin, the spec key it is the default of) for every key:
    for the spec keys, torchjob's own default when no config file sets one."""
    origins = settings.origins
    out: list[tuple[str, Any, str, str | None]] = []
    for key in CONFIG_KEYS:
        origin = origins.get(key.name, "default")
        if key.name == "runs_dir":  # the folder in effect, also when it follows `home`
            value: Any = str(settings.runs_dir())
            if settings.runs_path is None and origins.get("home", "default") != "default":
                origin = f"{origins['home']} (runs/ in home)"
            out.append((key.name, value, origin, None))
            continue
        value = getattr(settings, key.name)
        if key.name == "python":
            if settings.python_launcher:
                value, origin = settings.python_launcher, "$PYTHON_LAUNCHER"
            elif value is None:
                value, origin = sys.executable, "default (torchjob's own interpreter)"
        elif key.spec is not None and value is None:
            own = {"python.manager": PythonSpec().manager, "grace": DEFAULT_GRACE_S}
            value = own.get(key.spec, JobSpec._field_defaults.get(key.spec))
            if key.name == "grace":
                origin = f"default ({DISTRIBUTED_GRACE_S:g} s for a torchrun job)"
        out.append((key.name, value, origin, key.spec))
    return out


def _text(name: str, value: Any) -> str:
    if value is None:
        return _UNSET.get(name, "(not set)")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}s"
    return str(value)


def setting_rows(settings: Settings) -> list[Row]:
    """torchjob's own settings (--dry-run shows the spec keys among the spec's values)."""
    rows: list[Row] = [("settings", "(torchjob's own)", None)]
    rows += [
        ("", f"{name}={_text(name, value)}", origin)
        for name, value, origin, spec in values(settings)
        if spec is None
    ]
    return rows


def rows(settings: Settings) -> list[Row]:
    """What `torchjob config` prints."""
    out: list[Row] = [
        ("config files" if i == 0 else "", f"{f.path}", f"{f.role}: {f.state}")
        for i, f in enumerate(settings.files)
    ]
    out += setting_rows(settings)
    out.append(("defaults", "(of spec keys: a spec file or a flag overrides them)", None))
    out += [
        ("", f"{name}={_text(name, value)}" + (f" ({spec})" if spec != name else ""), origin)
        for name, value, origin, spec in values(settings)
        if spec is not None
    ]
    return out


def data(settings: Settings) -> dict[str, Any]:
    """`torchjob config --json`."""
    return {
        "schema_version": SCHEMA_VERSION,
        "files": [f._asdict() for f in settings.files],
        "values": {
            name: {"value": value, "origin": origin, "spec_key": spec}
            for name, value, origin, spec in values(settings)
        },
    }
