"""The deploy command: its plan, what it asks the Hub for (against a fake Hub), its one-sentence errors, and a
start-up from exactly the files it would upload."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from playground import deploy

ROOT = Path(__file__).resolve().parent.parent


def test_the_plan_holds_what_the_app_reads_and_nothing_else():
    p = deploy.plan("cpu-basic")
    paths = set(p.files) | set(p.written)
    assert {"app.py", "playground/engine.py", "playground/ui/prompt.py", "playground/deploy.py",
            "assets/offline-model/unet/diffusion_pytorch_model.safetensors", "assets/offline-model/model_index.json",
            "assets/offline-mmdit/transformer/config.json", "assets/configs/families.json",
            "README.md", "requirements.txt"} <= paths
    for path in paths:
        assert not path.startswith(("tests/", "benchmarks/", "docs/", ".ci/", ".git/", "playground/tiny/")), path
        assert "__pycache__" not in path and not path.endswith(".pyc"), path
    assert p.written["requirements.txt"] == (ROOT / "requirements-space.txt").read_bytes()
    assert p.total_bytes == sum(f.stat().st_size for f in p.files.values()) + sum(map(len, p.written.values()))


def test_dry_run_prints_every_file_and_the_total_and_touches_no_hub(monkeypatch):
    def no_hub(*args, **kwargs):
        raise AssertionError("a dry run must not reach the Hub")
    monkeypatch.setattr("huggingface_hub.HfApi", no_hub)
    said: list[str] = []
    assert deploy.main(["me/playground", "--hardware", "zerogpu", "--dry-run"], api_factory=no_hub,
                       say=said.append) == 0
    p = deploy.plan("zerogpu")
    for path in p.files:
        assert any(line.endswith(f"  {path}") for line in said), path
    assert any(line.endswith("README.md (written for zerogpu)") for line in said)
    assert f"{len(p.files) + len(p.written)} files, {p.total_bytes / 1e6:.1f} MB" in said
    assert "hardware: zero-a10g" in "\n".join(said) and "variable: PLAYGROUND_VARIANT=fp16" in said


@pytest.mark.parametrize("name", list(deploy.HARDWARE))
def test_each_hardware_fetches_only_what_it_loads_in_the_dtype_it_loads(name):
    hw = deploy.HARDWARE[name]
    readme = deploy.plan(name).written["README.md"].decode()
    front = yaml.safe_load(readme.split("---\n")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and front["python_version"] == hw.python
    preload = front["preload_from_hub"]
    assert preload == hw.preload()
    assert any(line.startswith("lllyasviel/Annotators ") for line in preload)  # the Space's pose detector
    fetched = " ".join(preload)
    if hw.gpu:  # SD 1.5 and both ControlNets, their fp16 files only, loaded as fp16 (PLAYGROUND_VARIANT)
        assert "stable-diffusion-v1-5/stable-diffusion-v1-5 " in fetched and fetched.count(".fp16.safetensors") == 6
        assert "unet/diffusion_pytorch_model.safetensors" not in fetched and hw.variables["PLAYGROUND_VARIANT"] == "fp16"
    else:  # the bundled models are in the upload: only the detector is fetched
        assert len(preload) == 1 and "PLAYGROUND_VARIANT" not in hw.variables
    assert deploy.HARDWARE["zerogpu"].python == "3.12" and hw.variables["MAX_STEPS"] == "50"


def test_the_readmes_front_matter_is_the_one_the_deploy_writes_for_a_t4():
    """For those who push with git: this repository's README configures a T4 Space as the deploy would."""
    import gradio

    ours = (ROOT / "README.md").read_text().split("---\n")[1]
    assert ours == deploy.space_readme(deploy.HARDWARE["t4-small"], gradio.__version__).split("---\n")[1]


class FakeHub:
    """HfApi's calls the deploy makes, recorded; `fail` maps a method name to the exception it raises."""

    def __init__(self, user="me", orgs=(), existing=(), fail=None, stage="RUNNING"):
        self.user, self.orgs, self.existing, self.fail, self.stage = user, orgs, list(existing), fail or {}, stage
        self.calls: list[tuple[str, tuple, dict]] = []
        self.token = None

    def _call(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))
        if name in self.fail:
            raise self.fail[name]

    def whoami(self):
        self._call("whoami")
        return {"name": self.user, "orgs": [{"name": o} for o in self.orgs]}

    def create_repo(self, *args, **kwargs):
        self._call("create_repo", *args, **kwargs)

    def request_space_hardware(self, *args, **kwargs):
        self._call("request_space_hardware", *args, **kwargs)

    def add_space_variable(self, *args, **kwargs):
        self._call("add_space_variable", *args, **kwargs)

    def list_repo_files(self, *args, **kwargs):
        self._call("list_repo_files", *args, **kwargs)
        return self.existing

    def create_commit(self, *args, **kwargs):
        self._call("create_commit", *args, **kwargs)

    def wait_for_space(self, *args, **kwargs):
        self._call("wait_for_space", *args, **kwargs)
        return type("Runtime", (), {"stage": self.stage})()

    def fetch_space_logs(self, *args, **kwargs):
        self._call("fetch_space_logs", *args, **kwargs)
        return iter(["Collecting torch==2.14.1\n", "ERROR: No matching distribution found for torch==2.14.1\n",
                     "\n"])

    def named(self, name):
        return [c for c in self.calls if c[0] == name]


