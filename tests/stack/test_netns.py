"""No single-host assumptions: the frontend, the schedulers and the engines each run in a Linux
network namespace of their own, joined to this host by veth pairs on one bridge, and reach each
other only through the NATS cluster and Postgres addresses they are given (a three-server R3
cluster and a PgBouncer, both listening on the bridge). Inside a namespace 127.0.0.1 is that
namespace's own loopback, so anything that assumed "localhost" would fail here.

The test creates the bridge, veth pairs and namespaces itself and removes them afterwards; it is
skipped, saying why, where that is not allowed (not root, no `ip`, a kernel or container that
refuses network namespaces) or PgBouncer is not installed.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace

import nats
import pytest
import pytest_asyncio
from pgbouncer_proc import PgBouncer, pgbouncer_binary
from svc_stack import Stack, WireRecorder

from autellix.local.nats_cluster import EmbeddedNatsCluster
from autellix.local.supervisor import ServiceSpec
from autellix.runtime.settings import Settings, nats_servers
from autellix.wire.protocol import CallFinal, CallRequest, SamplingParams

ROLES = ("fe", "sc", "en")
SERVICE_ROLE = {"frontend": "fe", "sched-a": "sc", "sched-b": "sc", "ns-a": "en", "ns-b": "en"}
POOLED = {"AUTELLIX_PG_POOL_MODE": "transaction"}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@dataclass
class Network:
    """A bridge on this host with one namespace per role, each joined by a veth pair."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    subnet: int = field(default_factory=lambda: random.randint(1, 250))
    namespaces: dict[str, str] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"axbr{self.tag}"

    @property
    def host_ip(self) -> str:
        return f"10.213.{self.subnet}.1"

    def create(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, role in enumerate(ROLES):
            ns, host_end, ns_end = f"ax{self.tag}{role}", f"axh{self.tag}{i}", f"axn{self.tag}{i}"
            _ip("netns", "add", ns)
            self.namespaces[role] = ns
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            _ip("link", "set", ns_end, "netns", ns)
            _ip("link", "set", host_end, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"10.213.{self.subnet}.{10 + i}/24", "dev", ns_end)
            _ip("-n", ns, "link", "set", ns_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def remove(self) -> None:
        for ns in self.namespaces.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=10)

    def identify(self, pid: int) -> str:
        """The network namespace process `pid` is in ('' for this host's)."""
        out = subprocess.run(
            ["ip", "netns", "identify", str(pid)], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip()

    def run(self, role: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.namespaces[role], *argv],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (apt-get install iproute2)")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces and veth pairs needs root")
    if pgbouncer_binary() is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    net = Network()
    try:
        net.create()
    except subprocess.CalledProcessError as exc:
        net.remove()
        pytest.skip(f"this kernel/container does not allow it: ip {exc.args[1]}: {exc.stderr}")
    try:
        yield net
    finally:
        net.remove()


@pytest.fixture(scope="module")
def cluster(network: Network) -> Iterator[EmbeddedNatsCluster]:
    with EmbeddedNatsCluster(3, host=network.host_ip, name="autellix-netns") as c:
        yield c


@pytest.fixture(scope="module")
def pooler(network: Network, pg_admin_url: str) -> Iterator[PgBouncer]:
    with PgBouncer(pg_admin_url, listen=network.host_ip, pool_size=8) as pb:
        yield pb


class NetnsStack(Stack):
    """`Stack` whose services start inside their role's namespace (`ip netns exec`)."""

    network: Network

    def _spec(self, name: str, *args: object, **kwargs: object) -> ServiceSpec:
        spec = super()._spec(name, *args, **kwargs)  # type: ignore[arg-type]
        ns = self.network.namespaces[SERVICE_ROLE[name]]
        return replace(spec, argv=["ip", "netns", "exec", ns, *spec.argv])


@pytest_asyncio.fixture(scope="module")
async def stack(
    network: Network,
    cluster: EmbeddedNatsCluster,
    pooler: PgBouncer,
    make_database: Callable[..., str],
    namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    settings = Settings(
        nats_url=cluster.url,
        database_url=pooler.url_for(make_database()),
        namespace=f"{namespace}_netns",
        js_replicas=3,
    )
    s = NetnsStack(settings, tmp_path_factory.mktemp("logs"))
    s.network = network
    s.start("frontend", "frontend", env=POOLED)
    for name in ("sched-a", "sched-b"):
        s.start(name, "scheduler", "--replica", name, env=POOLED)
    for e in ("ns-a", "ns-b"):
        s.start(
            e, "engine", "--engine-id", e, "--max-batch", "4", "--token-latency", "0.01",
            stop_timeout=30.0, env=POOLED,
        )  # fmt: skip
    async with s.running():
        yield s


def test_a_namespace_does_not_reach_this_hosts_loopback(network: Network) -> None:
    """The premise: what listens on this host's 127.0.0.1 is out of a namespace's reach, the
    bridge address is not."""
    probe = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)"
    pg = network.run("fe", sys.executable, "-c", probe, "127.0.0.1", "5432")
    assert pg.returncode != 0 and "refused" in pg.stderr.lower(), pg


async def test_calls_cross_namespaces_through_nats_and_postgres_only(
    stack: Stack, network: Network
) -> None:
    for name, role in SERVICE_ROLE.items():  # each service really is in its own namespace
        where = await asyncio.to_thread(network.identify, stack.group[name].pid)
        assert where == network.namespaces[role], (name, where)
    nc = await nats.connect(servers=nats_servers(stack.settings.nats_url or ""))
    wire = await WireRecorder(nc, stack.subjects).start()
    try:
        calls = [
            await wire.submit(
                CallRequest(
                    program_id=f"netns-{i % 4}",
                    thread_id=f"t{i}",
                    prompt_token_ids=[(i + k) % 500 + 1 for k in range(10)],
                    sampling=SamplingParams(max_tokens=8),
                )
            )
            for i in range(24)
        ]
        await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in calls)), 60.0)
    finally:
        await wire.stop()
        await nc.close()
    finals = [c.final for c in calls]
    assert all(isinstance(f, CallFinal) and f.usage.completion_tokens == 8 for f in finals)
    assert {f.engine.engine_id for f in finals} == {"ns-a", "ns-b"}
