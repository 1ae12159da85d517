"""Remote inputs against real servers on 127.0.0.1: URLs in input.warc and Common Crawl file lists,
served over HTTP (python3 -m http.server) and S3 (moto in server mode), downloaded by Snakemake's
storage plugins. The data DAG run from each equals a run on the same files on disk; a missing
URL or a dropped connection stops the run naming the URL and leaves no shard that looks complete.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from llmpipe import layout
from llmpipe.config import ConfigError, load_config, validate_config

from .conftest import REPO, SMALL_WEB, WorkflowCopy

pytest.importorskip("snakemake_storage_plugin_http", reason="pip install -e '.[test]' (the remote extra)")
pytest.importorskip("snakemake_storage_plugin_s3", reason="pip install -e '.[test]' (the remote extra)")

CRAWL = "CC-MAIN-2099-01"  # a made-up crawl: crawl-data/<CRAWL>/{warc.paths.gz, segments/...}
SHARDS = [f"toyweb-{i:03d}" for i in range(SMALL_WEB["files"])]
RELATIVE = [f"crawl-data/{CRAWL}/segments/17000000{i}.{i}/warc/{shard}.warc.gz" for i, shard in enumerate(SHARDS)]
PATHS_LIST = f"crawl-data/{CRAWL}/warc.paths.gz"
BUCKET = "crawl"
DATA = {"dedup": {"bands": 2}}  # the data DAG with fewer dedup band jobs, in every run compared
TARGETS = [layout.split_file("results", split, shard) for split in layout.SPLITS for shard in SHARDS]
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@pytest.fixture(scope="module")
def crawl(tmp_path_factory) -> Path:
    """A small toy web laid out like Common Crawl: crawl-data/<CRAWL>/segments/.../warc/*.warc.gz
    and crawl-data/<CRAWL>/warc.paths.gz listing them, relative to the returned root."""
    root = tmp_path_factory.mktemp("crawl")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["toyweb"].update(SMALL_WEB)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    warcs = [root / rel for rel in RELATIVE]
    for warc in warcs:
        warc.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "llmpipe.cli", "toyweb", "--config", str(root / "config.yaml"),
         "--warc", *map(str, warcs), "--truth", str(root / "truth.parquet"), "--stats", str(root / "stats.json")],
        check=True, capture_output=True, timeout=300,
    )
    (root / PATHS_LIST).write_bytes(gzip.compress("".join(f"{rel}\n" for rel in RELATIVE).encode()))
    return root


@pytest.fixture(scope="module")
def http_server(crawl, tmp_path_factory):
    """`python3 -m http.server` serving the crawl; yields (base URL, its request log)."""
    port = free_port()
    log = tmp_path_factory.mktemp("http") / "requests.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(crawl)],
            stdout=fh, stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/", log
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class HalfThenHangUp(SimpleHTTPRequestHandler):
    """Answers HEAD in full but sends half of each file's bytes to a GET, then closes the connection."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, *args):
        pass


class SlowDownOnGet(SimpleHTTPRequestHandler):
    """Answers HEAD in full but a GET with "503 Slow Down" (what a busy Common Crawl answers)."""

    def do_GET(self):
        body = b"<html><body><h1>503 Slow Down</h1></body></html>"
        self.send_response(503)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(handler_class, directory: Path):
    handler = lambda *args, **kwargs: handler_class(*args, directory=str(directory), **kwargs)  # noqa: E731
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def dropping_server(crawl):
    """An HTTP server that drops every download half way (HalfThenHangUp); yields its base URL."""
    yield from serve(HalfThenHangUp, crawl)


@pytest.fixture(scope="module")
def slow_down_server(crawl):
    """An HTTP server whose every download answers 503 (SlowDownOnGet); yields its base URL."""
    yield from serve(SlowDownOnGet, crawl)


@pytest.fixture(scope="module")
def s3_server(crawl):
    """moto's S3 server holding the crawl in bucket `crawl` (same keys); yields its endpoint URL."""
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server", reason="pip install 'moto[server]'")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=BUCKET, ACL="public-read")  # a public bucket, like Common Crawl's
        for rel in [*RELATIVE, PATHS_LIST]:
            client.upload_file(str(crawl / rel), BUCKET, rel, ExtraArgs={"ACL": "public-read"})
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Fake credentials for moto, no ~/.aws, no instance-metadata lookups (Snakemake inherits these)."""
    for key in list(os.environ):
        if key.startswith(("AWS_", "SNAKEMAKE_STORAGE_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for key, value in FAKE_AWS.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def data_copy(root: Path, **input_section) -> WorkflowCopy:
    root.mkdir(parents=True, exist_ok=True)
    copy = WorkflowCopy(root)
    config = copy.config()
    config.update(DATA)
    config["input"] = input_section
    copy.set_config(config)
    return copy


def planned_shards(copy: WorkflowCopy, *args: str) -> list[str]:
    """The shards a dry run of the ingest step plans, sorted."""
    proc = copy.snakemake("-n", *args)
    out = proc.stdout + proc.stderr
    return sorted(set(re.findall(r"wildcards: shard=([A-Za-z0-9_-]+)", out)))


def output_of(proc) -> str:
    return proc.stdout + proc.stderr


def assert_same_tables(run: Path, baseline: Path) -> None:
    import pyarrow.parquet as pq

    for target in [*TARGETS, layout.clusters_file("results")]:
        ours, theirs = pq.read_table(run / target), pq.read_table(baseline / target)
        assert ours.num_rows > 0 or "test" in target or "val" in target, target
        assert ours.equals(theirs), f"{target} differs from the run on local files"


@pytest.fixture(scope="module")
def baseline(crawl, tmp_path_factory) -> Path:
    """The data DAG (to the split) on the crawl's files read from disk (source: warc, a glob)."""
    copy = data_copy(tmp_path_factory.mktemp("local"), source="warc",
                     warc=[str(crawl / f"crawl-data/{CRAWL}/segments/*/warc/*.warc.gz")])
    copy.snakemake(*TARGETS, timeout=900)
    return copy.root


# --- the config: what the schema rejects before any job ------------------------------------------


@pytest.mark.parametrize(
    "input_section, message",
    [
        ({"source": "commoncrawl"}, "input.commoncrawl': 'crawl' is a required property"),
        ({"source": "commoncrawl", "commoncrawl": {"crawl": "CC-MAIN-2024-33", "paths": "x.gz"}},
         "should not be valid under {'required': ['crawl', 'paths']}"),
        ({"source": "commoncrawl", "commoncrawl": {"crawl": "2024-33"}}, "input.commoncrawl.crawl"),
        ({"source": "commoncrawl", "commoncrawl": {"crawl": "CC-MAIN-2024-33", "limit": 0}}, "minimum of 1"),
        ({"source": "warc", "warc": []}, "input.warc': [] should be non-empty"),
        ({"source": "warc", "warc": ["x.warc.gz"], "s3": {"anonymus": True}}, "anonymus"),
    ],
)
def test_schema_rejects_bad_input(input_section, message):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["input"] = input_section
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(config)


def test_snakemake_rejects_a_commoncrawl_source_without_a_list_before_any_job(workflow_copy):
    workflow_copy.update("input", source="commoncrawl")
    proc = workflow_copy.snakemake("-n", check=False)
    assert proc.returncode != 0
    assert "'crawl' is a required property" in output_of(proc)
    assert "Job stats" not in output_of(proc)


def test_default_config_fills_the_input_defaults():
    config = load_config(REPO / "config.yaml")
    assert config["input"]["commoncrawl"] == {
        "base_url": "https://data.commoncrawl.org/", "limit": None, "sample": False, "seed": 0,
    }
    assert config["input"]["s3"] == {"endpoint_url": None, "region": None, "anonymous": False}


def test_a_local_run_needs_no_storage_plugin(workflow_copy, http_server):
    """With the storage plugins hidden from Snakemake, the default (toy web) run plans as before;
    an input URL then stops the run naming the plugin to install."""
    hide_plugins = (
        "import pkgutil, runpy, sys\n"
        "_iter = pkgutil.iter_modules\n"
        "pkgutil.iter_modules = lambda *a, **k: (m for m in _iter(*a, **k)"
        " if not m.name.startswith('snakemake_storage_plugin_'))\n"
        "sys.argv = ['snakemake', *sys.argv[1:]]\n"
        "runpy.run_module('snakemake', run_name='__main__', alter_sys=True)\n"
    )

    def dry_run():
        return subprocess.run([sys.executable, "-c", hide_plugins, "--cores", "1", "-n"], cwd=workflow_copy.root,
                              capture_output=True, text=True, timeout=300)

    proc = dry_run()
    assert proc.returncode == 0, output_of(proc)[-3000:]
    assert "Job stats" in output_of(proc)

    base, _ = http_server
    workflow_copy.update("input", source="warc", warc=[f"{base}{RELATIVE[0]}"])
    proc = dry_run()
    assert proc.returncode != 0
    assert "snakemake-storage-plugin-http, which is not installed" in output_of(proc)
    assert "llmpipe[remote]" in output_of(proc)


def test_url_shards_are_named_after_the_file_and_hashed_when_two_collide(tmp_path, http_server, crawl):
    base, _ = http_server
    # the same file under a second name: .../other/toyweb-000.warc.gz collides with RELATIVE[0]
    other = f"crawl-data/{CRAWL}/other/{SHARDS[0]}.warc.gz"
    (crawl / other).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(crawl / RELATIVE[0], crawl / other)
    urls = [f"{base}{RELATIVE[0]}", f"{base}{RELATIVE[1]}", f"{base}{other}"]
    copy = data_copy(tmp_path, source="warc", warc=urls)
    digest = {url: hashlib.sha256(url.encode()).hexdigest()[:8] for url in urls}
    assert planned_shards(copy) == sorted([
        f"{SHARDS[0]}-{digest[urls[0]]}", SHARDS[1], f"{SHARDS[0]}-{digest[urls[2]]}",
    ])


@pytest.mark.slow  # four dry runs
def test_commoncrawl_limit_and_seeded_sample(tmp_path):
    """limit takes the list's first files; sample a seeded choice that a larger limit keeps."""
    mirror = tmp_path / "mirror"
    names = [f"CC-MAIN-2099-{i:05d}" for i in range(12)]
    rels = [f"segments/{i}/warc/{name}.warc.gz" for i, name in enumerate(names)]
    for rel in rels:
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        (mirror / rel).write_bytes(b"")
    paths = tmp_path / "warc.paths"  # plain text also works
    paths.write_text("".join(f"{rel}\n" for rel in rels))

    def shards(**cc):
        copy = data_copy(tmp_path / "wf", source="commoncrawl",
                         commoncrawl={"paths": str(paths), "base_url": str(mirror), **cc})
        try:
            return planned_shards(copy)
        finally:
            shutil.rmtree(tmp_path / "wf")

    assert shards(limit=2) == names[:2]
    small, large = shards(limit=3, sample=True), shards(limit=6, sample=True, seed=0)
    assert len(small) == 3 and set(small) <= set(large) and small != names[:3]
    assert shards(limit=3, sample=True, seed=1) != small


def test_a_remote_file_list_is_read_once_and_cached(tmp_path, http_server):
    base, log = http_server
    copy = data_copy(tmp_path, source="commoncrawl", commoncrawl={"crawl": CRAWL, "base_url": base})
    fetches = lambda: log.read_text().count(f"GET /{PATHS_LIST}")  # noqa: E731
    before = fetches()
    assert planned_shards(copy) == SHARDS
    assert fetches() == before + 1
    cached = list((tmp_path / "results" / "input").glob("*-warc.paths.gz"))
    assert len(cached) == 1
    assert planned_shards(copy) == SHARDS
    assert fetches() == before + 1, "the second parse must read the cached list"


def test_a_missing_file_list_is_a_clear_error(tmp_path, http_server):
    base, _ = http_server
    url = f"{base}crawl-data/CC-MAIN-2099-02/warc.paths.gz"
    copy = data_copy(tmp_path, source="commoncrawl", commoncrawl={"paths": url})
    proc = copy.snakemake("-n", check=False)
    assert proc.returncode != 0
    assert f"cannot read the Common Crawl file list {url}: HTTP 404" in output_of(proc)
    assert not (tmp_path / "results" / "input").exists()


def test_s3_anonymous_access_sends_no_credentials(tmp_path, s3_server, aws_env):
    """Without credentials a signed request fails; `input.s3.anonymous` reads the bucket unsigned."""
    aws_env.delenv("AWS_ACCESS_KEY_ID")
    aws_env.delenv("AWS_SECRET_ACCESS_KEY")
    section = {"source": "commoncrawl", "commoncrawl": {"paths": f"s3://{BUCKET}/{PATHS_LIST}",
                                                        "base_url": f"s3://{BUCKET}/"}}
    signed = data_copy(tmp_path / "signed", **section, s3={"endpoint_url": s3_server})
    proc = signed.snakemake("-n", check=False)
    assert proc.returncode != 0 and "credentials" in output_of(proc).lower()
    unsigned = data_copy(tmp_path / "unsigned", **section, s3={"endpoint_url": s3_server, "anonymous": True})
    assert planned_shards(unsigned) == SHARDS


# --- the data DAG from each server equals the run on local files ---------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("server", ["http", "s3"])
@pytest.mark.parametrize("form", ["commoncrawl", "warc_urls"])
def test_data_dag_from_a_server_equals_the_local_run(request, tmp_path, baseline, server, form, aws_env):
    if server == "http":
        base, _ = request.getfixturevalue("http_server")
        extra = {}
    else:
        endpoint = request.getfixturevalue("s3_server")
        base = f"s3://{BUCKET}/"
        # the endpoint from config for the file list, from boto3's own AWS_ENDPOINT_URL for URLs
        if form == "commoncrawl":
            extra = {"s3": {"endpoint_url": endpoint}}
        else:
            aws_env.setenv("AWS_ENDPOINT_URL", endpoint)
            extra = {}
    if form == "commoncrawl":
        section = {"source": "commoncrawl", "commoncrawl": {"paths": f"{base}{PATHS_LIST}", "base_url": base}}
    else:
        section = {"source": "warc", "warc": [f"{base}{rel}" for rel in RELATIVE]}
    copy = data_copy(tmp_path, **section, **extra)
    proc = copy.snakemake(*TARGETS, "--printshellcmds", timeout=900)
    out = output_of(proc)
    for rel in RELATIVE:  # each WARC downloaded, and ingested from Snakemake's local copy
        assert f"Retrieving from storage: {base}{rel}" in out
        assert re.search(rf"--input '?\.snakemake/storage/{server}/\S+/{re.escape(rel)}", out), out[-3000:]
    assert_same_tables(tmp_path, baseline)
    # ... which Snakemake removed once its ingest job was done
    storage = tmp_path / ".snakemake" / "storage"
    assert not storage.exists() or not [p for p in storage.rglob("*") if p.is_file()]
    assert copy.planned_jobs(*TARGETS) == {}, "a second run must do nothing"


# --- failures: a clear error naming the URL, no shard that looks complete -------------------------


def assert_no_shard(root: Path, shard: str) -> None:
    assert not (root / layout.shard_file("results", "ingest", "docs", shard)).exists()
    storage = root / ".snakemake" / "storage"
    partial = [p for p in storage.rglob("*") if p.is_file()] if storage.exists() else []
    assert not partial, f"partial downloads left behind: {partial}"


@pytest.mark.parametrize("server", ["http", "s3"])
def test_a_missing_warc_url_stops_the_run_naming_it(request, tmp_path, server, aws_env):
    if server == "http":
        base, _ = request.getfixturevalue("http_server")
        extra = {}
    else:
        base = f"s3://{BUCKET}/"
        extra = {"s3": {"endpoint_url": request.getfixturevalue("s3_server")}}
    missing = f"{base}crawl-data/{CRAWL}/segments/9/warc/gone.warc.gz"
    copy = data_copy(tmp_path, source="warc", warc=[f"{base}{RELATIVE[0]}", missing], **extra)
    proc = copy.snakemake(layout.shard_file("results", "ingest", "docs", "gone"), check=False)
    assert proc.returncode != 0
    out = output_of(proc)
    assert "MissingInputException" in out and f"{missing} (in storage)" in out, out[-3000:]
    assert_no_shard(tmp_path, "gone")


def test_a_dropped_download_stops_the_run_naming_the_url(tmp_path, dropping_server):
    url = f"{dropping_server}{RELATIVE[0]}"
    copy = data_copy(tmp_path, source="warc", warc=[url])
    target = layout.shard_file("results", "ingest", "docs", SHARDS[0])
    proc = copy.snakemake(target, "--retries", "2", check=False, timeout=300)
    assert proc.returncode != 0
    out = output_of(proc)
    assert f"Failed to retrieve storage object from {url}" in out, out[-3000:]
    assert "IncompleteRead" in out
    assert_no_shard(tmp_path, SHARDS[0])


def test_an_error_answer_to_the_download_leaves_no_shard(tmp_path, slow_down_server):
    copy = data_copy(tmp_path, source="warc", warc=[f"{slow_down_server}{RELATIVE[0]}"])
    proc = copy.snakemake(layout.shard_file("results", "ingest", "docs", SHARDS[0]), check=False, timeout=300)
    assert proc.returncode != 0
    log = (tmp_path / "results" / "logs" / "ingest" / f"{SHARDS[0]}.log").read_text()  # the job's stderr
    assert "holds no WARC or ARC record" in log and "not a crawl file" in log, log[-3000:]
    assert_no_shard(tmp_path, SHARDS[0])
