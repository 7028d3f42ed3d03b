"""docker-compose.yml, the Dockerfile and .env.example, checked without a Docker engine.

A real compose implementation parses, validates and interpolates the compose file:
`docker-compose config` (Debian's docker-compose 1.29, which scripts/setup.sh
installs; Docker Compose v2's output is read as well). The assertions run on what
it prints, so they see the file as Compose sees it, not as we meant it. Each run
uses a scratch project directory that links to the repository's files and holds
its own .env, made from .env.example: a developer's real .env is never read.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
TEMPLATE = REPO / "deploy" / "chroma-auth.conf.template"
TOKEN = "3f9c1a7e5b2d4c6e8f0a1b3c5d7e9f2a"
CORE = {"chroma", "chroma-auth", "app"}
OPTIONAL = {"vllm": "llm", "reranker": "reranker", "embedder": "embedder"}
LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(
                "CI needs Debian's docker-compose to validate docker-compose.yml "
                "(scripts/setup.sh installs it as root)"
            )
        pytest.skip("docker-compose is not installed (Debian package docker-compose)")
    return binary


def env_example(token: str | None) -> str:
    """.env.example as a user fills it in: the CHROMA_TOKEN line set (or left as shipped)."""
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    if token is None:
        return text
    filled, n = re.subn(r"(?m)^CHROMA_TOKEN=.*$", f"CHROMA_TOKEN={token}", text)
    assert n == 1, ".env.example must have exactly one CHROMA_TOKEN= line"
    return filled


def run_config(
    compose: str, tmp_path: Path, env_text: str, *profiles: str
) -> subprocess.CompletedProcess:
    project = Path(tempfile.mkdtemp(prefix="project-", dir=tmp_path))
    for name in ("docker-compose.yml", "Dockerfile", ".dockerignore", "deploy", "docs"):
        (project / name).symlink_to(REPO / name)
    (project / ".env").write_text(env_text, encoding="utf-8")
    args = [
        compose,
        "--project-directory",
        str(project),
        "-f",
        str(COMPOSE_FILE),
        "--env-file",
        str(project / ".env"),
    ]
    for profile in profiles:
        args += ["--profile", profile]
    # Only what the tool needs: no CHROMA_TOKEN, COMPOSE_* or DOCKER_* from the caller's shell.
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL") if k in os.environ}
    return subprocess.run(
        args + ["config"], capture_output=True, text=True, env=env, cwd=project, timeout=120
    )


def load_config(compose: str, tmp_path: Path, *profiles: str) -> dict:
    result = run_config(compose, tmp_path, env_example(TOKEN), *profiles)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture
def config(compose, tmp_path) -> dict:
    return load_config(compose, tmp_path)


@pytest.fixture
def config_all(compose, tmp_path) -> dict:
    return load_config(compose, tmp_path, *sorted(set(OPTIONAL.values())))


# --- normalising the two output formats (1.29: short strings; v2: long mappings) ---------------


def ports(service: dict) -> list[tuple[str, str, str]]:
    """(host_ip, published, target) for each published port."""
    out = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            out.append(
                (
                    str(entry.get("host_ip", "")),
                    str(entry.get("published", "")),
                    str(entry["target"]),
                )
            )
            continue
        spec = str(entry).split("/")[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            out.append(("", parts[0], parts[1]))
        else:
            out.append(("", "", parts[0]))
    return out


def mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) for each volume or bind mount."""
    out = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            out.append(
                (str(entry.get("source", "")), entry["target"], bool(entry.get("read_only", False)))
            )
            continue
        source, target, *mode = str(entry).split(":")
        out.append((source, target, "ro" in (mode[0].split(",") if mode else [])))
    return out


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def networks(service: dict) -> set[str]:
    return set(service.get("networks") or {"default": None})


# --- the compose file -------------------------------------------------------------------------


