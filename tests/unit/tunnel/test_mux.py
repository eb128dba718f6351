"""The stream multiplexer over an in-memory link: credits, isolation, resets, liveness.

Every test runs twice: over links the mux reads (as the agent's), and over links that
deliver each message as it arrives (as the hub's).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from inference_club.tunnel.mux import MAX_BATCH, ConnectionLost, Mux, Stream, StreamReset, StreamUnavailable
from inference_club.tunnel.protocol import (
    HEADER,
    MAX_FRAME_SIZE,
    CloseCode,
    Flag,
    Frame,
    FrameType,
    GoAway,
    ResetCode,
    decode_frame,
    decode_frames,
)
from inference_club.tunnel.traffic import Traffic
from tests.polling import eventually


class MemoryLink:
    """One end of an in-memory WebSocket: messages in order, close seen by the peer."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.peer: MemoryLink | None = None
        self.closed_with: tuple[int, str] | None = None
        self.sent: list[bytes] = []
        self.mute = False  # drop everything sent (a peer that went silent)
        self.traffic = Traffic()

    async def receive(self) -> bytes | None:
        return await self.inbox.get()

    async def send(self, data: bytes) -> None:
        if self.closed_with is not None:
            raise ConnectionError("closed")
        self.sent.append(data)
        if self.peer is not None and not self.mute:
            self.peer.arrive(data)

    def arrive(self, data: bytes) -> None:
        self.inbox.put_nowait(data)

    async def close(self, code: int, reason: str) -> None:
        if self.closed_with is None:
            self.closed_with = (code, reason)
            if self.peer is not None:
                self.peer.inbox.put_nowait(None)


class DeliveringMemoryLink(MemoryLink):
    """A :class:`MemoryLink` that hands messages over as they arrive, each in a callback of
    its own (as a socket's read would), once the mux asks for it."""

    def __init__(self) -> None:
        super().__init__()
        self.receiver: Callable[[bytes], None] | None = None

    def deliver_to(self, receiver: Callable[[bytes], None]) -> None:
        queued = []
        while not self.inbox.empty():
            queued.append(self.inbox.get_nowait())
        self.receiver = receiver
        for data in queued:
            if data is None:
                self.inbox.put_nowait(None)
            else:
                receiver(data)

    def arrive(self, data: bytes) -> None:
        if self.receiver is None:
            super().arrive(data)
        else:
            asyncio.get_running_loop().call_soon(self.receiver, data)


@pytest.fixture(autouse=True, params=["read", "delivered"])
def link_kind(request: pytest.FixtureRequest) -> Iterator[None]:
    global _link_class
    _link_class = DeliveringMemoryLink if request.param == "delivered" else MemoryLink
    yield
    _link_class = MemoryLink


_link_class: type[MemoryLink] = MemoryLink


def link_pair() -> tuple[MemoryLink, MemoryLink]:
    a, b = _link_class(), _link_class()
    a.peer, b.peer = b, a
    return a, b


@dataclass
class Pair:
    hub: Mux
    agent: Mux
    hub_link: MemoryLink
    agent_link: MemoryLink
    opened: list[tuple[Stream, Frame]] = field(default_factory=list)
    resets: list[Stream] = field(default_factory=list)
    controls: list[Frame] = field(default_factory=list)

    async def accepted(self, count: int = 1) -> list[Stream]:
        await eventually(lambda: len(self.opened) >= count)
        return [s for s, _ in self.opened[:count]]


