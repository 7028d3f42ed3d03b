"""Real servers for the server-mode tests: `chroma run` and the nginx token proxy of
docker-compose.yml.

``ChromaServer`` runs the Chroma server that the pip package ships on a free
localhost port, with its data in a folder the test owns; it can be stopped and
started again on the same port and folder (the "Chroma restarted" case).
``TokenProxy`` runs Debian's nginx with ``deploy/chroma-auth.conf.template``,
rendered the way the official nginx image renders it (only the named
variables are substituted), so the tests exercise the same token check as the
compose deployment.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "deploy" / "chroma-auth.conf.template"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {proc.returncode} before listening on port {port}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:g}s")


class ChromaServer:
    """`chroma run --path DATA --port PORT` on 127.0.0.1; stop() and start() keep the port and
    the data.
    """

    def __init__(self, data: Path, port: int | None = None) -> None:
        self.data = data
        self.port = port if port is not None else free_port()
        self.proc: subprocess.Popen | None = None
        self.log = data.parent / f"{data.name}-chroma.log"

    def start(self) -> ChromaServer:
        chroma = Path(sys.executable).with_name("chroma")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(chroma),
                    "run",
                    "--path",
                    str(self.data),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, self.proc, "chroma run")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None
    )


def render_template(text: str, values: dict[str, str]) -> str:
    """envsubst with a variable list, as the nginx image does: only ${NAME} for the given names
    changes.
    """
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    return text


class TokenProxy:
    """nginx with the compose deployment's token check, in front of ``upstream_port``."""

    def __init__(self, folder: Path, upstream_port: int, token: str) -> None:
        self.folder = folder
        self.port = free_port()
        self.upstream_port = upstream_port
        self.token = token
        self.proc: subprocess.Popen | None = None

    def start(self) -> TokenProxy:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError(
                "nginx is not installed (scripts/setup.sh installs Debian's nginx-light as root)"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        site = render_template(
            TEMPLATE.read_text(encoding="utf-8"),
            {
                "CHROMA_TOKEN": self.token,
                "CHROMA_UPSTREAM": f"127.0.0.1:{self.upstream_port}",
                "CHROMA_PROXY_PORT": f"127.0.0.1:{self.port}",
            },
        )
        (self.folder / "site.conf").write_text(site, encoding="utf-8")
        tmp = self.folder / "tmp"
        tmp.mkdir(exist_ok=True)
        main = f"""
daemon off;
worker_processes 1;
pid {self.folder / "nginx.pid"};
error_log {self.folder / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {self.folder / "site.conf"};
}}
"""
        (self.folder / "nginx.conf").write_text(main, encoding="utf-8")
        self.proc = subprocess.Popen(
            [binary, "-p", str(self.folder), "-c", str(self.folder / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "stderr.log", "ab"),
            env={**os.environ},
        )
        wait_for_port(self.port, self.proc, "nginx")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None


ENGINES_HOME = Path(
    os.environ.get("ENGINES_HOME", Path.home() / ".cache" / "rag-rerank" / "engines")
)


def stop_process(proc: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL after 30 s; nothing when it is not running."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_prefetch: subprocess.Popen | None = None


def prefetch_engines(names: list[str]) -> None:
    """Start building the engines' venvs in the background, at the lowest CPU priority, so that a
    fresh clone's first run compiles them while the other tests run (the build mostly fills the
    CPU time the tests leave idle). scripts/engines.sh holds a lock per engine, so
    :func:`engine_venv` (or a bench a test starts) waits for the build of the engine it needs,
    not for the others. Venvs already built return at once.
    The output goes to ENGINES_HOME/build.log."""
    global _prefetch
    if _prefetch is not None or not names:
        return
    script = REPO / "scripts" / "engines.sh"
    ENGINES_HOME.mkdir(parents=True, exist_ok=True)
    with open(ENGINES_HOME / "build.log", "ab") as out:
        _prefetch = subprocess.Popen(
            ["nice", "-n", "19", "bash", str(script), *names],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ENGINES_HOME": str(ENGINES_HOME)},
            start_new_session=True,
        )


def stop_prefetch() -> None:
    """End a background build still running when the tests end (a half-built venv has no stamp,
    so the next run builds it again)."""
    global _prefetch
    if _prefetch is not None and _prefetch.poll() is None:
        os.killpg(_prefetch.pid, signal.SIGTERM)
        _prefetch.wait()
    _prefetch = None


def engine_venv(name: str) -> Path:
    """The engine's virtual environment, built by scripts/engines.sh when missing or stale (a run
    from a fresh clone builds it once: in the background from the start of the run, see
    :func:`prefetch_engines`; this waits for that build)."""
    subprocess.run(
        ["bash", str(REPO / "scripts" / "engines.sh"), name],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "ENGINES_HOME": str(ENGINES_HOME)},
    )
    return ENGINES_HOME / name


class InfinityServer:
    """Infinity (infinity-emb) serving local model folders on 127.0.0.1, each under the name
    given (``{served name: folder}``), on the CPU with torch; offline."""

    def __init__(
        self, models: dict[str, str], log: Path, batch_size: int = 32, threads: int = 1
    ) -> None:
        """``threads``: torch threads of the server (0: its default, all cores); one in the tests,
        which run models of their own beside it."""
        self.threads = threads
        self.models = models
        self.log = log
        self.batch_size = batch_size
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> InfinityServer:
        venv = engine_venv("infinity")
        args = [str(venv / "bin" / "infinity_emb"), "v2"]
        for name, folder in self.models.items():
            args += ["--model-id", folder, "--served-model-name", name]
            args += ["--batch-size", str(self.batch_size)]
            args += ["--engine", "torch", "--device", "cpu", "--no-bettertransformer"]
        args += ["--no-model-warmup", "--host", "127.0.0.1", "--port", str(self.port)]
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "DO_NOT_TRACK": "1",
            "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        }
        if self.threads > 0:
            env["OMP_NUM_THREADS"] = str(self.threads)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for_port(self.port, self.proc, "infinity_emb", timeout=120)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 120.0) -> None:
        """Listening is not serving: wait until /models lists every model."""
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                listed = httpx.get(f"{self.url}/models", timeout=2).json()
                if {m["id"] for m in listed.get("data", [])} >= set(self.models):
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"infinity_emb did not serve {sorted(self.models)} within {timeout:g}s")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


