"""The weight download against a local HTTP server on 127.0.0.1: complete, resumed, rejected."""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest

from vggjit.cli import main
from vggjit.download import download, fetch_weights
from vggjit.errors import InputError, OutputExistsError, VggjitError, WeightFileError
from vggjit.weights import cache_path_for, load_weights

from matconvnet_fixture import random_params, write_matconvnet

PAYLOAD = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class Server:
    """Serves ``content`` at /file; can drop a response after some bytes, or ignore Range."""

    def __init__(self, content: bytes):
        self.content = content
        self.cut_after: list[int] = []  # per request, in order: send only this many bytes
        self.honour_range = True
        self.requests: list[str | None] = []  # the Range header of each request
        self.endless = False      # stream zeros with no Content-Length until the client leaves
        self.announce: int | None = None  # a Content-Length to claim instead of the real one
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/file":
                    self.send_error(404, "Not Found")
                    return
                wanted = self.headers.get("Range")
                server.requests.append(wanted)
                if server.endless:
                    self.send_response(200)
                    self.end_headers()
                    self.close_connection = True
                    try:
                        while True:
                            self.wfile.write(bytes(65536))
                    except OSError:   # the client hung up: what the test wants
                        return
                start = 0
                if wanted and server.honour_range:
                    start = int(wanted.split("=")[1].rstrip("-"))
                    if start >= len(server.content):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(server.content)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(server.content) - 1}/"
                                     f"{len(server.content)}")
                else:
                    self.send_response(200)
                body = server.content[start:]
                self.send_header("Content-Length", str(server.announce or len(body)))
                self.end_headers()
                if server.cut_after:
                    body = body[:server.cut_after.pop(0)]
                    self.close_connection = True
                self.wfile.write(body)
                self.wfile.flush()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/file"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    s = Server(PAYLOAD)
    yield s
    s.close()


def get(server, target, **kwargs):
    kwargs.setdefault("md5", MD5)
    kwargs.setdefault("retry_wait", 0)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("chunk_size", 4096)
    return download(server.url, target, **kwargs)


def test_complete_download(server, tmp_path):
    target = tmp_path / "sub" / "weights.mat"
    assert get(server, target) == target
    assert target.read_bytes() == PAYLOAD
    assert server.requests == [None]
    assert sorted(p.name for p in target.parent.iterdir()) == ["weights.mat"]


def test_resume_after_a_cut_connection_in_a_later_run(server, tmp_path):
    target = tmp_path / "weights.mat"
    server.cut_after = [12_345]
    with pytest.raises(VggjitError, match="run the same command again to resume") as err:
        get(server, target, retries=0)
    part = tmp_path / "weights.mat.part"
    assert "12345 bytes" in str(err.value)
    assert not target.exists() and part.read_bytes() == PAYLOAD[:12_345]
    get(server, target)
    assert target.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests == [None, "bytes=12345-"]


def test_resume_within_one_run(server, tmp_path):
    target = tmp_path / "weights.mat"
    server.cut_after = [10_000, 5_000]
    get(server, target, retries=3)
    assert target.read_bytes() == PAYLOAD
    assert server.requests == [None, "bytes=10000-", "bytes=15000-"]


def test_server_that_ignores_range_starts_over(server, tmp_path):
    target = tmp_path / "weights.mat"
    (tmp_path / "weights.mat.part").write_bytes(b"stale bytes of something else")
    server.honour_range = False
    get(server, target)
    assert target.read_bytes() == PAYLOAD


def test_complete_part_file_is_finished_without_refetching(server, tmp_path):
    target = tmp_path / "weights.mat"
    (tmp_path / "weights.mat.part").write_bytes(PAYLOAD)
    get(server, target)
    assert target.read_bytes() == PAYLOAD
    assert server.requests == ["bytes=50000-"]


def test_wrong_checksum_is_rejected_and_nothing_is_left(server, tmp_path):
    target = tmp_path / "weights.mat"
    with pytest.raises(WeightFileError, match="checksum mismatch") as err:
        get(server, target, md5="0" * 32)
    assert MD5 in str(err.value) and "0" * 32 in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_resumed_download_with_corrupted_start_is_rejected(server, tmp_path):
    target = tmp_path / "weights.mat"
    (tmp_path / "weights.mat.part").write_bytes(b"X" * 1000)  # not the file's first bytes
    with pytest.raises(WeightFileError, match="checksum mismatch"):
        get(server, target)
    assert list(tmp_path.iterdir()) == []
    get(server, target)  # the next run starts clean
    assert target.read_bytes() == PAYLOAD