@contextlib.asynccontextmanager
async def running_pair(**options: Any) -> AsyncIterator[Pair]:
    hub_link, agent_link = link_pair()
    if "traffic" in options:  # one count for both sides
        hub_link.traffic = agent_link.traffic = options.pop("traffic")
    window = options.pop("window", 4096)
    common: dict[str, Any] = {"recv_window": window, "send_window": window, **options}
    hub = Mux(hub_link, opener=True, label="hub", **common)
    pair = Pair(hub, hub, hub_link, agent_link)
    agent = Mux(
        agent_link,
        opener=False,
        label="agent",
        on_open=lambda s, f: pair.opened.append((s, f)),
        on_reset=pair.resets.append,
        on_control=pair.controls.append,
        **common,
    )
    pair.agent = agent
    tasks = [asyncio.create_task(hub.run()), asyncio.create_task(agent.run())]
    try:
        yield pair
    finally:
        hub.close()
        agent.close()
        await asyncio.wait(tasks, timeout=3)
        for task in tasks:
            task.cancel()


def open_request(mux: Mux, *, end: bool = False) -> Stream:
    stream = mux.open_stream()
    stream.send_head(Frame(FrameType.OPEN, stream.id, Flag.END if end else Flag.NONE, b"{}"))
    return stream


async def read_all(stream: Stream) -> bytes:
    out = bytearray()
    while (chunk := await stream.read()) is not None:
        out += chunk
    return bytes(out)


async def test_request_and_answer_both_ways() -> None:
    async with running_pair() as pair:
        stream = open_request(pair.hub)
        await stream.write(b"request body")
        stream.end()
        (agent_side,) = await pair.accepted()
        assert await read_all(agent_side) == b"request body"
        agent_side.send_head(Frame(FrameType.RESPONSE, agent_side.id, Flag.NONE, b'{"status":200}'))
        head = await stream.head
        assert head.payload == b'{"status":200}'
        reader = asyncio.create_task(read_all(stream))
        await agent_side.write(b"x" * 20000)  # more than the window: needs credit back
        agent_side.end()
        assert await reader == b"x" * 20000


async def test_the_mux_reads_a_link_that_delivers_through_its_receiver() -> None:
    hub_link, agent_link = DeliveringMemoryLink(), MemoryLink()
    hub_link.peer, agent_link.peer = agent_link, hub_link
    opened: list[Stream] = []
    hub = Mux(hub_link, opener=True, label="hub")
    agent = Mux(agent_link, opener=False, label="agent", on_open=lambda s, f: opened.append(s))
    tasks = [asyncio.create_task(hub.run()), asyncio.create_task(agent.run())]
    try:
        stream = open_request(hub, end=True)
        await eventually(lambda: bool(opened))
        opened[0].send_head(Frame(FrameType.RESPONSE, opened[0].id, Flag.NONE, b"{}"))
        await opened[0].write(b"answer")
        opened[0].end()
        assert (await stream.head).payload == b"{}"
        assert await read_all(stream) == b"answer"
        assert hub_link.receiver is not None and hub_link.inbox.empty()
        assert hub_link.traffic.frames_received == agent_link.traffic.frames_sent
    finally:
        hub.close()
        agent.close()
        await asyncio.wait(tasks, timeout=3)


async def test_a_whole_body_leaves_with_its_open_in_one_message() -> None:
    async with running_pair(protocol=3) as pair:
        await eventually(lambda: pair.hub.messages_sent > 0)  # the opening PING, alone
        before = len(pair.hub_link.sent)
        stream = open_request(pair.hub)
        assert stream.send_whole_body(b'{"model":"m"}')
        assert stream.local_ended
        (agent_side,) = await pair.accepted()
        assert agent_side.take_whole_body() == b'{"model":"m"}'  # here with the OPEN: no read
        assert agent_side.buffered == 0 and await agent_side.read() is None
        [message] = pair.hub_link.sent[before:]
        opened, body = decode_frames(message)
        assert (opened.type, body.type, body.payload) == (FrameType.OPEN, FrameType.DATA, b'{"model":"m"}')
        assert body.end  # the body's end rides on its only frame
        with pytest.raises(RuntimeError):
            await stream.write(b"more")  # nothing may follow the end