def test_core_services_run_without_profiles_and_the_model_servers_only_with_theirs(
    config, config_all
):
    services = config["services"]
    assert CORE <= set(services)
    for name in CORE:
        assert not services[name].get("profiles"), (
            f"{name} must start with a plain `docker compose up`"
        )
    # docker-compose 1.29 lists every service; v2 only the active ones
    for name in set(services) - CORE:
        assert name in OPTIONAL and services[name]["profiles"] == [OPTIONAL[name]]
    every = config_all["services"]
    assert set(every) == CORE | set(OPTIONAL)
    for name, profile in OPTIONAL.items():
        assert every[name]["profiles"] == [profile]


def test_chroma_is_reached_only_through_the_token_proxy(config_all):
    services = config_all["services"]
    chroma, proxy = services["chroma"], services["chroma-auth"]
    assert ports(chroma) == [], "Chroma enforces no auth itself: it must not be published"
    assert networks(chroma) == {"chroma"}
    assert config_all["networks"]["chroma"].get("internal") is True
    assert "chroma" in networks(proxy)
    others = set(services) - {"chroma", "chroma-auth"}
    for name in others:
        assert "chroma" not in networks(services[name]), (
            f"{name} must not sit on Chroma's internal network"
        )
        assert services[name].get("network_mode") is None
    env = environment(proxy)
    assert env["CHROMA_TOKEN"] == TOKEN
    assert env["CHROMA_UPSTREAM"] == "chroma:8000"
    assert env["CHROMA_PROXY_PORT"] == "8000"


def test_the_mounted_nginx_template_is_the_tested_one(config):
    proxy = config["services"]["chroma-auth"]
    ((source, target, read_only),) = [
        m for m in mounts(proxy) if m[1].startswith("/etc/nginx/templates/")
    ]
    assert Path(source).resolve() == TEMPLATE.resolve()
    assert target == "/etc/nginx/templates/chroma-auth.conf.template" and read_only
    assert proxy["image"].startswith("nginx:")
    # every ${VAR} of the template is set, and the image's envsubst touches only those
    wanted = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", TEMPLATE.read_text(encoding="utf-8")))
    assert wanted == {"CHROMA_TOKEN", "CHROMA_UPSTREAM", "CHROMA_PROXY_PORT"}
    env = environment(proxy)
    assert wanted <= set(env)
    assert all(re.match(env["NGINX_ENVSUBST_FILTER"], name) for name in wanted)


def test_only_loopback_is_published(config_all):
    services = config_all["services"]
    app_ports = ports(services["app"])
    assert app_ports == [(LOOPBACK, "8501", "8501")]
    for name, service in services.items():
        for host_ip, _, _ in ports(service):
            assert host_ip == LOOPBACK, f"{name} publishes on {host_ip or 'all interfaces'}"
    for name in OPTIONAL:
        assert ports(services[name]) == [], f"{name} is reached over the compose network only"


def test_the_app_talks_to_chroma_through_the_proxy_with_the_token(config):
    app = config["services"]["app"]
    env = environment(app)
    assert env["RAG_STORE__MODE"] == "server"
    assert env["RAG_STORE__HOST"] == "chroma-auth"
    assert env["RAG_STORE__PORT"] == "8000"
    assert env["CHROMA_TOKEN"] == TOKEN
    assert "chroma-auth" in app["depends_on"]


def test_data_models_and_uploads_live_on_named_volumes(config_all):
    services = config_all["services"]
    named = set(config_all["volumes"])
    assert {"chroma-data", "models", "uploads"} <= named
    assert ("chroma-data", "/data", False) in mounts(services["chroma"])  # the image's persist_path
    app = {target: (source, ro) for source, target, ro in mounts(services["app"])}
    assert app["/home/app/.cache"] == ("models", False)
    assert app["/app/uploads"] == ("uploads", False)
    assert app["/docs"][1] is True, "the documents folder is mounted read-only"
    for name in OPTIONAL:  # model servers cache their downloads on named volumes too
        assert any(source in named for source, _, _ in mounts(services[name]))


