"""`fssam2 download` against a local HTTP server on 127.0.0.1 serving a generated checkpoint."""

import http.server
import threading

import pytest
import torch

from fssam2 import InputError, build_sam2, hub
from fssam2.cli import run_cli


class Handler(http.server.BaseHTTPRequestHandler):
    body = b""
    mode = "ok"  # "ok", "truncate" (closes early), "error" (500)
    ranges: list = []

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.mode == "error":
            self.send_error(500, "boom")
            return
        start = 0
        header = self.headers.get("Range")
        Handler.ranges.append(header)
        if header:
            start = int(header.split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(self.body) - 1}/{len(self.body)}")
        else:
            self.send_response(200)
        data = self.body[start:]
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2] if self.mode == "truncate" else data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch, tiny_sam2):
    path = tmp_path / "served.pt"
    torch.save({"model": tiny_sam2.state_dict()}, path)
    Handler.body, Handler.mode, Handler.ranges = path.read_bytes(), "ok", []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("FSSAM2_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(hub.CHECKPOINT_URLS, "fssam2_tiny", f"http://127.0.0.1:{httpd.server_port}/tiny.pt")
    yield Handler, hub.CHECKPOINT_URLS["fssam2_tiny"]
    httpd.shutdown()
    httpd.server_close()


def test_full_download_then_load_by_name(server, tiny_sam2, capsys):
    handler, _ = server
    run_cli(["download", "fssam2_tiny"])
    final = hub.cached_path("fssam2_tiny")
    assert capsys.readouterr().out.strip().endswith(str(final))
    assert final.read_bytes() == handler.body and not final.with_name(final.name + ".part").exists()
    assert final.with_name(final.name + ".sha256").read_text().strip() == hub.sha256_of(final)
    model = build_sam2("fssam2_tiny", "fssam2_tiny")  # a name wherever a checkpoint is taken
    assert torch.equal(model.no_mem_embed, tiny_sam2.no_mem_embed)
    with open(final, "r+b") as f:  # the file changes after the first download
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(InputError, match="has SHA-256 .* expected .*run `fssam2 download fssam2_tiny` again"):
        build_sam2("fssam2_tiny", "fssam2_tiny")


def test_resumed_download(server):
    handler, _ = server
    part = hub.cached_path("fssam2_tiny").with_name("fssam2_tiny.pt.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(handler.body[:1000])
    path = hub.download("fssam2_tiny", progress=False)
    assert handler.ranges == ["bytes=1000-"] and path.read_bytes() == handler.body


def test_truncated_transfer_keeps_the_part_and_resumes(server):
    handler, _ = server
    handler.mode = "truncate"
    with pytest.raises(InputError, match="run the same command again to resume"):
        hub.download("fssam2_tiny", progress=False)
    final = hub.cached_path("fssam2_tiny")
    assert not final.exists() and 0 < final.with_name(final.name + ".part").stat().st_size < len(handler.body)
    handler.mode = "ok"
    assert hub.download("fssam2_tiny", progress=False).read_bytes() == handler.body


def test_wrong_checksum_is_discarded(server):
    with pytest.raises(InputError, match="expected 00ff.*was discarded"):
        hub.download("fssam2_tiny", sha256="00ff", progress=False)
    final = hub.cached_path("fssam2_tiny")
    assert not final.exists() and not final.with_name(final.name + ".part").exists()


def test_server_error_and_offline(server, capsys):
    handler, url = server
    handler.mode = "error"
    with pytest.raises(SystemExit):
        run_cli(["download", "fssam2_tiny"])
    assert "the server answered 500" in capsys.readouterr().err
    with pytest.raises(InputError, match=r"Cannot reach http://127.0.0.1:9/x.pt .* put it at .*fssam2_tiny.pt"):
        hub.download("fssam2_tiny", url="http://127.0.0.1:9/x.pt", progress=False)
    assert not hub.cached_path("fssam2_tiny").exists()


def test_a_file_of_another_model_is_refused(server, tmp_path):
    handler, _ = server
    torch.save({"model": {"not_sam2": torch.zeros(1)}}, tmp_path / "other.pt")
    handler.body = (tmp_path / "other.pt").read_bytes()
    with pytest.raises(InputError, match="is not a fssam2_tiny checkpoint and was discarded"):
        hub.download("fssam2_tiny", progress=False)
    assert not hub.cached_path("fssam2_tiny").exists()


def test_unknown_name_and_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("FSSAM2_HOME", str(tmp_path))
    with pytest.raises(InputError, match="Unknown SAM2 model 'sam3'"):
        hub.download("sam3")
    with pytest.raises(
        InputError, match=r"'sam2.1_hiera_t' is not downloaded yet: run `fssam2 download sam2.1_hiera_t`"
    ):
        build_sam2("sam2.1_hiera_t", "sam2.1_hiera_t")
