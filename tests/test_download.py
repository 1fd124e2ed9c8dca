"""`fssam2 download` against a local HTTP server on 127.0.0.1 serving a generated checkpoint."""

import hashlib
import http.server
import json
import os
import threading
from pathlib import Path

import pytest
import torch

import fssam2
from fssam2 import InputError, build, build_sam2, hub, registry
from fssam2.build import resolve_config
from fssam2.cli import doctor, run_cli


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
    handler, url = server
    run_cli(["download", "fssam2_tiny"])
    final = hub.cached_path("fssam2_tiny")
    assert capsys.readouterr().out.strip().endswith(str(final))
    assert final.read_bytes() == handler.body and not final.with_name(final.name + ".part").exists()
    digest, source = final.with_name(final.name + ".sha256").read_text().splitlines()
    assert (
        digest == hub.sha256_of(final)
        and source == f"source: trusted on first use: the first complete download of {url}"
    )
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
    path = build.download("fssam2_tiny", progress=False)
    assert handler.ranges == ["bytes=1000-"] and path.read_bytes() == handler.body


def test_truncated_transfer_keeps_the_part_and_resumes(server):
    handler, _ = server
    handler.mode = "truncate"
    with pytest.raises(InputError, match="run the same command again to resume"):
        build.download("fssam2_tiny", progress=False)
    final = hub.cached_path("fssam2_tiny")
    assert not final.exists() and 0 < final.with_name(final.name + ".part").stat().st_size < len(handler.body)
    handler.mode = "ok"
    assert build.download("fssam2_tiny", progress=False).read_bytes() == handler.body


def test_wrong_checksum_is_discarded(server):
    with pytest.raises(InputError, match="expected 00ff.*was discarded"):
        build.download("fssam2_tiny", sha256="00ff", progress=False)
    final = hub.cached_path("fssam2_tiny")
    assert not final.exists() and not final.with_name(final.name + ".part").exists()


def test_server_error_and_offline(server, capsys):
    handler, url = server
    handler.mode = "error"
    with pytest.raises(SystemExit):
        run_cli(["download", "fssam2_tiny"])
    assert "the server answered 500" in capsys.readouterr().err
    with pytest.raises(InputError, match=r"Cannot reach http://127.0.0.1:9/x.pt .* put it at .*fssam2_tiny.pt"):
        build.download("fssam2_tiny", url="http://127.0.0.1:9/x.pt", progress=False)
    assert not hub.cached_path("fssam2_tiny").exists()


def test_a_file_of_another_model_is_refused(server, tmp_path):
    handler, _ = server
    torch.save({"model": {"not_sam2": torch.zeros(1)}}, tmp_path / "other.pt")
    handler.body = (tmp_path / "other.pt").read_bytes()
    with pytest.raises(InputError, match="is not a fssam2_tiny checkpoint and was discarded"):
        build.download("fssam2_tiny", progress=False)
    assert not hub.cached_path("fssam2_tiny").exists()


