"""A real llama.cpp engine for tests: a tiny random-weight GGUF model and its server.

The model is built so every request runs to `max_tokens` and emits printable ASCII only,
which makes token counts and stream lengths predictable. Weights come from a fixed seed,
so the same arguments always write the same file.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from inference_club.testing.servers import ProcessHandle

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# A few merges: the gpt2 tokenizer needs a merge list, and real merges exercise it.
_MERGES = (("Ġ", "t"), ("h", "e"), ("i", "n"), ("e", "r"), ("a", "n"), ("o", "n"), ("Ġ", "a"))
_PRINTABLE = range(0x20, 0x7F)
# Logit penalty per unit of the always-on embedding channel; large enough to never sample.
_BANNED_WEIGHT = -100.0


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    visible = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping = {byte: chr(byte) for byte in visible}
    extra = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def _vocabulary() -> tuple[list[str], list[int], list[str], set[int]]:
    """(tokens, token types, merges, ids allowed in output)."""
    from gguf import TokenType

    byte_chars = _byte_to_unicode()
    tokens = [byte_chars[byte] for byte in range(256)]
    types = [int(TokenType.NORMAL)] * 256
    allowed = set(_PRINTABLE)
    merges = []
    for left, right in _MERGES:
        merges.append(f"{left} {right}")
        tokens.append(left + right)
        types.append(int(TokenType.NORMAL))
        allowed.add(len(tokens) - 1)  # merges above are made of printable bytes only
    for special in SPECIAL_TOKENS:
        tokens.append(special)
        types.append(int(TokenType.CONTROL))
    return tokens, types, merges, allowed


def write_tiny_llama(
    path: Path | str,
    *,
    embedding_length: int = 64,
    block_count: int = 2,
    head_count: int = 4,
    context_length: int = 2048,
    seed: int = 0,
) -> Path:
    """Write a tiny llama GGUF (≈0.7 MB with the defaults) that llama.cpp loads and serves."""
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, types, merges, allowed = _vocabulary()
    n_vocab, n_embd, n_ff = len(tokens), embedding_length, embedding_length * 2
    head_dim = n_embd // head_count

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(block_count)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(head_count)
    writer.add_head_count_kv(head_count)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # "gpt2" without the hyphen is an unknown pre-tokenizer
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)
    # Without a pooling type /v1/embeddings answers one vector per token, not per input.
    writer.add_pooling_type(gguf.PoolingType.MEAN)

    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 0.02, shape).astype(np.float32)

    ones = np.ones(n_embd, dtype=np.float32)
    # numpy shapes are ggml's ne[] reversed: token_embd is (n_vocab, n_embd).
    token_embd = weights(n_vocab, n_embd)
    token_embd[:, 0] = 1.0  # a constant channel that survives to the last hidden state
    output = weights(n_vocab, n_embd)
    output[:, 0] = 0.0
    banned = [token for token in range(n_vocab) if token not in allowed]
    output[banned, 0] = _BANNED_WEIGHT  # EOS, specials, control and non-ASCII bytes

    writer.add_tensor("token_embd.weight", token_embd)
    for block in range(block_count):
        prefix = f"blk.{block}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", ones)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{prefix}.{name}.weight", weights(n_embd, n_embd))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", ones)
        writer.add_tensor(f"{prefix}.ffn_gate.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"{prefix}.ffn_up.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"{prefix}.ffn_down.weight", weights(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def start_llama_server(
    model_path: Path | str,
    port: int,
    alias: str,
    embedding: bool = True,
    *,
    host: str = "127.0.0.1",
    n_ctx: int = 512,
    log_path: Path | str | None = None,
) -> ProcessHandle:
    """Start llama-cpp-python's OpenAI-compatible server; wait for it with
    `handle.wait_http(f"http://{host}:{port}/v1/models")`."""
    model_path = Path(model_path)
    args = [
        "-m", "llama_cpp.server",
        "--model", str(model_path),
        "--host", host,
        "--port", str(port),
        "--model_alias", alias,
        "--n_ctx", str(n_ctx),
        "--embedding", str(embedding),
        # The default True silently cuts a running stream short when another request arrives.
        "--interrupt_requests", "False",
    ]  # fmt: skip
    log = Path(log_path) if log_path else model_path.with_name(f"llama-server-{port}.log")
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    return ProcessHandle.python(*args, log_path=log, env=env)
