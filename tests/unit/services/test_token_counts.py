"""Token counts parsed from every engine's usage shape."""

from __future__ import annotations

import json

from inference_club.services.token_counts import StreamUsage, TokenCounts, from_answer, from_answer_tail

VLLM_USAGE = {
    "prompt_tokens": 12,
    "total_tokens": 20,
    "completion_tokens": 8,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 2},
    "num_cached": None,
}


def test_answer_with_nested_details() -> None:
    answer = {"id": "x", "choices": [], "usage": VLLM_USAGE}
    assert from_answer(json.dumps(answer).encode()) == TokenCounts(12, 8, 20)


def test_responses_and_ollama_native_shapes() -> None:
    responses = {
        "object": "response",
        "usage": {
            "input_tokens": 3,
            "output_tokens": 5,
            "total_tokens": 8,
            "input_tokens_details": {"cached_tokens": 0},
        },
    }
    assert from_answer(json.dumps(responses).encode()) == TokenCounts(3, 5, 8)
    ollama = {"model": "llama3", "done": True, "prompt_eval_count": 7, "eval_count": 9}
    assert from_answer(json.dumps(ollama).encode()) == TokenCounts(7, 9, 16)


def test_no_usage_or_not_json() -> None:
    assert from_answer(b'{"choices": []}') is None
    assert from_answer(b'{"usage": null}') is None
    assert from_answer(b"not json") is None
    assert from_answer(b'{"usage": {"prompt_tokens": true}}') is None


def _sse(*events: object) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def test_stream_usage_from_the_last_chunk_split_anywhere() -> None:
    raw = _sse(
        {"choices": [{"delta": {"content": "hi"}}], "usage": None}, {"choices": [], "usage": VLLM_USAGE}
    )
    for size in (1, 7, 64, len(raw)):
        watch = StreamUsage()
        for start in range(0, len(raw), size):
            watch.feed(raw[start : start + size])
        watch.close()
        assert watch.counts == TokenCounts(12, 8, 20) and watch.done and watch.started


def test_chunks_that_hold_nothing_watched_are_passed_over_and_the_end_still_counts() -> None:
    content = [{"choices": [{"delta": {"content": f"tok{i} "}}]} for i in range(50)]
    raw = _sse(*content, {"choices": [], "usage": VLLM_USAGE})
    events = raw.split(b"\n\n")[:-1]
    for size in (1, 5, 64, 1000):
        watch = StreamUsage()
        for event in events:  # one event a chunk, as engines send them, some split further
            piece = event + b"\n\n"
            for start in range(0, len(piece), size if size < 64 else len(piece)):
                watch.feed(piece[start : start + (size if size < 64 else len(piece))])
        watch.close()
        assert watch.started and watch.done and watch.counts == TokenCounts(12, 8, 20)
    cut = StreamUsage()
    for event in events[:-2]:  # the usage and [DONE] never came
        cut.feed(event + b"\n\n")
    cut.close()
    assert cut.started and not cut.done and cut.counts is None


def test_many_events_in_one_read_are_watched_from_the_first_marker_on() -> None:
    content = [{"choices": [{"delta": {"content": f"tok{i} "}}]} for i in range(20)]
    early = {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    raw = _sse(*content[:10], early, *content[10:], {"choices": [], "usage": VLLM_USAGE})
    events = [event + b"\n\n" for event in raw.split(b"\n\n")[:-1]]
    for per_read in (2, 5, 11, len(events)):
        watch = StreamUsage()
        watch.feed(events[0])  # a stream's first event usually comes alone
        for start in range(1, len(events), per_read):
            watch.feed(b"".join(events[start : start + per_read]))
        watch.close()
        assert watch.started and watch.done and watch.counts == TokenCounts(12, 8, 20)  # the last wins
    quoted = StreamUsage()  # a marker inside content is looked at, and changes nothing
    quoted.feed(events[0])
    quoted.feed(b"".join(events[1:4]) + b'data: {"choices": [{"delta": {"content": "\\"usage\\""}}]}\n\n')
    quoted.close()
    assert quoted.counts is None and not quoted.done


def test_a_whole_stream_in_one_read_and_usage_null_on_every_event() -> None:
    content = [{"choices": [{"delta": {"content": f"tok{i} "}}], "usage": None} for i in range(30)]
    raw = _sse(
        {"choices": [{"delta": {"role": "assistant"}}]}, *content, {"choices": [], "usage": VLLM_USAGE}
    )
    for cut in (len(raw), len(raw) // 2, 7):  # all of it in one read, or in two
        watch = StreamUsage()
        watch.feed(raw[:cut])
        watch.feed(raw[cut:])
        watch.close()
        assert watch.started and watch.done and watch.counts == TokenCounts(12, 8, 20)


def test_lines_are_passed_over_up_to_the_usage_and_no_further() -> None:
    content = [{"choices": [{"delta": {"content": f"token number {i} "}}]} for i in range(40)]
    raw = _sse(
        {"choices": [{"delta": {"role": "assistant"}}]}, *content, {"choices": [], "usage": VLLM_USAGE}
    )
    first = raw.index(b"\n\n") + 2
    for reads in ([raw], [raw[:first], raw[first:]]):  # the first event in the read, or alone
        watch = StreamUsage()
        for read in reads:
            watch.feed(read)
        assert watch.counts == TokenCounts(12, 8, 20) and watch.done  # before close: read in place


def test_stream_events_without_usage_and_empty_streams() -> None:
    watch = StreamUsage()
    watch.feed(b'event: response.created\ndata: {"type": "response.created"}\n\n')
    watch.feed(
        b'event: response.completed\ndata: {"type": "response.completed", "response": {"usage": '
        b'{"input_tokens": 1, "output_tokens": 2}}}'
    )
    watch.close()
    assert watch.counts == TokenCounts(1, 2, 3) and not watch.done
    empty = StreamUsage()
    empty.feed(b"\n\n: keep-alive comment\n\n")
    empty.close()
    assert not empty.started and empty.counts is None


def test_an_overlong_line_is_skipped_not_buffered() -> None:
    watch = StreamUsage(max_line=32)
    watch.feed(b"data: " + b"x" * 100)
    watch.feed(b"y" * 100 + b"\n")
    watch.feed(b'data: {"usage": {"prompt_tokens": 1, "completion_tokens": 1}}\n')
    watch.close()
    assert watch.counts == TokenCounts(1, 1, 2)


def test_the_tail_of_a_long_answer() -> None:
    answer = json.dumps(
        {"data": [{"embedding": [0.5] * 5000}], "usage": VLLM_USAGE, "extra": {"x": 1}}
    ).encode()
    assert from_answer_tail(answer[-300:], complete=False) == TokenCounts(12, 8, 20)
    assert from_answer_tail(answer, complete=True) == TokenCounts(12, 8, 20)
    assert from_answer_tail(b'], "usage": {"prompt_tokens": 1, "completion', complete=False) is None
    assert from_answer_tail(b"no usage here", complete=False) is None