async def test_a_whole_body_that_would_wait_is_left_to_write() -> None:
    async with running_pair(window=16) as pair:
        stream = open_request(pair.hub)
        assert not stream.send_whole_body(b"x" * 17)  # beyond the agent's credit: nothing queued
        assert not stream.local_ended
        await stream.write(b"y" * 4)  # the ordinary way still works
        assert stream.send_whole_body(b"z" * 12)  # exactly what is left of the credit
        assert not stream.send_whole_body(b"")  # ended already
        (agent_side,) = await pair.accepted()
        await eventually(lambda: agent_side.remote_ended)
        assert agent_side.take_whole_body() == b"y" * 4 + b"z" * 12  # in two frames, taken as one
        failed = open_request(pair.hub)
        failed.reset(ResetCode.CANCEL, "gone")
        assert not failed.send_whole_body(b"{}")


async def test_a_body_still_arriving_is_not_taken_whole() -> None:
    async with running_pair() as pair:
        stream = open_request(pair.hub)
        await stream.write(b"first part")
        (agent_side,) = await pair.accepted()
        await eventually(lambda: agent_side.buffered == 10)
        assert agent_side.take_whole_body() is None  # no end yet: nothing taken
        stream.end()
        assert await read_all(agent_side) == b"first part"


async def test_large_writes_are_split_into_bounded_frames() -> None:
    async with running_pair(window=1 << 20) as pair:
        stream = open_request(pair.hub)
        (agent_side,) = await pair.accepted()
        reader = asyncio.create_task(read_all(agent_side))
        await stream.write(b"y" * 300_000)
        stream.end()
        assert len(await reader) == 300_000
        sizes = [len(m) - HEADER.size for m in pair.hub_link.sent if m[0] == FrameType.DATA]
        assert max(sizes) <= 64 * 1024


async def test_a_stalled_stream_is_bounded_and_does_not_stall_others() -> None:
    async with running_pair(window=4096) as pair:
        stalled = open_request(pair.hub, end=True)
        other = open_request(pair.hub, end=True)
        agent_stalled, agent_other = await pair.accepted(2)
        for s in (agent_stalled, agent_other):
            s.send_head(Frame(FrameType.RESPONSE, s.id, Flag.NONE, b"{}"))
        await stalled.head
        await other.head

        # The hub never reads `stalled`: its writer blocks once the window is used up.
        writer = asyncio.create_task(agent_stalled.write(b"s" * 100_000))
        await eventually(lambda: stalled.buffered == 4096)
        await asyncio.sleep(0.05)
        assert not writer.done()
        assert stalled.buffered == 4096 and stalled.max_buffered <= 4096

        # Meanwhile the other stream moves 1 MB through the same connection.
        started = time.monotonic()
        sender = asyncio.create_task(agent_other.write(b"o" * 1_000_000))
        received = 0
        while received < 1_000_000:
            chunk = await other.read()
            assert chunk is not None
            received += len(chunk)
        await sender
        assert time.monotonic() - started < 2
        assert stalled.buffered == 4096

        # Reading the stalled stream releases its writer; nothing was lost.
        reader = asyncio.create_task(read_all(stalled))
        await writer
        agent_stalled.end()
        assert await reader == b"s" * 100_000


async def test_sending_beyond_the_credit_is_a_protocol_error() -> None:
    async with running_pair(window=1024) as pair:
        stream = open_request(pair.hub)
        await pair.accepted()
        # Bypass the credit check, as a broken peer would.
        await pair.hub_link.send(Frame(FrameType.DATA, stream.id, Flag.NONE, b"z" * 2048).encode())
        await eventually(lambda: pair.agent.closed)
        assert pair.agent.close_code == CloseCode.PROTOCOL_ERROR
        assert "exceed the credit" in pair.agent.close_reason
        await eventually(lambda: pair.hub.closed)
        with pytest.raises(ConnectionLost):
            await stream.read()


async def test_oversized_and_garbage_frames_close_the_connection() -> None:
    async with running_pair(recv_max_frame=32 * 1024) as pair:
        await pair.hub_link.send(Frame(FrameType.PING, 0, Flag.NONE, b"p" * 40_000).encode())
        await eventually(lambda: pair.agent.closed)
        assert pair.agent.close_code == CloseCode.PROTOCOL_ERROR
        assert "exceeds the limit" in pair.agent.close_reason


