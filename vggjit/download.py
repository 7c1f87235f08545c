"""Downloading the weight file: resumable, verified, moved into place only when complete.

The only code in vggjit that touches the network, and only when the user asks
(``vggjit weights fetch``). Standard library ``urllib`` only.

The bytes go to ``<target>.part``. An interrupted transfer is resumed with an HTTP ``Range``
request (automatically a few times, and again by running the same command later); a server that
ignores ``Range`` makes it start over. When the transfer is complete the MD5 is checked: a
mismatch deletes the ``.part`` file and installs nothing; a match renames it to the target.

Bounds: the arguments (URL scheme, MD5) are checked before any byte moves; a transfer stops at
``max_bytes`` (a server announcing more is refused at once; one streaming without end is cut
off there and its ``.part`` deleted), so a wrong address cannot fill the disk. A host that
cannot be reached is said to be unreachable, without talk of resuming what never started.
"""
from __future__ import annotations

import http.client
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import InputError, OutputExistsError, VggjitError, WeightFileError
from .weights import default_weights_path, file_md5
from .fileio import input_file
from .memory import format_bytes
from .weights_urls import DEFAULT_VARIANT, DESCRIPTIONS, MAX_BYTES, MD5S, URLS

SCHEMES = ("http", "https", "file")


@dataclass(frozen=True)
class Variant:
    name: str
    url: str
    md5: str
    description: str


VARIANTS = {name: Variant(name, URLS[name], MD5S[name], DESCRIPTIONS[name]) for name in URLS}


class _Interrupted(Exception):
    """A transfer that stopped early; the .part file keeps what arrived."""


class _Unreachable(Exception):
    """The host's name does not resolve: retrying within seconds will not help."""


def check_md5(md5: str | None) -> str | None:
    """``md5`` in lower case, or InputError unless it is 32 hexadecimal digits (or None)."""
    if md5 is None:
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
        raise InputError(f"--md5 {md5!r} is not an MD5 digest (32 hexadecimal digits)")
    return md5.lower()


