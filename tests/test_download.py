"""`fssam2 download` against a local HTTP server on 127.0.0.1 serving a generated checkpoint."""

import http.server
import json
import threading
from pathlib import Path

import pytest
import torch

import fssam2
from fssam2 import InputError, build_sam2, hub
from fssam2.build import resolve_config
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


# Checkpoints shipped inside a package, loaded by name with their pinned SHA-256.
NAME = "fssam2_tiny_tracking"
REGENERATE = "python experiments/pretrain_tracking.py"


@pytest.fixture
def packaged(tmp_path, monkeypatch, tiny_sam2_state):
    """NAME registered as a file of a throwaway package, holding the seeded tiny weights."""
    package = f"pkg_{tmp_path.name.replace('-', '_')}"
    folder = tmp_path / package / "checkpoints"
    folder.mkdir(parents=True)
    (tmp_path / package / "__init__.py").write_text("")
    torch.save({"model": tiny_sam2_state}, folder / "tiny.pt")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = hub.PackagedCheckpoint(
        package, "checkpoints/tiny.pt", hub.sha256_of(folder / "tiny.pt"), "fssam2_tiny", REGENERATE
    )
    monkeypatch.setitem(hub.PACKAGED_CHECKPOINTS, NAME, entry)
    monkeypatch.chdir(tmp_path)  # no file named NAME in the working directory shadows the name
    return folder / "tiny.pt", entry.sha256


def test_packaged_checkpoint_loads_by_name(packaged, tiny_sam2_state, capsys):
    path, digest = packaged
    torch.manual_seed(1)  # a fresh build would differ from the saved (seed 0) weights
    model = build_sam2("fssam2_tiny", NAME)
    state = model.state_dict()
    assert state.keys() == tiny_sam2_state.keys()
    assert all(torch.equal(state[k], v) for k, v in tiny_sam2_state.items())
    assert hub.resolve_checkpoint(NAME) == path and hub.checkpoint_sha256(NAME) == digest
    from fssam2.module import FSSAM2Module  # --model.sam2_checkpoint NAME

    module = FSSAM2Module("fssam2_tiny", NAME, lora=None, trainable="all", feature_cache=None)
    assert torch.equal(module.model.sam2.no_mem_embed, tiny_sam2_state["no_mem_embed"])
    run_cli(["download", NAME])
    out = capsys.readouterr().out
    assert "packaged with fssam2, no download needed" in out and out.strip().endswith(str(path))


def test_packaged_checkpoint_changed_by_one_byte_is_refused(packaged):
    path, digest = packaged
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(InputError) as err:
        build_sam2("fssam2_tiny", NAME)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and REGENERATE in message
    assert f"has SHA-256 {hub.sha256_of(path)}, expected {digest}" in message


def test_packaged_checkpoint_missing_from_the_install(packaged, capsys):
    path, _ = packaged
    path.unlink()
    with pytest.raises(InputError) as err:
        build_sam2("fssam2_tiny", NAME)
    message = str(err.value)
    assert "\n" not in message and f"{NAME!r} is not in this install ({path} is missing)" in message
    assert f"regenerate it with `{REGENERATE}`" in message
    with pytest.raises(SystemExit) as exit_:
        run_cli(["download", NAME])
    assert exit_.value.code == 2 and "is not in this install" in capsys.readouterr().err


def test_packaged_checkpoint_with_another_config_is_refused(packaged):
    with pytest.raises(InputError, match=rf"{NAME}' belongs to config 'fssam2_tiny', not 'sam2.1_hiera_t'"):
        build_sam2("sam2.1_hiera_t", NAME)
    assert build_sam2(str(resolve_config("fssam2_tiny")), NAME) is not None  # the same yaml by path is fine


def test_shipped_registry_entry():
    """The real entry: a file of fssam2 itself, for fssam2_tiny; when the file is there, it must
    match the pinned digest (pin it after regenerating), else the load says how to make it."""
    entry = hub.PACKAGED_CHECKPOINTS[NAME]
    assert entry.package == "fssam2" and entry.config == "fssam2_tiny" and entry.regenerate == REGENERATE
    path = hub.packaged_path(NAME)
    assert path.parent.name == "checkpoints" and path.parent.parent == Path(fssam2.__file__).parent
    if path.is_file():
        assert hub.sha256_of(path) == entry.sha256, f"pin the digest of {path} in fssam2.hub.PACKAGED_CHECKPOINTS"
        build_sam2("fssam2_tiny", NAME)
    else:
        with pytest.raises(InputError, match="is not in this install"):
            build_sam2("fssam2_tiny", NAME)


def test_a_released_config_loads_its_released_weights_downloading_when_needed(server, tiny_sam2_state):
    """model.sam2_checkpoint unset: the config's released weights, fetched on first use (here
    fssam2_tiny stands in for a released name, served on loopback)."""
    from fssam2.module import FSSAM2Module

    module = FSSAM2Module("fssam2_tiny", lora=None, trainable="all", feature_cache=None)
    assert hub.cached_path("fssam2_tiny").is_file()
    assert torch.equal(module.model.sam2.no_mem_embed, tiny_sam2_state["no_mem_embed"])
    assert module.hparams["sam2_checkpoint"] == "fssam2_tiny"


def test_unset_weights_are_never_silently_random(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FSSAM2_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(hub.CHECKPOINT_URLS, "sam2.1_hiera_b+", "http://127.0.0.1:9/sam2.1_hiera_base_plus.pt")
    config = str(Path(__file__).parent / "configs" / "tiny.yaml")
    offline = ["test", "--config", config, "--model.sam2_config", "sam2.1_hiera_b+", "--model.sam2_checkpoint", "null"]
    with pytest.raises(SystemExit) as exit_:
        run_cli([*offline, f"--trainer.default_root_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "127.0.0.1:9/sam2.1_hiera_base_plus.pt" in err and "Traceback" not in err, err
    assert str(hub.cached_path("sam2.1_hiera_b+")) in err
    with pytest.raises(SystemExit) as exit_:
        run_cli(
            ["test", "--config", config, "--model.sam2_checkpoint", "null", f"--trainer.default_root_dir={tmp_path}"]
        )
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "has no released weights" in err and "sam2_checkpoint=random" in err, err
    run = tmp_path / "random"
    with pytest.warns(UserWarning, match="starts from random initialisation"):
        run_cli(["test", "--config", config, f"--trainer.default_root_dir={run}"])  # tiny.yaml asks for random
    assert json.loads((run / "test_metrics.json").read_text())["sam2_checkpoint"] == "random"