async def test_cancel_from_the_opener_reaches_the_other_side() -> None:
    async with running_pair() as pair:
        stream = open_request(pair.hub)
        (agent_side,) = await pair.accepted()
        stream.reset(ResetCode.CANCEL, "client went away")
        await eventually(lambda: pair.resets == [agent_side])
        with pytest.raises(StreamReset) as info:
            await agent_side.read()
        assert info.value.code == "cancel"
        assert pair.hub.streams == {} and pair.agent.streams == {}


async def test_reset_from_the_agent_fails_the_waiting_head_and_reads() -> None:
    async with running_pair() as pair:
        waiting = open_request(pair.hub, end=True)
        streaming = open_request(pair.hub, end=True)
        agent_waiting, agent_streaming = await pair.accepted(2)
        agent_waiting.reset(ResetCode.REFUSED, "busy")
        with pytest.raises(StreamReset, match="busy"):
            await waiting.head
        agent_streaming.send_head(Frame(FrameType.RESPONSE, agent_streaming.id, Flag.NONE, b"{}"))
        await agent_streaming.write(b"partial")
        agent_streaming.reset(ResetCode.UPSTREAM_ERROR, "engine broke off", after_data=True)
        await streaming.head
        assert await streaming.read() == b"partial"  # what arrived first is still delivered
        with pytest.raises(StreamReset) as info:
            await streaming.read()
        assert info.value.code == "upstream_error"


async def test_ready_says_when_a_read_would_not_wait() -> None:
    async with running_pair() as pair:
        stream = open_request(pair.hub, end=True)
        (agent_side,) = await pair.accepted()
        agent_side.send_head(Frame(FrameType.RESPONSE, agent_side.id, Flag.NONE, b"{}"))
        await stream.head
        assert not stream.ready
        await agent_side.write(b"bytes")
        await eventually(lambda: stream.ready)
        assert await stream.read() == b"bytes" and not stream.ready
        agent_side.end()
        await eventually(lambda: stream.ready)  # the end is here: read answers None at once
        assert await stream.read() is None
        failing = open_request(pair.hub, end=True)
        agent_failing = (await pair.accepted(2))[1]
        agent_failing.reset(ResetCode.UPSTREAM_ERROR, "gone")
        await eventually(lambda: failing.ready)


async def test_connection_loss_fails_every_stream() -> None:
    async with running_pair() as pair:
        first = open_request(pair.hub)
        second = open_request(pair.hub)
        await pair.accepted(2)
        pair.agent_link.inbox.put_nowait(None)  # the agent's socket died
        await eventually(lambda: pair.agent.closed and pair.hub.closed)
        for stream in (first, second):
            with pytest.raises(ConnectionLost):
                await stream.head
        with pytest.raises(StreamUnavailable):
            pair.hub.open_stream()


async def test_a_silent_peer_is_declared_dead() -> None:
    async with running_pair(ping_interval_s=0.05, dead_after_s=0.3) as pair:
        await asyncio.sleep(0.4)
        assert not pair.hub.closed and pair.hub.rtt_s is not None  # pings answered: alive
        stream = open_request(pair.hub)
        pair.agent_link.mute = True  # the agent goes silent without closing anything
        started = time.monotonic()
        await eventually(lambda: pair.hub.closed, timeout=2)
        assert time.monotonic() - started < 0.3 + 0.2
        assert pair.hub.close_code == CloseCode.PEER_SILENT
        with pytest.raises(ConnectionLost, match="silent"):
            await stream.head