# Released names come from the Hugging Face Hub: a loopback server answers like the Hub for one repo.
REPO, FILE = "fssam2-tests/tiny", "fssam2_tiny.pt"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubHandler(http.server.BaseHTTPRequestHandler):
    """HEAD and GET on /{REPO}/resolve/main/{FILE} with the headers huggingface_hub reads: X-Repo-Commit,
    X-Linked-Etag (an LFS file's SHA-256), X-Linked-Size; no Xet headers, so plain HTTP is used."""

    body = b""  # what GET serves
    published = ""  # the SHA-256 that HEAD publishes
    commit = COMMIT  # the commit `main` resolves to
    mode = "ok"  # "ok", "error" (500), "truncate_once" (the first GET stops halfway)
    requests: list = []

    def do_HEAD(self):  # noqa: N802 - http.server's name
        HubHandler.requests.append(("HEAD", self.path, None))
        if self._refused():
            return
        self.send_response(200)
        self._hub_headers()
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()

    def do_GET(self):  # noqa: N802 - http.server's name
        header = self.headers.get("Range")
        HubHandler.requests.append(("GET", self.path, header))
        if self._refused():
            return
        start = int(header.split("=")[1].rstrip("-")) if header else 0
        self.send_response(206 if header else 200)
        if header:
            self.send_header("Content-Range", f"bytes {start}-{len(self.body) - 1}/{len(self.body)}")
        self._hub_headers()
        data = self.body[start:]
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.mode == "truncate_once":
            HubHandler.mode = "ok"
            data = data[: len(data) // 2]
        self.wfile.write(data)

    def _refused(self) -> bool:
        if self.mode == "error":
            self.send_error(500, "boom")
        elif self.path != f"/{REPO}/resolve/main/{FILE}":
            self.send_error(404)
        else:
            return False
        return True

    def _hub_headers(self):
        self.send_header("X-Repo-Commit", self.commit)
        self.send_header("ETag", '"3b18e512dba79e4c8300dd08aeb37f8e728b8dad"')  # the LFS pointer's git hash
        self.send_header("X-Linked-Etag", f'"{self.published}"')
        self.send_header("X-Linked-Size", str(len(self.body)))

    def log_message(self, *args):
        pass


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """huggingface_hub online, with its cache in tmp_path: no real cache is read or written."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "hf"


@pytest.fixture
def hub_server(server, hf_cache, monkeypatch):
    """fssam2_tiny published as REPO/FILE on a loopback Hub (HF_ENDPOINT), and at Meta's URL (`server`)."""
    handler, _ = server
    HubHandler.body, HubHandler.commit, HubHandler.mode, HubHandler.requests = handler.body, COMMIT, "ok", []
    HubHandler.published = hashlib.sha256(handler.body).hexdigest()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HubHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{httpd.server_port}")
    monkeypatch.setitem(hub.HUB_CHECKPOINTS, "fssam2_tiny", (REPO, FILE))
    yield HubHandler
    httpd.shutdown()
    httpd.server_close()


def record_of(final: Path) -> tuple[str, str]:
    digest, source = final.with_name(final.name + ".sha256").read_text().splitlines()
    return digest, source


def test_hub_ids_are_sam2s():
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

    assert hub.HUB_CHECKPOINTS.keys() == hub.CHECKPOINT_URLS.keys()
    for name, (repo, file) in hub.HUB_CHECKPOINTS.items():
        assert HF_MODEL_ID_TO_FILENAMES[repo] == (registry.PACKAGED_CONFIGS[name][1], file)  # v1 and 2.1 alike
        assert hub.CHECKPOINT_URLS[name].endswith(f"/{file}")


def test_hub_download_is_verified_against_the_published_sha256(hub_server, server, hf_cache, monkeypatch):
    path = build.download("fssam2_tiny", progress=False)
    final = hub.cached_path("fssam2_tiny")
    assert path == final and final.read_bytes() == hub_server.body
    assert [r[0] for r in hub_server.requests] == ["HEAD", "HEAD", "GET"] and server[0].ranges == []
    digest, source = record_of(final)
    assert digest == hub_server.published
    assert source == (
        f"source: the Hugging Face Hub's published SHA-256 of {REPO}/{FILE} at commit {COMMIT} "
        f"({os.environ['HF_ENDPOINT']})"
    )
    blob = hf_cache / "models--fssam2-tests--tiny" / "blobs" / hub_server.published
    assert os.path.samefile(blob, final)  # a hard link: one copy on disk
    assert sorted(p.name for p in final.parent.iterdir()) == ["fssam2_tiny.pt", "fssam2_tiny.pt.sha256"]
    assert hub.checkpoint_sha256("fssam2_tiny") == hub_server.published  # later loads check the record
    # Offline (HF_HUB_OFFLINE), the Hugging Face cache serves it, checked against the digest it was cached under.
    from huggingface_hub import constants

    final.unlink()
    final.with_name(final.name + ".sha256").unlink()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub_server.requests.clear()
    assert build.download("fssam2_tiny", progress=False).read_bytes() == hub_server.body
    assert hub_server.requests == [] and record_of(final) == (
        hub_server.published,
        f"source: the Hugging Face Hub's published SHA-256 of {REPO}/{FILE}, as cached",
    )


def test_a_hub_file_that_differs_from_its_published_sha256_is_refused(hub_server, server, hf_cache, tmp_path):
    torch.manual_seed(1)  # a loadable fssam2_tiny checkpoint, but not the one whose SHA-256 is published
    torch.save({"model": build_sam2("fssam2_tiny").state_dict()}, tmp_path / "other.pt")
    hub_server.body = (tmp_path / "other.pt").read_bytes()
    with pytest.raises(InputError) as err:
        build.download("fssam2_tiny", progress=False)
    message = str(err.value)
    assert "\n" not in message and f"{REPO}/{FILE}" in message
    assert f"SHA-256 {hub.sha256_of(tmp_path / 'other.pt')}, but the Hub publishes {hub_server.published}" in message
    final = hub.cached_path("fssam2_tiny")
    assert list(final.parent.iterdir()) == []  # nothing under the final name, no record, no temporary file
    assert not any((hf_cache / "models--fssam2-tests--tiny" / "blobs").iterdir())  # nor in the HF cache
    assert server[0].ranges == []  # a file that fails verification is no reason to trust Meta's instead


def test_a_hub_file_of_another_model_or_another_sha256_is_refused(hub_server, tmp_path):
    with pytest.raises(InputError, match=r"the --sha256 00ff you gave: check --sha256"):
        build.download("fssam2_tiny", sha256="00ff", progress=False)
    torch.save({"model": {"not_sam2": torch.zeros(1)}}, tmp_path / "other.pt")
    hub_server.body = (tmp_path / "other.pt").read_bytes()
    hub_server.published = hub.sha256_of(tmp_path / "other.pt")  # published and served alike, in a new commit
    hub_server.commit = "f" * 40
    with pytest.raises(InputError, match=rf"{REPO}/{FILE} is not a fssam2_tiny checkpoint: .*missing keys"):
        build.download("fssam2_tiny", progress=False)
    assert list(hub.cached_path("fssam2_tiny").parent.iterdir()) == []


@pytest.mark.parametrize("failure", ["closed port", "server error", "offline, not cached"])
def test_hub_unavailable_falls_back_to_metas_url(hub_server, server, monkeypatch, free_port, failure):
    handler, url = server
    endpoint = os.environ["HF_ENDPOINT"]
    if failure == "closed port":
        endpoint = f"http://127.0.0.1:{free_port}"
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
    elif failure == "server error":
        hub_server.mode = "error"
    else:
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    warning = (
        rf"Hub \({REPO}, {FILE} at {endpoint}\) is unavailable .*; fetching {url} instead, whose SHA-256 is trusted"
    )
    with pytest.warns(UserWarning, match=warning):
        path = build.download("fssam2_tiny", progress=False)
    assert path.read_bytes() == handler.body and handler.ranges == [None]
    assert record_of(path) == (
        hub.sha256_of(path),
        f"source: trusted on first use: the first complete download of {url}",
    )
    if failure == "offline, not cached":
        assert hub_server.requests == []


def test_hub_and_metas_url_both_unreachable(tmp_path, hf_cache, monkeypatch, free_port):
    monkeypatch.setenv("FSSAM2_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port}")
    url = f"http://127.0.0.1:{free_port}/tiny.pt"
    monkeypatch.setitem(hub.CHECKPOINT_URLS, "fssam2_tiny", url)
    monkeypatch.setitem(hub.HUB_CHECKPOINTS, "fssam2_tiny", (REPO, FILE))
    final = hub.cached_path("fssam2_tiny")
    with pytest.warns(UserWarning, match="trusted on first use"), pytest.raises(InputError) as err:
        build.download("fssam2_tiny", progress=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith("Cannot fetch fssam2_tiny: the Hugging Face Hub (")
    assert f"{REPO}, {FILE}" in message and f"and {url} (" in message
    assert message.endswith(f"are unreachable; put the file at {final} or set HF_ENDPOINT to a mirror.")
    assert not final.exists()


def test_an_interrupted_hub_download_resumes(hub_server, monkeypatch):
    """huggingface_hub resumes within the call, with a Range request from the last whole chunk it wrote
    (chunks of 10 MB, made small here); it keeps no partial file between calls (each download writes to
    a process-unique temporary file, removed when it fails)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)
    hub_server.mode = "truncate_once"
    path = build.download("fssam2_tiny", progress=False)
    first, second = [r[2] for r in hub_server.requests if r[0] == "GET"]
    resumed_at = int(second.removeprefix("bytes=").removesuffix("-"))
    assert first is None and 0 < resumed_at <= len(hub_server.body) // 2
    assert path.read_bytes() == hub_server.body and record_of(path)[0] == hub_server.published


def test_url_fetches_that_url_only(hub_server, server):
    handler, url = server
    path = build.download("fssam2_tiny", url=url, progress=False)
    assert path.read_bytes() == handler.body and hub_server.requests == []
    assert record_of(path)[1] == f"source: trusted on first use: the first complete download of {url}"


def test_unknown_name_and_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("FSSAM2_HOME", str(tmp_path))
    with pytest.raises(InputError, match="Unknown SAM2 model 'sam3'"):
        build.download("sam3")
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


@pytest.mark.parametrize(
    "name, command",
    [
        ("fssam2_tiny_pointers", REGENERATE),
        ("fssam2_tiny_varied", f"{REGENERATE} --pointer-weight 0"),
        ("fssam2_tiny_tracking", f"{REGENERATE} --world hue --prompt-weight 0 --pointer-weight 0 --steps 4000"),
    ],
)
def test_shipped_registry_entry(name, command):
    """The real entries: files of fssam2 itself, for fssam2_tiny, each with the command that made
    it; when the file is there, it must match the pinned digest (pin it after regenerating), else
    the load says how to make it."""
    entry = hub.PACKAGED_CHECKPOINTS[name]
    assert entry.package == "fssam2" and entry.config == "fssam2_tiny" and entry.regenerate == command
    path = hub.packaged_path(name)
    assert path.parent.name == "checkpoints" and path.parent.parent == Path(fssam2.__file__).parent
    if path.is_file():
        assert hub.sha256_of(path) == entry.sha256, f"pin the digest of {path} in fssam2.hub.PACKAGED_CHECKPOINTS"
        build_sam2("fssam2_tiny", name)
    else:
        with pytest.raises(InputError, match="is not in this install"):
            build_sam2("fssam2_tiny", name)


def test_a_released_config_loads_its_released_weights_downloading_when_needed(server, tiny_sam2_state):
    """model.sam2_checkpoint unset: the config's released weights, fetched on first use (here
    fssam2_tiny stands in for a released name, served on loopback)."""
    from fssam2.module import FSSAM2Module

    module = FSSAM2Module("fssam2_tiny", lora=None, trainable="all", feature_cache=None)
    assert hub.cached_path("fssam2_tiny").is_file()
    assert torch.equal(module.model.sam2.no_mem_embed, tiny_sam2_state["no_mem_embed"])
    assert module.hparams["sam2_checkpoint"] == "fssam2_tiny"


def test_unset_weights_are_never_silently_random(tmp_path, monkeypatch, capsys, hf_cache, free_port):
    monkeypatch.setenv("FSSAM2_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port}")  # the Hub unreachable too
    monkeypatch.setitem(hub.CHECKPOINT_URLS, "sam2.1_hiera_b+", "http://127.0.0.1:9/sam2.1_hiera_base_plus.pt")
    config = str(Path(__file__).parent / "configs" / "tiny.yaml")
    offline = ["test", "--config", config, "--model.sam2_config", "sam2.1_hiera_b+", "--model.sam2_checkpoint", "null"]
    with pytest.raises(SystemExit) as exit_:
        run_cli([*offline, f"--trainer.default_root_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "127.0.0.1:9/sam2.1_hiera_base_plus.pt" in err and "Traceback" not in err, err
    assert str(hub.cached_path("sam2.1_hiera_b+")) in err and "facebook/sam2.1-hiera-base-plus" in err
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


def test_one_resolver_names_the_base_weights_for_the_module_and_the_doctor():
    assert hub.base_weights("fssam2_tiny", "random") is None
    assert hub.base_weights("fssam2_tiny", "fssam2_tiny_varied") == "fssam2_tiny_varied"
    assert hub.base_weights("sam2.1_hiera_b+", None) == "sam2.1_hiera_b+"  # the released weights of its config
    with pytest.raises(InputError, match="has no released weights") as refused:
        hub.base_weights("fssam2_tiny", None)
    assert doctor.weights_check("fssam2_tiny", None) == doctor.Check("FAIL", "weights", str(refused.value))


def test_gf_sams_dinov2_is_fetched_once_by_name_verified_and_loaded(hub_server, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from fssam2.methods.dinov2 import SemanticEncoder, build_semantic_encoder, dinov2_vit

    torch.manual_seed(0)
    vit = dinov2_vit("dinov2_tiny")
    save_file(vit.state_dict(), str(tmp_path / "model.safetensors"))
    hub_server.body = (tmp_path / "model.safetensors").read_bytes()
    hub_server.published = hashlib.sha256(hub_server.body).hexdigest()
    monkeypatch.setitem(hub.ENCODER_CHECKPOINTS, "dinov2_tiny", (REPO, FILE))  # the loopback Hub serves FILE
    encoder = build_semantic_encoder("dinov2_tiny")  # unset weights: the released ones by name
    final = hub.cached_path("dinov2_tiny")
    assert final.name == "dinov2_tiny.safetensors" and final.read_bytes() == hub_server.body
    assert record_of(final)[0] == hub_server.published  # checked against the Hub's published SHA-256
    images = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(encoder(images), SemanticEncoder(vit)(images), rtol=0, atol=0)
    fetched = [r for r in hub_server.requests if r[0] == "GET"]
    build_semantic_encoder("dinov2_tiny")  # from the cache, verified against its record
    assert [r for r in hub_server.requests if r[0] == "GET"] == fetched == fetched[:1]
    final.write_bytes(final.read_bytes()[:-8] + b"tampered")
    with pytest.raises(InputError, match="has SHA-256"):
        build_semantic_encoder("dinov2_tiny")