def check_url(url: str) -> str:
    """``url`` if its scheme is one vggjit downloads from, else InputError."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise InputError(f"--url {url!r}: not an address vggjit downloads from (give "
                         f"{', '.join(s + '://' for s in SCHEMES)})")
    if parts.scheme.lower() == "file":   # file:///dev/zero would never end
        input_file(urllib.request.url2pathname(parts.path), "file to copy")
    return url


def download(url: str, target, md5: str | None = None, *, overwrite: bool = False,
             retries: int = 3, retry_wait: float = 2.0, timeout: float = 60.0,
             progress: bool = True, chunk_size: int = 1 << 20,
             max_bytes: int | None = MAX_BYTES) -> Path:
    """Download ``url`` to ``target``; return ``target``.

    md5: expected hex digest; checked before anything is moved into place (None: unchecked).
    overwrite: replace an existing ``target`` whose checksum differs (otherwise refuse). A
        target whose MD5 already matches is kept as it is.
    retries: how many times a dropped connection is resumed within this call; after that the
        ``.part`` file stays for the next call to resume.
    max_bytes: the most the file may have (None: no bound); a larger announced size is
        refused before the transfer, a stream that goes past it is cut off and deleted.
    """
    check_url(url)
    md5 = check_md5(md5)
    target = Path(target).expanduser()
    if target.exists():
        if target.is_dir():
            raise VggjitError(f"{target} is a directory; give a file name")
        if md5 and file_md5(target) == md5:
            return target
        if not overwrite:
            found = file_md5(target) if md5 else None
            raise OutputExistsError(
                f"{target} already exists" + (f" and its MD5 is {found}, not {md5}" if found else "")
                + "; pass --force to replace it, or --output to download elsewhere")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            have = part.stat().st_size if part.exists() else 0
            action = f"resuming at {have} bytes" if have else "trying again"
            print(f"{last}; {action} (retry {attempt} of {retries})", file=sys.stderr)
            time.sleep(retry_wait * attempt)
        try:
            _transfer(url, part, md5, timeout, progress, chunk_size, target.name, max_bytes)
            break
        except _Unreachable as exc:
            raise VggjitError(f"{exc}; nothing was downloaded") from None
        except _Interrupted as exc:
            last = exc
    else:
        have = part.stat().st_size if part.exists() else 0
        if not have:
            raise VggjitError(
                f"downloading {url} failed after {retries + 1} attempts: {last}. Nothing was "
                f"received; check the address and this machine's network connection")
        raise VggjitError(
            f"downloading {url} failed after {retries + 1} attempts ({last}). {part} keeps the "
            f"{have} bytes received; run the same command again to resume from there")
    if md5:
        got = file_md5(part)
        if got != md5:
            part.unlink()
            raise WeightFileError(
                f"{url}: checksum mismatch: the downloaded file's MD5 is {got}, expected {md5}. "
                f"It was deleted and nothing was installed at {target}; run the command again "
                f"(a proxy or mirror may have altered the file)")
    os.replace(part, target)
    return target


def _transfer(url: str, part: Path, md5: str | None, timeout: float, progress: bool,
              chunk_size: int, label: str, max_bytes: int | None) -> None:
    """Append the rest of ``url`` to ``part``; raise _Interrupted if it stops early,
    VggjitError (deleting ``part``) if it is or grows larger than ``max_bytes``."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"vggjit/{__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # Nothing left to send: the .part is complete (a run stopped before the rename),
            # or it is not this file at all. The checksum tells; a bad one starts over.
            if md5 is None or file_md5(part) == md5:
                return
            part.unlink()
            raise _Interrupted("the partial file did not match; starting again") from None
        raise VggjitError(f"{url}: HTTP error {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        host = urllib.parse.urlsplit(url).hostname
        if isinstance(reason, socket.gaierror):
            raise _Unreachable(f"cannot reach {host}: its name does not resolve ({reason}); "
                               f"this machine may have no network, or the address is "
                               f"mistyped") from None
        raise _Interrupted(f"cannot connect to {url}: {reason}") from None
    with response:
        length = response.headers.get("Content-Length")
        if offset and response.status == 206:
            start = _range_start(response.headers.get("Content-Range", ""))
            if start != offset:
                part.unlink()
                raise _Interrupted(f"the server resumed at byte {start}, not {offset}; "
                                   f"starting again")
            mode = "ab"
        else:
            offset, mode = 0, "wb"  # a plain 200: the server ignored Range, so start over
        total = offset + int(length) if length is not None and length.isdigit() else None
        if mode == "ab":   # the server's own idea of the whole file
            total = _range_total(response.headers.get("Content-Range", "")) or total
        if max_bytes is not None and total is not None and total > max_bytes:
            part.unlink(missing_ok=True)
            raise VggjitError(f"{url}: the server announces {format_bytes(total)}, more than "
                              f"the {format_bytes(max_bytes)} a weight file can be; not "
                              f"downloaded (is it the right address?)")
        from tqdm import tqdm

        received = offset
        cap = min(b for b in (total, max_bytes, float("inf")) if b is not None)
        with open(part, mode) as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=label, disable=not progress, file=sys.stderr, leave=False) as bar:
            while True:
                try:
                    block = response.read(chunk_size)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Interrupted(f"{type(exc).__name__}: {exc}") from None
                if not block:
                    break
                out.write(block)
                received += len(block)
                bar.update(len(block))
                if received > cap:
                    break
        if received > cap:
            part.unlink(missing_ok=True)
            said = (f"more than the {total} bytes it announced" if cap == total else
                    f"more than {format_bytes(max_bytes)}, more than a weight file can be,")
            raise VggjitError(f"{url}: the server sent {said} and did not stop; the transfer "
                              f"was cut off and nothing was kept (is it the right address?)")
        if total is not None and received < total:
            raise _Interrupted(f"the connection closed at {received} of {total} bytes")


def _range_start(content_range: str) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-", content_range)
    return int(match.group(1)) if match else None


def _range_total(content_range: str) -> int | None:
    """The complete length in ``bytes 0-99/1000`` (None for ``*`` or a malformed header)."""
    match = re.match(r"\s*bytes\s+\d+-\d+/(\d+)", content_range)
    return int(match.group(1)) if match else None


def fetch_weights(variant: str = DEFAULT_VARIANT, *, url: str | None = None,
                  md5: str | None = None, output=None, overwrite: bool = False,
                  convert: bool = True, progress: bool = True, **options) -> Path:
    """Download an official VGG19 file (docs/equations.md, section 4) and convert it to the
    native cache.

    variant: "beta16" (older format, the lab's) or "new"; url: a mirror of it (the variant's
    MD5 is still checked unless ``md5`` is given); output: where to put it (default
    ``home_dir()/imagenet-vgg-verydeep-19.mat``).
    """
    if variant not in VARIANTS:
        raise VggjitError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    check_md5(md5)          # every argument before any transfer
    if url:
        check_url(url)
    chosen = VARIANTS[variant]
    target = Path(output).expanduser() if output else default_weights_path()
    path = download(url or chosen.url, target, md5 or chosen.md5, overwrite=overwrite,
                    progress=progress, **options)
    if convert:
        from .weights import load_weights

        load_weights(path)
    return path