async def test_draining_refuses_new_streams_and_goaway_stops_the_opener() -> None:
    async with running_pair() as pair:
        running = open_request(pair.hub)
        (agent_running,) = await pair.accepted()
        pair.agent.draining = True
        late = open_request(pair.hub)
        with pytest.raises(StreamReset) as info:
            await late.head
        assert info.value.code == "refused"
        pair.agent.send_control(GoAway("draining").to_frame())
        await eventually(lambda: pair.hub.peer_draining)
        assert not pair.hub.accepts_streams
        with pytest.raises(StreamUnavailable):
            pair.hub.open_stream()
        # The running stream still completes.
        agent_running.send_head(Frame(FrameType.RESPONSE, agent_running.id, Flag.END, b"{}"))
        await running.head
        assert await read_all(running) == b""


async def test_stream_limit() -> None:
    async with running_pair(max_streams=2) as pair:
        pair.hub.open_stream()
        pair.hub.open_stream()
        with pytest.raises(StreamUnavailable, match="2 streams"):
            pair.hub.open_stream()


async def test_only_the_opener_opens_and_ids_never_repeat() -> None:
    async with running_pair() as pair:
        await pair.agent_link.send(Frame(FrameType.OPEN, 1, Flag.NONE, b"{}").encode())
        await eventually(lambda: pair.hub.closed)
        assert "may not open" in pair.hub.close_reason
    async with running_pair() as pair:
        await pair.hub_link.send(Frame(FrameType.OPEN, 5, Flag.NONE, b"{}").encode())
        await pair.hub_link.send(Frame(FrameType.OPEN, 5, Flag.NONE, b"{}").encode())
        await eventually(lambda: pair.agent.closed)
        assert "reuses stream id" in pair.agent.close_reason


async def test_late_frames_for_finished_streams_are_ignored() -> None:
    async with running_pair() as pair:
        stream = open_request(pair.hub)
        (agent_side,) = await pair.accepted()
        stream.reset()
        await pair.hub_link.send(Frame(FrameType.DATA, stream.id, Flag.NONE, b"late").encode())
        agent_side.send_head(Frame(FrameType.RESPONSE, agent_side.id, Flag.NONE, b"{}"))
        await asyncio.sleep(0.05)
        assert not pair.hub.closed and not pair.agent.closed


async def test_data_frames_queued_behind_a_slow_link_go_out_merged() -> None:
    async with running_pair(window=1 << 20) as pair:
        stream = open_request(pair.hub)
        (accepted,) = await pair.accepted()
        gate = asyncio.Event()
        original = pair.hub_link.send

        async def slow_send(data: bytes) -> None:
            await gate.wait()
            await original(data)

        pair.hub_link.send = slow_send  # type: ignore[method-assign]
        await stream.write(b"held")  # the writer takes this one and waits on the link
        await asyncio.sleep(0)
        for piece in (b"a", b"b", b"c"):
            await stream.write(piece)
        stream.end()
        before = len(pair.hub_link.sent)
        gate.set()
        body = b""
        while (chunk := await accepted.read()) is not None:
            body += chunk
        assert body == b"heldabc"
        data_frames = [m for m in pair.hub_link.sent[before:] if m[0] == FrameType.DATA]
        # "held", then a, b, c and the end as one frame.
        assert len(data_frames) == 2
        _, flags, _, _, length = HEADER.unpack_from(data_frames[1])
        assert flags & Flag.END and length == 3


# --------------------------------------------------------------------------- batches (version 3)


def frames_in(messages: list[bytes]) -> list[Frame]:
    return [frame for message in messages for frame in decode_frames(message)]


@pytest.mark.parametrize("protocol", [2, 3])
async def test_frames_of_many_streams_share_one_send_only_on_a_batching_tunnel(protocol: int) -> None:
    async with running_pair(protocol=protocol) as pair:
        await eventually(lambda: pair.hub.messages_sent > 0)  # the opening PING, alone
        before = len(pair.hub_link.sent)
        for i in range(50):  # queued without yielding: the writer finds all of it at once
            stream = open_request(pair.hub)
            await stream.write(bytes([i]) * 100)
            stream.end()
        accepted = await pair.accepted(50)
        assert [await read_all(s) for s in accepted] == [bytes([i]) * 100 for i in range(50)]
        messages = pair.hub_link.sent[before:]
        frames = frames_in(messages)
        if protocol >= 3:  # each stream's OPEN, then its one DATA with its END on it
            assert [f.type for f in frames] == [FrameType.OPEN, FrameType.DATA] * 50
        else:  # 50 OPEN, then each stream's DATA merged with its END
            assert [f.type for f in frames] == [FrameType.OPEN] * 50 + [FrameType.DATA] * 50
        assert all(f.end for f in frames if f.type is FrameType.DATA)
        assert len(messages) == (1 if protocol >= 3 else 100)
        if protocol < 3:
            assert [decode_frame(m) for m in messages] == frames