def test_images_are_pinned_and_chroma_matches_the_client(config_all):
    services = config_all["services"]
    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        assert "@sha256:" in image or ":" in image.rsplit("/", 1)[-1], f"{name}: {image} has no tag"
        tag = image.rsplit("/", 1)[-1].split(":", 1)[-1]
        assert tag != "latest" and not tag.endswith("-latest"), f"{name}: {image} is not pinned"
    deps = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "dependencies"
    ]
    client = next(d.split("==")[1] for d in deps if d.startswith("chromadb=="))
    assert services["chroma"]["image"] == f"chromadb/chroma:{client}"


def test_the_app_is_built_from_the_dockerfile(config):
    app = config["services"]["app"]
    build = app["build"] if isinstance(app["build"], dict) else {"context": app["build"]}
    assert (Path(build["context"]) / build.get("dockerfile", "Dockerfile")).is_file()
    env = environment(app)
    assert not any(
        name.startswith("RAG_") and "__" not in name and name != "RAG_CONFIG" for name in env
    )


def test_compose_refuses_to_start_without_a_token(compose, tmp_path):
    # .env.example as shipped: token empty
    result = run_config(compose, tmp_path, env_example(None))
    assert result.returncode != 0
    assert "CHROMA_TOKEN" in result.stderr


# --- the Dockerfile and the env files ------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)  # line continuations
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_the_image_runs_as_a_non_root_user():
    users = [rest for word, rest in dockerfile_instructions() if word == "USER"]
    assert users, "the Dockerfile must switch to a non-root user"
    user = users[-1].split(":")[0]
    assert user.isdigit(), "a numeric uid lets Kubernetes' runAsNonRoot check it"
    assert int(user) >= 1000


def test_the_image_serves_streamlit_on_all_interfaces_with_a_health_check():
    instructions = dockerfile_instructions()
    base = next(rest for word, rest in instructions if word == "FROM")
    assert re.fullmatch(r"python:3\.12\.\d+-slim(-\w+)?", base), base
    assert ("EXPOSE", "8501") in instructions
    healthcheck = next(rest for word, rest in instructions if word == "HEALTHCHECK")
    assert "/_stcore/health" in healthcheck
    cmd = next(rest for word, rest in reversed(instructions) if word == "CMD")
    assert "ui/app.py" in cmd and "--server.address=0.0.0.0" in cmd
    env = " ".join(rest for word, rest in instructions if word == "ENV")
    assert "HF_HOME=/home/app/.cache/" in env  # on the `models` volume


def test_secrets_and_local_state_stay_out_of_git_and_the_image():
    ignored = {
        line.strip() for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    }
    assert {".env", ".venv/", ".chroma/", "uploads/", "runs/", ".git/"} <= ignored
    assert ".env" in (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()


def test_env_example_names_only_valid_overrides():
    """The app refuses RAG_* variables that are not RAG_<SECTION>__<KEY>; .env reaches it whole."""
    from rag.config import Settings

    text = (REPO / ".env.example").read_text(encoding="utf-8")
    names = set(re.findall(r"(?m)^#?\s*(RAG_[A-Z0-9_]+)=", text))
    assert {"RAG_LLM__BASE_URL", "RAG_RERANKER__URL", "RAG_RERANKER__KIND"} <= names
    for name in names - {"RAG_CONFIG"}:
        section, sep, key = name[len("RAG_") :].lower().partition("__")
        assert sep and key and section in Settings.model_fields, name
        assert key in Settings.model_fields[section].annotation.model_fields, (
            f"{name}: no key {section}.{key}"
        )
    compose_vars = set(
        re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_FILE.read_text(encoding="utf-8"))
    )
    assert not {v for v in compose_vars if v.startswith("RAG_")}, (
        "compose-only variables must not be RAG_*"
    )
    # KEY=value lines only: docker-compose 1.29 keeps a trailing "# ..." in the value
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*=[^#\s]*", line), line
