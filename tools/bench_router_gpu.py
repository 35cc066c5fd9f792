"""The learned Flux router's cost per layer on one GPU: a random-weight Qwen3-4B-shaped bf16
checkpoint (bench_e2e_gpu.py's, max_position_embeddings raised to 135168 so that 128K prompts
are valid) gets random router tensors under the published key names
(model.layers.{i}.self_attn.mask_allocator.cls_feat_extractor.{0,2} and
...cls_router_head_agnostic.{0,2,4}, in a shard of their own), then `fluxattn bench --device
cuda` runs the `flux` router (full / streaming, sink 128 + window 2048) at each context and
prints request 0's wall time per routed layer (`route ms/layer`: from the moment the layer's
queries exist, the queries the router reads brought to it and the policy's call) with the
prefill time, for the router on the device and on the host (FLUXATTN_DEVICE_ROUTER=0)
alternated over --rounds.

Usage (on the GPU machine): python3 tools/bench_router_gpu.py --fluxattn BUNDLE/bin/fluxattn
    --work /tmp/router --out OUTDIR [--contexts 8192,32768,131072]
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_e2e_gpu import SHAPES, make_checkpoint  # noqa: E402


def add_router(folder, layers, head_dim, seed=0):
    """Random router tensors (the five linears of FluxLayerRouter::Load) in router.safetensors,
    listed in the checkpoint's index."""
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(seed)
    d = head_dim
    dims = [(d, 8 * d), (8 * d, 2 * d), (2 * d, 4 * d), (4 * d, d), (d, 2)]
    names = ["cls_feat_extractor.0", "cls_feat_extractor.2", "cls_router_head_agnostic.0",
             "cls_router_head_agnostic.2", "cls_router_head_agnostic.4"]
    tensors = {}
    for i in range(layers):
        prefix = f"model.layers.{i}.self_attn.mask_allocator."
        for (fan_in, fan_out), name in zip(dims, names):
            w = torch.randn(fan_out, fan_in) / fan_in ** 0.5
            tensors[f"{prefix}{name}.weight"] = w.to(torch.bfloat16).contiguous()
            tensors[f"{prefix}{name}.bias"] = torch.zeros(fan_out, dtype=torch.bfloat16)
    save_file(tensors, os.path.join(folder, "router.safetensors"))
    index_path = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index_path):
        index = json.load(open(index_path))
    else:  # one shard: make an index of it
        from safetensors import safe_open
        with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
            index = {"metadata": {}, "weight_map": {k: "model.safetensors" for k in f.keys()}}
    for k in tensors:
        index["weight_map"][k] = "router.safetensors"
    json.dump(index, open(index_path, "w"), indent=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fluxattn", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--contexts", default="8192,32768,131072")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    shape = json.loads(json.dumps(SHAPES["qwen3-4b"]))
    shape["kw"]["max_position_embeddings"] = 135168
    folder = os.path.join(args.work, "qwen3-4b-router")
    if not os.path.exists(os.path.join(folder, "router.safetensors")):
        make_checkpoint("qwen3-4b", shape, folder)
        add_router(folder, shape["kw"]["num_hidden_layers"], shape["kw"]["head_dim"])
    config = os.path.join(args.work, "flux.toml")
    with open(config, "w") as f:
        f.write(f'[model]\npath = "{folder}"\ndevice = "cuda"\n\n'
                '[backends.full]\nplugin = "full"\n\n'
                '[backends.sparse]\nplugin = "streaming"\nsink_tokens = 128\n'
                'window_tokens = 2048\nblock_size = 128\n\n'
                '[router]\nplugin = "flux"\nfull = "full"\nsparse = "sparse"\n\n'
                '[kv]\npool_mib = 40960\n')
    # The device router (the default) and the host one (FLUXATTN_DEVICE_ROUTER=0: the queries
    # it reads copied out, pooling and network on the CPU), alternated over the rounds.
    results = []
    for round_ in range(args.rounds):
        for where, switch in (("device", "1"), ("host", "0")):
            out_json = os.path.join(args.out, f"router-{where}-r{round_ + 1}.json")
            cmd = [args.fluxattn, "bench", "--config", config, "--context", args.contexts,
                   "--decode-tokens", "4", "--repeats", str(args.repeats), "--warmup", "1",
                   "--json", out_json]
            print(f"$ FLUXATTN_DEVICE_ROUTER={switch} " + " ".join(cmd), flush=True)
            env = dict(os.environ, FLUXATTN_DEVICE_ROUTER=switch)
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            print(proc.stdout, end="")
            if proc.returncode != 0:
                print(proc.stderr[-4000:], file=sys.stderr)
                sys.exit(1)
            for r in json.load(open(out_json))["bench"]:
                results.append((where, round_ + 1, r))
    print("\nrouter  round  context  prefill s  SA ratio  route ms/layer (mean)  route ms (most)")
    for where, round_, r in sorted(results, key=lambda x: (x[2]["context"], x[0], x[1])):
        print(f"{where:6s}  {round_:5d}  {r['context']:7d}  {r['prefill_seconds']:9.3f}  "
              f"{r['sa_ratio']:8.2f}  {r['route_ms_per_layer']:21.3f}  {r['route_ms_max']:15.3f}")
    json.dump([{"router": w, "round": n, **r} for w, n, r in results],
              open(os.path.join(args.out, "router.json"), "w"), indent=2)

if __name__ == "__main__":
    main()
