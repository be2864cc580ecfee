"""Archive projects (.zip, .tar.gz, .tgz, .tar) from a path or an https URL, extracted safely.

Refused: entries outside the target (absolute, `..`), links that point out, device files,
symlinks in zips, and archives over the size limit. Downloads are cached by URL and revalidated
with ETag/Last-Modified, so an unchanged archive costs one small request.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from torchrun_cli import store
from torchrun_cli.errors import SetupError
from torchrun_cli.masking import hide_query

MAX_ENTRIES = 200_000
DOWNLOAD_TIMEOUT_S = 60.0


def _err(message: str, fix: str) -> SetupError:
    return SetupError(message, fix, phase="source")


def download(
    url: str, allow_insecure: bool, log: Path | None, cache_home: Path, max_bytes: int
) -> Path:
    """The archive at url, from the cache when the server says it has not changed."""
    parts = urlsplit(url)
    shown = hide_query(url)
    if parts.username or parts.password:
        raise _err(
            f"refused archive URL {parts.scheme}://{parts.hostname}{parts.path}: "
            "credentials in URLs are not accepted",
            "remove them from the URL",
        )
    if parts.scheme != "https" and not (parts.scheme == "http" and allow_insecure):
        raise _err(
            f"refused archive URL {shown}: only https (http with --allow-insecure-source)",
            "use an https URL",
        )
    folder = store.cache_dir(cache_home, "archives") / hashlib.sha256(url.encode()).hexdigest()[:20]
    folder.mkdir(exist_ok=True)
    data, meta_path = folder / "archive", folder / "meta.json"
    headers = {"User-Agent": "torchjob"}
    with store.locked(folder.parent / f"{folder.name}.lock"):
        if store.is_ready(folder) and data.is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("etag"):
                headers["If-None-Match"] = meta["etag"]
            if meta.get("last_modified"):
                headers["If-Modified-Since"] = meta["last_modified"]
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - scheme checked
        try:
            with _opener(allow_insecure).open(request, timeout=DOWNLOAD_TIMEOUT_S) as resp:
                (folder / store.READY).unlink(missing_ok=True)
                tmp = folder / f"archive.{os.getpid()}.tmp"
                try:
                    _copy_limited(resp, tmp, max_bytes)
                    os.replace(tmp, data)
                finally:
                    tmp.unlink(missing_ok=True)  # a broken download leaves nothing behind
                meta = {
                    "url": shown,
                    "etag": resp.headers.get("ETag"),
                    "last_modified": resp.headers.get("Last-Modified"),
                }
                store.write_atomic(meta_path, json.dumps(meta).encode())
                store.mark_ready(folder, shown)
                _note(log, f"downloaded {shown} ({data.stat().st_size} bytes)")
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                _note(log, f"{shown} unchanged (304): using the cached copy")
                return data
            raise _err(
                f"cannot download {shown}: HTTP {exc.code} {exc.reason}",
                "check the URL and that the server allows access",
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _err(
                f"cannot download {shown}: {reason}",
                "check the host, the network and the certificate (SSL_CERT_FILE)",
            ) from None
    return data


def _opener(allow_insecure: bool) -> Any:
    """An URL opener whose redirects may not leave https unless insecure sources are allowed."""

    class NoDowngrade(urllib.request.HTTPRedirectHandler):
        def redirect_request(
            self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
        ) -> Any:
            if urlsplit(newurl).scheme != "https" and not allow_insecure:
                raise _err(f"refused redirect to {newurl}", "use an https URL")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return urllib.request.build_opener(NoDowngrade())


def _copy_limited(src: Any, dest: Path, max_bytes: int) -> None:
    read = src.read
    total = 0
    with dest.open("wb") as out:
        while chunk := read(1 << 20):
            total += len(chunk)
            if total > max_bytes:
                out.close()
                dest.unlink(missing_ok=True)
                raise _err(
                    f"archive is larger than the limit of {max_bytes} bytes",
                    "raise TORCHJOB_ARCHIVE_MAX_BYTES if it is expected",
                )
            out.write(chunk)


def _note(log: Path | None, line: str) -> None:
    if log is not None:
        with log.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def extract(archive: Path, dest: Path, max_bytes: int) -> None:
    """Unpack into dest (which must not exist yet), refusing anything unsafe."""
    dest.mkdir(parents=True)
    name = archive.name.lower()
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, dest, max_bytes)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, dest, max_bytes)
        else:
            raise _err(
                f"{archive.name}: not a zip or tar archive (or it is corrupt)",
                "give a .zip, .tar.gz, .tgz or .tar file",
            )
    except SetupError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise _err(
            f"corrupt archive {name}: {exc}", "download or build the archive again"
        ) from None


def _check_name(name: str) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise _err(
            f"refused archive entry {name!r}: it points outside the target folder",
            "rebuild the archive with relative paths only",
        )


def _limits(count: int, total: int, max_bytes: int) -> None:
    if count > MAX_ENTRIES or total > max_bytes:
        raise _err(
            f"archive too large: {count} entries, {total} bytes unpacked "
            f"(limit {MAX_ENTRIES} entries, {max_bytes} bytes)",
            "raise TORCHJOB_ARCHIVE_MAX_BYTES if it is expected",
        )


def _extract_zip(archive: Path, dest: Path, max_bytes: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        _limits(len(infos), sum(i.file_size for i in infos), max_bytes)
        for info in infos:
            _check_name(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise _err(
                    f"refused archive entry {info.filename!r}: zip symlinks are not extracted",
                    "use a tar archive for links, or replace the link",
                )
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _err(
                    f"refused archive entry {info.filename!r}: not a file or folder",
                    "remove special files from the archive",
                )
        bad = zf.testzip()
        if bad is not None:
            raise _err(f"corrupt archive {archive.name}: bad CRC in {bad}", "rebuild it")
        zf.extractall(dest)  # noqa: S202 - every name checked above


def _extract_tar(archive: Path, dest: Path, max_bytes: int) -> None:
    if not hasattr(tarfile, "data_filter"):
        raise _err(
            "this Python's tarfile has no extraction filter",
            "use Python 3.10.12, 3.11.4, 3.12 or newer, or a .zip archive",
        )
    with tarfile.open(archive) as tf:
        members: list[tarfile.TarInfo] = []
        total = 0
        for member in tf:  # counted as read: a bomb of empty entries stops at the limit
            members.append(member)
            total += member.size
            _limits(len(members), total, max_bytes)
            _check_name(member.name)
            if member.isdev() or member.isfifo():
                raise _err(
                    f"refused archive entry {member.name!r}: a device or pipe",
                    "remove special files from the archive",
                )
        _check_links(members)
        try:
            tf.extractall(dest, members=members, filter="data")
        except tarfile.FilterError as exc:
            raise _err(
                f"refused archive entry: {exc}",
                "rebuild the archive without links that point outside it",
            ) from None


def _check_links(members: list[tarfile.TarInfo]) -> None:
    """Links must stay inside the target by their text alone, and no entry or link target may
    pass through another link. The data filter alone resolves links with realpath, which chains
    of long names defeat on Pythons without the fix for CVE-2025-4517."""

    def norm(name: str) -> str:
        return posixpath.normpath(name.replace("\\", "/")).lstrip("/")

    links = {norm(m.name) for m in members if m.issym() or m.islnk()}

    def through_link(parts: list[str]) -> bool:
        return any("/".join(parts[:i]) in links for i in range(1, len(parts)))

    for member in members:
        name = norm(member.name)
        if through_link(name.split("/")):
            raise _err(
                f"refused archive entry {member.name!r}: it lies under a link",
                "rebuild the archive without entries below links",
            )
        if not (member.issym() or member.islnk()):
            continue
        target = member.linkname.replace("\\", "/")
        stack = name.split("/")[:-1] if member.issym() else []  # hard links: from the root
        steps = [c for c in target.split("/") if c not in ("", ".")]
        escapes = target.startswith("/")
        for i, step in enumerate(steps):
            if step == "..":
                escapes = escapes or not stack
                if stack:
                    stack.pop()
            else:
                stack.append(step)
                escapes = escapes or (i < len(steps) - 1 and "/".join(stack) in links)
        if escapes:
            raise _err(
                f"refused archive entry {member.name!r}: its link to "
                f"{member.linkname!r} leads outside the archive or through a link",
                "rebuild the archive without links that point outside it",
            )
