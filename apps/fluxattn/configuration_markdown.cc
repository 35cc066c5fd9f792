#include "configuration_markdown.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

namespace fluxattn::cli {
namespace {

// One documented key of a core section.
struct CoreKey {
  const char* key;
  const char* type;
  const char* default_text;  // "required" when it must be given
  const char* range;
  const char* description;
};

struct CoreSection {
  const char* table;
  const char* intro;
  std::vector<CoreKey> keys;
};

// The keys core/src/config.cc accepts (tests/sdk parses a config using each of them).
const std::vector<CoreSection>& CoreSections() {
  static const auto* sections = new std::vector<CoreSection>{
      {"[model]",
       "The checkpoint and where it runs.",
       {{"path", "string", "required to run a model", "a folder",
         "Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json); relative "
         "to the config file's folder"},
        {"device", "string", "\"cpu\"", "\"cpu\", \"cuda\", \"cuda:N\"",
         "Where the model, its KV pool and attention run (`--device` overrides it)"},
        {"dtype", "string", "the device's", "\"f32\" or \"bf16\"",
         "Activation type. CPU: the activations the matrix products take, f32 (the default) or "
         "bf16 (rounded to bfloat16, AVX512-BF16 dot products for bf16 weights where the CPU has "
         "them, llama.cpp's numerics for bf16 checkpoints); weights read as stored, norms, "
         "attention and the f32 KV cache unchanged. CUDA: bf16 (the default: weights converted "
         "to bf16 on load, bf16 activations and KV cache, f32 accumulation) or f32 (weights, "
         "activations, KV cache and attention in float32, full-precision GEMMs: the reference "
         "path that gives the CPU's tokens, much slower)"},
        {"threads", "integer", "0", "[0, 4096]", "CPU threads; 0 = hardware concurrency"}}},
      {"[kv]",
       "The KV page pool of the model's device: one allocation for K and one for V, handed out "
       "in pages to every layer of every request.",
       {{"page_tokens", "integer", "64", "[1, 65536]", "Tokens per KV page"},
        {"pool_mib", "integer", "0", "[0, 1073741824]",
         "Size of the pool (K and V) in MiB; 0: the smaller of 1 GiB (16 GiB on cuda) and 16 "
         "sequences of max_position_embeddings tokens"}}},
      {"[attention]",
       "How the core attention kernels run.",
       {{"dense_prefill", "string", "\"auto\"", "\"auto\", \"cudnn\", \"fluxattn\"",
         "On cuda, the kernel of dense causal prefill (layers whose layout reads every causal "
         "pair): cuDNN's fused attention (`cudnn`, an error where the build or the machine has "
         "no cuDNN), the library's own block-sparse kernel (`fluxattn`), or cuDNN where it "
         "loads (`auto`); on the cpu only `auto` and `fluxattn`, which are the same"}}},
      {"[scheduler]",
       "How the engine fills its steps.",
       {{"prefill_chunk_tokens", "integer", "0 (`fluxattn serve`: 256)", "0 .. 16777216",
         "The most prompt tokens one step runs, over all prefilling requests: a longer prompt "
         "runs chunk by chunk over several steps, beside the decode tokens of running requests, "
         "which then wait at most one chunk. 0 runs every admitted prompt whole. Chunks never "
         "change a result: a request whose routing policy reads the queries of the prompt's "
         "last rows (`flux`) runs its prompt whole"},
        {"max_step_tokens", "integer", "0", "0 .. 16777216",
         "The most tokens one step runs: decode rows of the running requests plus prompt "
         "tokens. A prompt that must run whole (see prefill_chunk_tokens) and is longer fails "
         "with an error naming its length and this key; the other requests go on. When set, "
         "the model's device memory for steps of this many tokens and max_batch requests is "
         "asked for once, when the engine starts (an error names what it needs and what is "
         "free), so that no step allocates. 0: no limit, memory asked for as steps grow"},
        {"max_batch", "integer", "0", "0 .. 65536",
         "The most requests one step runs (decoding and prefilling); later requests wait in the "
         "queue. 0: no limit (with max_step_tokens set, the reservation then counts "
         "max_step_tokens requests, whose logits alone take max_step_tokens x vocab floats)"}}},
      {"[plugins]",
       "Where plugins are searched, before `FLUXATTN_PLUGIN_PATH` and "
       "`<exe>/../lib/fluxattn/plugins`.",
       {{"paths", "string list", "[]", "existing folders",
         "Plugin folders scanned for libfluxattn_*.so; relative to the config file's folder"}}},
      {"[backends.<name>]",
       "One attention backend instance per table; `<name>` is how the router and [layers.N] "
       "refer to it. `prefill_with` / `decode_with` hand one phase of the layers routed to this "
       "instance to another instance (which serves it itself: no chains); the decode instance "
       "also decides which KV stays once the prompt is done. The other keys are the plugin's "
       "parameters (see below).",
       {{"plugin", "string", "required", "a plugin name, or a path to a plugin file (has a '/')",
         "The attention plugin this instance is made from"},
        {"prefill_with", "string", "this instance", "another [backends.<name>] name",
         "The instance that runs the prompts of the layers routed here"},
        {"decode_with", "string", "this instance", "another [backends.<name>] name",
         "The instance that runs the decode steps of the layers routed here"}}},
      {"[router]",
       "The routing policy that picks full or sparse attention per request and layer. May be "
       "left out when exactly one backend is configured. The other keys are the plugin's "
       "parameters (see below).",
       {{"plugin", "string", "required", "a plugin name, or a path to a plugin file",
         "The routing plugin"},
        {"full", "string", "required", "a [backends.<name>] name",
         "Backend used when the router picks full attention"},
        {"sparse", "string", "required", "a [backends.<name>] name",
         "Backend used when the router picks sparse attention"}}},
      {"[routers.<name>]",
       "Further routing policy instances that a policy can delegate to (e.g. `length`). The "
       "other keys are the plugin's parameters.",
       {{"plugin", "string", "required", "a plugin name, or a path to a plugin file",
         "The routing plugin"}}},
      {"[layers.<i>]",
       "Fixes layer `<i>` (0-based) to one backend regardless of the router.",
       {{"backend", "string", "required", "a [backends.<name>] name",
         "The backend every request uses at this layer"}}},
  };
  return *sections;
}

std::string Cell(const std::string& text) { return absl::StrReplaceAll(text, {{"|", "\\|"}}); }

std::string Range(const ParamSpec& spec) {
  const bool integral = spec.type == ParamType::kInt || spec.type == ParamType::kIntList;
  auto number = [&](double v) {
    return integral ? absl::StrCat(static_cast<int64_t>(v)) : ParamValueToString(ParamValue(v));
  };
  std::vector<std::string> parts;
  if (spec.min_value && spec.max_value) {
    parts.push_back(absl::StrCat("[", number(*spec.min_value), ", ", number(*spec.max_value), "]"));
  } else if (spec.min_value) {
    parts.push_back(absl::StrCat(">= ", number(*spec.min_value)));
  } else if (spec.max_value) {
    parts.push_back(absl::StrCat("<= ", number(*spec.max_value)));
  }
  if (!spec.choices.empty()) {
    std::vector<std::string> quoted;
    for (const std::string& c : spec.choices) quoted.push_back(absl::StrCat("\"", c, "\""));
    parts.push_back(absl::StrCat("one of ", absl::StrJoin(quoted, ", ")));
  }
  return parts.empty() ? "any" : absl::StrJoin(parts, "; ");
}

void AppendTableHeader(std::string& out) {
  absl::StrAppend(&out, "| key | type | default | range | description |\n",
                  "| --- | --- | --- | --- | --- |\n");
}

void AppendPlugin(std::string& out, const PluginInfo& info) {
  absl::StrAppend(&out, "### `", info.name, "` (", info.version, ")\n\n", info.summary, "\n\n");
  if (info.params.empty()) {
    absl::StrAppend(&out, "No parameters.\n\n");
    return;
  }
  AppendTableHeader(out);
  for (const ParamSpec& spec : info.params) {
    absl::StrAppend(&out, "| `", spec.name, "` | ", ParamTypeName(spec.type), " | ",
                    spec.default_value ? Cell(ParamValueToString(*spec.default_value))
                                       : std::string("required"),
                    " | ", Cell(Range(spec)), " | ", Cell(spec.description), " |\n");
  }
  absl::StrAppend(&out, "\n");
}

}  // namespace

std::string ConfigurationMarkdown(const std::vector<PluginInfo>& plugins) {
  std::string out =
      "# Configuration reference\n\n"
      "<!-- Generated by `fluxattn plugins --markdown` from the core's config keys and the "
      "plugins' own parameter descriptions; do not edit by hand. tests/sdk fails when this file "
      "is out of date; regenerate with tools/update-config-doc.sh. -->\n\n"
      "An engine configuration is one TOML file. The core checks its own sections; each "
      "plugin's parameters are checked against that plugin's declared types, defaults and "
      "ranges before the plugin sees them. Every error names the file, line and key, what was "
      "expected and what was found. Relative paths are resolved against the config file's "
      "folder.\n\n"
      "```toml\n"
      "[model]\npath = \"models/demo\"\n\n"
      "[backends.full]\nplugin = \"full\"\n\n"
      "[backends.sparse]\nplugin = \"streaming\"\nsink_tokens = 128\nwindow_tokens = 2048\n\n"
      "[router]\nplugin = \"static\"\nfull = \"full\"\nsparse = \"sparse\"\n"
      "```\n\n"
      "## Core sections\n\n";
  for (const CoreSection& section : CoreSections()) {
    absl::StrAppend(&out, "### `", section.table, "`\n\n", section.intro, "\n\n");
    AppendTableHeader(out);
    for (const CoreKey& key : section.keys) {
      absl::StrAppend(&out, "| `", key.key, "` | ", key.type, " | ", Cell(key.default_text), " | ",
                      Cell(key.range), " | ", Cell(key.description), " |\n");
    }
    absl::StrAppend(&out, "\n");
  }
  std::vector<const PluginInfo*> sorted;
  for (const PluginInfo& info : plugins) sorted.push_back(&info);
  std::sort(sorted.begin(), sorted.end(), [](const PluginInfo* a, const PluginInfo* b) {
    return std::make_pair(a->kind, a->name) < std::make_pair(b->kind, b->name);
  });
  for (PluginKind kind : {PluginKind::kAttentionBackend, PluginKind::kRoutingPolicy}) {
    absl::StrAppend(&out, kind == PluginKind::kAttentionBackend
                              ? "## Attention backends (`[backends.<name>]`)\n\n"
                              : "## Routing policies (`[router]`, `[routers.<name>]`)\n\n");
    int shown = 0;
    for (const PluginInfo* info : sorted) {
      if (info->kind != kind) continue;
      AppendPlugin(out, *info);
      ++shown;
    }
    if (shown == 0) absl::StrAppend(&out, "None bundled.\n\n");
  }
  // One trailing newline.
  while (out.size() > 1 && out[out.size() - 1] == '\n' && out[out.size() - 2] == '\n') {
    out.pop_back();
  }
  return out;
}

}  // namespace fluxattn::cli