@pytest.mark.parametrize("protocol", [2, 3])
async def test_frames_are_counted_as_they_cross(protocol: int) -> None:
    traffic = Traffic()  # both sides count into it here: every frame sent is also received
    async with running_pair(protocol=protocol, traffic=traffic) as pair:
        for i in range(50):
            stream = open_request(pair.hub)
            await stream.write(bytes([i]) * 100)
            stream.end()
        accepted = await pair.accepted(50)
        assert [await read_all(s) for s in accepted] == [bytes([i]) * 100 for i in range(50)]
        await eventually(lambda: traffic.frames_received == traffic.frames_sent)
        messages = pair.hub.messages_sent + pair.agent.messages_sent
        assert traffic.frames_sent >= 100
        if protocol >= 3:
            assert traffic.frames_sent > messages  # batches: several frames per message
        else:
            assert traffic.frames_sent == messages


@pytest.mark.parametrize("protocol", [2, 3])
async def test_stream_contents_stay_byte_exact_under_concurrency(protocol: int) -> None:
    rng = random.Random(protocol)
    bodies = [rng.randbytes(rng.randrange(0, 20_000)) for _ in range(40)]
    async with running_pair(window=4096, protocol=protocol) as pair:

        async def send(stream: Stream, body: bytes) -> None:
            for start in range(0, len(body), 777):
                await stream.write(body[start : start + 777])
            stream.end()

        async def answer(stream: Stream) -> None:
            body = await read_all(stream)
            stream.send_head(Frame(FrameType.RESPONSE, stream.id, Flag.NONE, b"{}"))
            await send(stream, body[::-1])

        async def exchange(body: bytes) -> bytes:
            stream = open_request(pair.hub)
            await send(stream, body)
            await stream.head
            return await read_all(stream)

        answers = asyncio.gather(*(exchange(body) for body in bodies))
        accepted = await pair.accepted(len(bodies))
        await asyncio.gather(*(answer(stream) for stream in accepted))
        assert await answers == [body[::-1] for body in bodies]
        for link in (pair.hub_link, pair.agent_link):
            sent = link.sent
            if protocol >= 3:
                assert len(sent) < len(frames_in(sent))
            else:
                assert len(sent) == len(frames_in(sent))


async def test_a_batch_never_exceeds_the_peers_frame_limit() -> None:
    limit = 64 * 1024
    async with running_pair(window=1 << 20, protocol=3, send_max_frame=limit, recv_max_frame=limit) as pair:
        assert (
            pair.hub.batch_size == limit
            and Mux(pair.hub_link, opener=True, protocol=3).batch_size == MAX_BATCH
        )
        streams = [open_request(pair.hub) for _ in range(10)]
        for i, stream in enumerate(streams):
            await stream.write(bytes([i]) * 30_000)
            stream.end()
        accepted = await pair.accepted(10)
        assert [await read_all(s) for s in accepted] == [bytes([i]) * 30_000 for i in range(10)]
        assert max(len(m) for m in pair.hub_link.sent) <= limit
        assert not pair.agent.closed


