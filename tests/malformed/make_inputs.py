#!/usr/bin/env python3
"""Writes the malformed inputs of tests/malformed/ (deterministic; the files are committed).

Each input is broken in exactly one way; malformed_test.cc lists what error each one must give.
Run from anywhere: python3 tests/malformed/make_inputs.py
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(rel, data):
    path = os.path.join(HERE, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))


def safetensors(header, data=b"", declared_size=None):
    """A safetensors file: 8-byte little-endian header size, JSON header, data."""
    text = json.dumps(header, separators=(",", ":")).encode()
    size = len(text) if declared_size is None else declared_size
    return struct.pack("<Q", size) + text + data


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def main():
    # Engine configs (TOML).
    write("toml/deep_arrays.toml", "x = " + "[" * 5000 + "]" * 5000 + "\n")
    write("toml/deep_inline_tables.toml", "x = " + "{a = " * 3000 + "1" + " }" * 3000 + "\n")
    write("toml/deep_dotted_keys.toml",
          "[backends.full]\nplugin = \"full\"\n" + ".".join(["k"] * 2000) + " = 1\n")
    write("toml/non_utf8.toml", b"[model]\npath = \"m\xff\xfe\"\n")
    write("toml/wrong_type.toml", "[model]\nthreads = \"four\"\n")
    write("toml/negative_threads.toml", "[model]\nthreads = -3\n")
    write("toml/unknown_section.toml", "[modle]\npath = \"m\"\n")
    write("toml/truncated.toml", "[backends.full]\nplugin = \"fu")

    # tokenizer.json.
    base = {
        "version": "1.0", "added_tokens": [], "normalizer": None, "post_processor": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
    }
    text = json.dumps(base).encode()
    write("tokenizer/non_utf8_token.json", text.replace(b'"ab": 2', b'"a\xffb": 2'))
    write("tokenizer/truncated.json", text[: len(text) // 2])
    bad = json.loads(json.dumps(base))
    bad["model"]["vocab"]["ab"] = "two"
    write("tokenizer/wrong_id_type.json", json.dumps(bad))
    bad = json.loads(json.dumps(base))
    bad["model"]["vocab"]["ab"] = 2**40
    write("tokenizer/absurd_id.json", json.dumps(bad))
    bad = json.loads(json.dumps(base))
    bad["model"]["merges"] = ["a b c"]
    write("tokenizer/bad_merge.json", json.dumps(bad))
    bad = json.loads(json.dumps(base))
    bad["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "(unclosed"},
                            "behavior": "Isolated"}
    write("tokenizer/bad_regex.json", json.dumps(bad))
    write("tokenizer/deep_nesting.json", "[" * 20000 + "]" * 20000)

    # Prompts that are not UTF-8.
    write("prompts/lone_continuation.txt", b"hello \x80 world")
    write("prompts/overlong_slash.txt", b"a\xc0\xafb")
    write("prompts/surrogate.txt", b"x\xed\xa0\x80y")
    write("prompts/truncated_sequence.txt", b"caf\xc3")
    write("prompts/above_unicode.txt", b"\xf4\x90\x80\x80")

    # safetensors.
    ok_header = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    good = safetensors(ok_header, f32([1, 2, 3, 4]))
    write("safetensors/too_short.safetensors", b"\x10\x00\x00")
    write("safetensors/truncated_header.safetensors", good[:20])
    write("safetensors/huge_header_size.safetensors",
          safetensors(ok_header, f32([1, 2, 3, 4]), declared_size=2**62))
    write("safetensors/header_not_json.safetensors",
          struct.pack("<Q", 12) + b"{not json!!}" + f32([1, 2, 3, 4]))
    write("safetensors/offsets_past_end.safetensors", safetensors(
        {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 1600]}}, f32([1, 2, 3, 4])))
    write("safetensors/overlapping.safetensors", safetensors(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
         "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, f32([1, 2, 3])))
    write("safetensors/size_mismatch.safetensors", safetensors(
        {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}}, f32([1, 2, 3, 4])))
    write("safetensors/shape_overflow.safetensors", safetensors(
        {"w": {"dtype": "F32", "shape": [2**40, 2**40, 2**40], "data_offsets": [0, 16]}},
        f32([1, 2, 3, 4])))
    write("safetensors/negative_dim.safetensors", safetensors(
        {"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, f32([1, 2, 3, 4])))
    write("safetensors/unknown_dtype.safetensors", safetensors(
        {"w": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}}, f32([1, 2, 3, 4])))
    write("safetensors/reversed_offsets.safetensors", safetensors(
        {"w": {"dtype": "F32", "shape": [0], "data_offsets": [16, 0]}}, f32([1, 2, 3, 4])))
    header = b'{"w\xff":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    write("safetensors/non_utf8_name.safetensors",
          struct.pack("<Q", len(header)) + header + f32([1]))

    # config.json of a model (each names one offending key).
    config = {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_hidden_layers": 2, "vocab_size": 1000, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "eos_token_id": 0,
    }

    def config_with(name, **changes):
        c = dict(config)
        c.update(changes)
        write("model_config/%s.json" % name, json.dumps(c))

    config_with("hidden_size_string", hidden_size="64")
    config_with("hidden_size_negative", hidden_size=-64)
    config_with("hidden_size_absurd", hidden_size=2**40)
    config_with("layers_absurd", num_hidden_layers=2**31)
    config_with("vocab_size_absurd", vocab_size=2**40)
    config_with("heads_zero", num_attention_heads=0)
    config_with("heads_not_dividing", num_attention_heads=5)
    config_with("kv_heads_not_dividing", num_key_value_heads=3)
    config_with("eps_float_string", rms_norm_eps="tiny")
    write("model_config/non_utf8.json",
          json.dumps(config).encode().replace(b'"qwen2"', b'"qw\xffen2"'))
    write("model_config/truncated.json", json.dumps(config)[:40])


if __name__ == "__main__":
    main()