def test_the_upload_creates_the_space_sets_it_up_and_sends_the_plan_in_one_commit():
    hub = FakeHub(existing=[".gitattributes", "README.md", "old_module.py"])
    said: list[str] = []
    assert deploy.main(["me/playground", "--hardware", "t4-small", "--no-wait"], api_factory=lambda: hub,
                       say=said.append) == 0
    (_, args, kwargs), = hub.named("create_repo")
    assert args == ("me/playground",) and kwargs["repo_type"] == "space" and kwargs["space_sdk"] == "gradio"
    assert kwargs["space_hardware"] == "t4-small" and kwargs["exist_ok"] is True
    assert hub.named("request_space_hardware")[0][1] == ("me/playground", "t4-small")
    assert {c[1][1]: c[1][2] for c in hub.named("add_space_variable")} == deploy.HARDWARE["t4-small"].variables
    (_, _, commit), = hub.named("create_commit")
    p = deploy.plan("t4-small")
    added = {op.path_in_repo for op in commit["operations"] if type(op).__name__ == "CommitOperationAdd"}
    deleted = {op.path_in_repo for op in commit["operations"] if type(op).__name__ == "CommitOperationDelete"}
    assert added == set(p.files) | set(p.written) and deleted == {"old_module.py"}
    assert not hub.named("wait_for_space") and said[-1] == "uploaded: https://huggingface.co/spaces/me/playground"


def errors_of(capsys, hub, space="me/playground"):
    rc = deploy.main([space, "--hardware", "cpu-basic"], api_factory=lambda: hub, say=lambda line: None)
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("deploy: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def http_error(status):
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(f"{status} Client Error", response=httpx.Response(status, request=request))


def test_each_failure_is_one_sentence(capsys):
    from huggingface_hub.errors import LocalTokenNotFoundError

    assert "no Hugging Face token" in errors_of(capsys, FakeHub(fail={"whoami": LocalTokenNotFoundError("none")}))
    err = errors_of(capsys, FakeHub(user="me", orgs=["my-lab"]), space="someone/playground")
    assert "someone/playground belongs to someone" in err and "write under: me, my-lab" in err
    hub = FakeHub(fail={"create_repo": http_error(403)})
    assert "cannot be written as me (HTTP 403)" in errors_of(capsys, hub)
    assert "refused the token (401)" in errors_of(capsys, FakeHub(fail={"whoami": http_error(401)}))
    offline = FakeHub(fail={"whoami": httpx.ConnectError("[Errno -3] Temporary failure in name resolution")})
    assert "could not be reached (ConnectError" in errors_of(capsys, offline)
    assert not offline.named("create_repo")


def test_a_space_that_does_not_come_up_names_the_failing_line_of_its_log(capsys):
    hub = FakeHub(stage="BUILD_ERROR")
    err = errors_of(capsys, hub)
    assert "me/playground is BUILD_ERROR; the build log says: ERROR: No matching distribution found" in err
    assert hub.named("fetch_space_logs")[0][2]["build"] is True


@pytest.mark.slow
def test_the_snapshot_alone_starts_the_app_and_generate_answers(tmp_path):
    """The files the deploy would upload, copied alone into an empty folder, start the app there (no training
    code, no tests), and the deploy's own smoke call gets an image from /generate on the bundled model."""
    from conftest import free_port

    p = deploy.plan("cpu-basic")
    for path, src in p.files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tmp_path / path)
    for path, content in p.written.items():
        (tmp_path / path).write_bytes(content)
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "HOME": str(tmp_path),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=tmp_path, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/gradio_api/info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert deploy.smoke(f"http://127.0.0.1:{port}/") == "/generate answered: 1 image(s), seed 1"
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert not (tmp_path / "playground" / "tiny").exists() and not (tmp_path / "tests").exists()
    assert "Traceback" not in log.read_text()
