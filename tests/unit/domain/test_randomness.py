import os
import threading

from inference_club.domain import randomness
from inference_club.domain.randomness import RandomBlock, random_hex


def test_draws_never_repeat_across_blocks() -> None:
    block = RandomBlock(size=64)
    draws = [block.take(12) for _ in range(200)]  # crosses dozens of block boundaries
    assert all(len(d) == 12 for d in draws)
    assert len(set(draws)) == len(draws)


def test_a_draw_larger_than_a_block_comes_whole() -> None:
    block = RandomBlock(size=16)
    assert len(block.take(40)) == 40
    assert len(block.take(16)) == 16


def test_threads_drawing_at_once_get_distinct_bytes() -> None:
    block = RandomBlock(size=256)
    seen: list[bytes] = []

    def draw() -> None:
        seen.extend(block.take(8) for _ in range(2000))

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8000
    assert len(set(seen)) == 8000


def test_a_forked_child_does_not_reuse_its_parents_block() -> None:
    random_hex(4)  # the parent holds a block with bytes left
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next draw and leave at once
        os.write(write, randomness.random_bytes(16))
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16
    assert child != randomness.random_bytes(16)  # both drew the first bytes after the fork


def test_random_hex_is_twice_as_long() -> None:
    value = random_hex(12)
    assert len(value) == 24
    int(value, 16)