async def test_body_frames_never_overtake_a_control_frame_left_for_the_next_batch() -> None:
    limit = 32 * 1024
    async with running_pair(protocol=3, send_max_frame=limit, recv_max_frame=limit) as pair:
        await eventually(lambda: pair.hub.messages_sent > 0)
        first, second = pair.hub.open_stream(), pair.hub.open_stream()
        # Two heads too large to share a message: the second waits for the next one, and so must its body.
        first.send_head(Frame(FrameType.OPEN, first.id, Flag.END, b"{}" + b" " * 15_000))
        second.send_head(Frame(FrameType.OPEN, second.id, Flag.NONE, b"{}" + b" " * 20_000))
        await second.write(b"after its head")
        second.end()
        _, accepted = await pair.accepted(2)
        assert await read_all(accepted) == b"after its head"
        assert not pair.agent.closed


async def test_a_hostile_batch_closes_the_tunnel_with_a_protocol_error() -> None:
    one = Frame(FrameType.PING, 0, Flag.NONE, b"12345678").encode()
    for message, reason in [
        (one + one[:7], "shorter than a header"),
        (one + HEADER.pack(FrameType.DATA, 0, 0, 1, 1000) + b"x", "runs past the end"),
        (one * (MAX_FRAME_SIZE // len(one) + 1), "exceeds the limit"),
    ]:
        async with running_pair(protocol=3) as pair:
            await pair.hub_link.send(message)
            await eventually(lambda: pair.agent.closed)
            assert pair.agent.close_code == CloseCode.PROTOCOL_ERROR
            assert reason in pair.agent.close_reason
            await eventually(lambda: pair.hub.closed)


async def test_a_batch_on_an_older_tunnel_is_a_protocol_error() -> None:
    one = Frame(FrameType.PING, 0, Flag.NONE, b"12345678").encode()
    async with running_pair(protocol=2) as pair:
        await pair.hub_link.send(one + one)
        await eventually(lambda: pair.agent.closed)
        assert pair.agent.close_code == CloseCode.PROTOCOL_ERROR
        assert "does not match" in pair.agent.close_reason


async def test_a_streams_first_body_frame_overtakes_body_frames_queued_before_it() -> None:
    """A stream's first body frame leaves with the control frames (right after its head),
    so a new request's body or an answer's first bytes never wait behind the body bytes
    other streams queued; the rest of a body keeps to the body queue, in order."""
    async with running_pair(protocol=3, window=65536, send_max_frame=1024, recv_max_frame=1024) as pair:
        await eventually(lambda: pair.hub.messages_sent > 0)
        before = len(pair.hub_link.sent)
        first = open_request(pair.hub)
        await first.write(b"a" * 5000)  # five frames, queued without yielding
        second = open_request(pair.hub)
        await second.write(b"b" * 10)
        first.end()
        second.end()
        accepted = await pair.accepted(2)
        assert [await read_all(s) for s in accepted] == [b"a" * 5000, b"b" * 10]
        frames = frames_in(pair.hub_link.sent[before:])
        assert [(f.type, f.stream_id) for f in frames[:5]] == [
            (FrameType.OPEN, first.id),
            (FrameType.DATA, first.id),
            (FrameType.OPEN, second.id),
            (FrameType.DATA, second.id),
            (FrameType.DATA, first.id),
        ]
        assert frames[3].end  # the second stream's end rode on its only frame
        assert pair.hub._queued_data == 0  # the first frames counted until they left


async def test_a_streams_end_is_a_frame_of_its_own_once_its_first_body_frame_left() -> None:
    async with running_pair(protocol=3) as pair:
        await eventually(lambda: pair.hub.messages_sent > 0)
        before = len(pair.hub_link.sent)
        stream = open_request(pair.hub)
        await stream.write(b"x")
        await eventually(lambda: len(pair.hub_link.sent) > before)  # OPEN and the byte are out
        stream.end()
        [accepted] = await pair.accepted(1)
        assert await read_all(accepted) == b"x"
        frames = frames_in(pair.hub_link.sent[before:])
        assert [(f.type, f.end) for f in frames] == [
            (FrameType.OPEN, False),
            (FrameType.DATA, False),
            (FrameType.DATA, True),
        ]
