#!/usr/bin/env python3
"""Writes the bundled Hugging Face folder of the demo model (models/demo/flux-tiny).

Inputs: the base checkpoint (train.py base: model-*.safetensors, or an exported folder's
model.safetensors), the router checkpoint
(train.py router: router-*.safetensors) and the tokenizer folder (train_tokenizer.py). Output:
config.json (PawQwen3ForCausalLM with pooling_mode, pool_size, use_softmax, toggle_type,
sink_size, local_window_size), model.safetensors in bfloat16 (Qwen3 tensors, tied embeddings,
and the router tensors under the official names model.layers.{i}.self_attn.mask_allocator.*),
tokenizer.json, tokenizer_config.json and generation_config.json. With --check, loads the folder
with transformers' Qwen3ForCausalLM (which ignores the router tensors) and compares its logits
with this project's PyTorch forward.

Usage: export.py --base DIR --router DIR --tokenizer DIR --out models/demo/flux-tiny [--check]
"""

import argparse
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402
from train import load_shards  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True)
    p.add_argument("--router", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    exported = os.path.join(args.base, "model.safetensors")
    if os.path.isfile(exported):  # an exported folder (its bfloat16 values are kept exactly)
        state = {n: t.float() for n, t in load_file(exported).items()}
    else:
        state = load_shards(args.base, "model")
    state = {n: t for n, t in state.items() if "mask_allocator" not in n}
    router = load_shards(args.router, "router")
    state.update(router)
    m = M.DemoModel()
    m.load_state_dict(state, strict=True)
    os.makedirs(args.out, exist_ok=True)
    tensors = {n: t.to(torch.bfloat16).contiguous() for n, t in m.state_dict().items()}
    save_file(tensors, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(M.config_json(), f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 0, "eos_token_id": 0, "do_sample": False,
                   "max_new_tokens": 32}, f, indent=2)
        f.write("\n")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(args.tokenizer, name), os.path.join(args.out, name))
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"{args.out}: {size / 1e6:.1f} MB, {M.count_parameters(m) / 1e6:.2f} M parameters")
    if args.check:
        from transformers import Qwen3ForCausalLM
        hf = Qwen3ForCausalLM.from_pretrained(args.out, torch_dtype=torch.float32).eval()
        ours = M.DemoModel()
        ours.load_state_dict({n: t.float() for n, t in tensors.items()}, strict=True)
        ours.eval()
        ids = torch.randint(0, M.CONFIG["vocab_size"], (2, 300), generator=torch.Generator()
                            .manual_seed(3))
        with torch.no_grad():
            a = hf(ids).logits
            b = ours(ids)
        err = (a - b).abs().max().item()
        print(f"transformers Qwen3ForCausalLM vs PyTorch forward: max |logit diff| {err:.2e}")
        if err > 1e-3:
            raise SystemExit("the exported folder does not match")


if __name__ == "__main__":
    main()
