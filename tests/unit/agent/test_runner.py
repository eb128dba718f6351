from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from inference_club.agent.cli import agent_command
from inference_club.agent.runner import AgentRunner, TransportUnavailable, run_agent, transport_factory
from inference_club.testing.servers import ProcessHandle, free_port

from .stubs import EngineStub, FakeHub, eventually, make_config


async def test_run_agent_until_stop(
    fake_hub: tuple[FakeHub, str], engine_stub: tuple[EngineStub, str]
) -> None:
    fake, hub_base = fake_hub
    _, engine_base = engine_stub
    config = make_config([{"type": "llm", "url": f"{engine_base}/v1"}], hub=hub_base)
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(config, stop=stop))
    await fake.wait_beats(1)
    url = fake.beats[0]["callback_url"]
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{url}/healthz")).status_code == 200
    stop.set()
    await asyncio.wait_for(task, 5)
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/healthz")


async def test_hub_transport_seam_for_in_process_hubs(
    engine_stub: tuple[EngineStub, str],
) -> None:
    """An in-process hub (ASGI) can receive the heartbeat without a socket."""
    fake = FakeHub()
    _, engine_base = engine_stub
    config = make_config([{"type": "llm", "url": f"{engine_base}/v1"}], hub="http://hub.test")
    runner = AgentRunner(config, hub_transport=httpx.ASGITransport(app=fake), report_gpus=False)
    await runner.start()
    try:
        await asyncio.wait_for(runner.registered.wait(), 5)
        assert fake.beats[0]["services"][0]["models"] == [{"id": "m1"}]
        assert runner.secrets.check(b"s3cret-1")
    finally:
        await runner.stop()
    await runner.stop()  # idempotent


def test_tunnel_is_the_default_transport() -> None:
    config = make_config([{"type": "llm", "url": "http://127.0.0.1:9/v1"}], transport="tunnel")
    runner = AgentRunner(config)
    assert runner.transport.name == "tunnel" and runner.callback_url is None
    assert runner.registered is not runner.heartbeat.registered  # the tunnel carries the heartbeat
    with pytest.raises(TransportUnavailable, match="'tunnel'"):
        transport_factory("carrier-pigeon")


def test_cli_help_lists_options_with_env_vars() -> None:
    result = CliRunner().invoke(agent_command, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    for option, env in [
        ("--hub", "IC_AGENT_HUB"),
        ("--key", "IC_AGENT_KEY"),
        ("--name", "IC_AGENT_NAME"),
        ("--service", "IC_AGENT_SERVICE"),
        ("--config", "IC_AGENT_CONFIG"),
        ("--direct", "IC_AGENT_DIRECT"),
        ("--listen", "IC_AGENT_LISTEN"),
        ("--callback-url", "IC_AGENT_CALLBACK_URL"),
        ("--discover-interval", "IC_AGENT_DISCOVER_INTERVAL"),
    ]:
        assert option in result.output
        assert env in result.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--service", "llm"], "--service 'llm': expected TYPE=URL"),
        (["--service", "chat=http://a/v1"], "--service 'chat=http://a/v1': type: must be one of"),
        (["--service", "llm=ftp://a"], "url: must be an http:// or https:// URL"),
        (["--hub", "hub.example"], "--hub: must be an http:// or https:// URL"),
        (["--listen", "nope"], "--listen: expected HOST:PORT"),
        (["--config", "/nonexistent.toml"], "config file not found"),
    ],
)
def test_cli_errors_exit_2_without_traceback(args: list[str], fragment: str) -> None:
    base = ["--hub", "http://127.0.0.1:1", "--key", "k", "--service", "llm=http://127.0.0.1:9/v1"]
    result = CliRunner().invoke(agent_command, [*base, "--direct", *args])
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_reads_env_vars_and_config_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('hub = "http://127.0.0.1:1"\n[[services]]\ntype = "chat"\nurl = "http://a"\n')
    result = CliRunner().invoke(
        agent_command, ["--config", str(path), "--direct"], env={"IC_AGENT_KEY": "k"}
    )
    assert result.exit_code == 2
    assert f"{path}: services[0].type" in result.output


async def test_agent_process_serves_and_stops_on_sigterm(
    fake_hub: tuple[FakeHub, str], engine_stub: tuple[EngineStub, str], tmp_path: Path
) -> None:
    fake, hub_base = fake_hub
    stub, engine_base = engine_stub
    port = free_port()
    with ProcessHandle.python(
        "-m", "inference_club.agent",
        "--direct", "--listen", f"127.0.0.1:{port}",
        "--service", f"llm={engine_base}/v1",
        "--name", "proc-rig",
        log_path=tmp_path / "agent.log",
        env={"IC_AGENT_HUB": hub_base, "IC_AGENT_KEY": "ic-key"},
    ) as proc:
        await fake.wait_beats(1, timeout=15)
        assert fake.beats[0]["name"] == "proc-rig"
        assert fake.beats[0]["callback_url"] == f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:
            r = await client.post(
                f"http://127.0.0.1:{port}/relay/llm/v1/chat/completions",
                headers={"x-ic-agent-secret": "s3cret-1", "x-ic-model": "m1"},
                content=b'{"model":"m1"}',
            )
        assert r.status_code == 200, proc.log_tail()
        proc.process.send_signal(signal.SIGTERM)
        await eventually(lambda: not proc.is_running(), timeout=10)
        assert proc.returncode == 0, proc.log_tail()
        log = proc.log_text()
    assert "relay service=llm#0 model=m1 POST /v1/chat/completions status=200" in log
    assert stub.requests[-1]["path"] == "/v1/chat/completions"