def test_existing_files(server, tmp_path):
    target = tmp_path / "weights.mat"
    target.write_bytes(PAYLOAD)
    get(server, target)  # already there and correct: nothing fetched
    assert server.requests == []
    target.write_bytes(b"the user's own file")
    with pytest.raises(OutputExistsError, match="--force"):
        get(server, target)
    assert target.read_bytes() == b"the user's own file"
    get(server, target, overwrite=True)
    assert target.read_bytes() == PAYLOAD


def test_http_error_and_unreachable_server(server, tmp_path):
    with pytest.raises(VggjitError, match="HTTP error 404"):
        download(server.url.replace("/file", "/missing"), tmp_path / "w.mat", MD5,
                 progress=False, retry_wait=0)
    dead = Server(b"")
    url = dead.url
    dead.close()
    with pytest.raises(VggjitError, match="cannot connect"):
        download(url, tmp_path / "w.mat", MD5, progress=False, retries=1, retry_wait=0)
    assert not (tmp_path / "w.mat").exists()


def test_fetch_converts_and_the_cli_reports(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VGGJIT_HOME", str(tmp_path / "home"))
    mat = write_matconvnet(tmp_path / "served.mat", random_params(seed=3))
    server.content = mat.read_bytes()
    md5 = hashlib.md5(server.content).hexdigest()
    out = tmp_path / "dl" / "vgg.mat"
    assert fetch_weights(url=server.url, md5=md5, output=out, progress=False) == out
    assert cache_path_for(out).is_file()
    assert load_weights(out).md5 == md5

    default = tmp_path / "home" / "imagenet-vgg-verydeep-19.mat"
    code = main(["weights", "fetch", "--url", server.url, "--md5", md5])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert default.read_bytes() == server.content
    assert "MD5 verified" in printed.out and str(cache_path_for(default)) in printed.out

    code = main(["weights", "fetch", "--url", server.url])  # the official MD5 will not match
    assert code == 2
    assert "already exists" in capsys.readouterr().err


# -- bounds ------------------------------------------------------------------------------------
def test_an_endless_stream_is_cut_off_at_the_limit(server, tmp_path):
    server.endless = True
    with pytest.raises(VggjitError, match="sent more than 195.3 KiB.*cut off"):
        get(server, tmp_path / "w.mat", max_bytes=200_000)
    assert list(tmp_path.iterdir()) == []          # neither a target nor a .part


def test_an_announced_size_past_the_limit_is_refused_before_the_body(server, tmp_path):
    server.announce = 10**12
    with pytest.raises(VggjitError, match=r"announces 931.3 GiB, more than the 1.0 GiB"):
        get(server, tmp_path / "w.mat")             # the default limit: 1 GiB
    assert list(tmp_path.iterdir()) == []


def test_arguments_are_checked_before_any_transfer(server, tmp_path, capsys):
    for md5 in ("zzz", "0" * 31, "g" * 32):
        with pytest.raises(InputError, match="32 hexadecimal digits"):
            get(server, tmp_path / "w.mat", md5=md5)
    assert main(["weights", "fetch", "--url", server.url, "--md5", "zzz", "--output",
                 str(tmp_path / "w.mat")]) == 2
    assert "is not an MD5 digest" in capsys.readouterr().err
    with pytest.raises(InputError, match="not an address vggjit downloads from"):
        fetch_weights(url="ftp://example.invalid/w.mat", output=tmp_path / "w.mat")
    with pytest.raises(InputError, match="is a device"):
        fetch_weights(url="file:///dev/zero", output=tmp_path / "w.mat")
    assert server.requests == [] and list(tmp_path.iterdir()) == []


def test_a_file_url_is_copied_within_the_limit(tmp_path):
    source = tmp_path / "src.mat"
    source.write_bytes(PAYLOAD)
    target = tmp_path / "out" / "w.mat"
    download(source.as_uri(), target, MD5, progress=False)
    assert target.read_bytes() == PAYLOAD


def test_an_unreachable_host_says_so_without_resuming(tmp_path, capsys, monkeypatch):
    dead = Server(b"")
    url = dead.url
    dead.close()
    with pytest.raises(VggjitError) as err:
        download(url, tmp_path / "w.mat", MD5, progress=False, retries=1, retry_wait=0)
    message = str(err.value) + capsys.readouterr().err
    assert "cannot connect" in message and "Nothing was received" in message
    assert "resum" not in message and ".part" not in message

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(VggjitError, match=r"cannot reach weights.example: its name does not "
                                          r"resolve .*nothing was downloaded"):
        download("http://weights.example/w.mat", tmp_path / "w.mat", MD5, progress=False,
                 retry_wait=0)
    assert "retry" not in capsys.readouterr().err   # no retries for a name that won't resolve