class RayCluster:
    """A one-node Ray cluster (`ray start --head`) on 127.0.0.1, its files in a short temporary
    folder; ``address`` is what `python -m ingest --ray` takes."""

    def __init__(self, cpus: int = 2) -> None:
        import tempfile

        self.cpus = cpus
        self.port = free_port()
        # Ray's Unix sockets live under the temp dir: keep its path short
        self.folder = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        self.env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
        }

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        ray = Path(sys.executable).with_name("ray")
        return subprocess.run(
            [str(ray), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start(self) -> RayCluster:
        done = self._ray(
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={self.port}",
            f"--num-cpus={self.cpus}",
            "--num-gpus=0",
            "--include-dashboard=false",
            "--object-store-memory=400000000",
            f"--temp-dir={self.folder}",
            "--disable-usage-stats",
        )
        if done.returncode != 0:
            raise RuntimeError(f"ray start failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        return self

    def stop(self) -> None:
        self._ray("stop", "--force", timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


class LlamaServer:
    """llama.cpp's OpenAI-compatible server (llama-cpp-python[server], in its own venv) on
    127.0.0.1, serving one GGUF file under ``alias``; ``api_key`` makes it check a bearer key."""

    def __init__(
        self,
        gguf: Path,
        log: Path,
        *,
        alias: str = "gemma-3-270m",
        api_key: str | None = None,
        n_ctx: int = 4096,
        threads: int = 1,
        port: int | None = None,
    ) -> None:
        """``threads``: llama.cpp's threads (one in the tests, which run models of their own)."""
        self.gguf = gguf
        self.log = log
        self.alias = alias
        self.api_key = api_key
        self.n_ctx = n_ctx
        self.threads = threads
        self.port = port if port is not None else free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes."""
        return f"http://127.0.0.1:{self.port}/v1"

    def launch(self) -> LlamaServer:
        """Start the process and return at once (see :meth:`wait_ready`)."""
        venv = engine_venv("llama")
        args = [str(venv / "bin" / "python"), "-m", "llama_cpp.server"]
        args += ["--model", str(self.gguf), "--model_alias", self.alias]
        args += ["--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads)]
        args += ["--n_threads_batch", str(self.threads), "--chat_format", "gemma"]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--verbose", "false"]
        if self.api_key is not None:
            args += ["--api_key", self.api_key]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 120.0) -> LlamaServer:
        assert self.proc is not None
        wait_for_port(self.port, self.proc, "llama_cpp.server", timeout=timeout)
        return self

    def start(self) -> LlamaServer:
        return self.launch().wait_ready()

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
