// The demo `gpumod serve` runs with no config: one simulated 24 GiB GPU (NVML when a card is
// present) and the predecessor's QA services, each played by the bundled test engine with short
// load times. examples/demo/ holds the same config as files (a test keeps the two in step).
#include "config/config.hpp"

namespace gpumod::config {
namespace {

constexpr const char* kEmbeddedDefault = R"yaml(
listen: "127.0.0.1:7979"
gpus:
  probe: auto
  sim:
    - name: "gpumod simulated GPU"
      memory_mb: 24576
  sim_release_lag: 300ms
policy:
  headroom_mb: 512
  stop_grace: 5s

presets:
  - id: vllm-embedding-code
    name: "Code embeddings (vLLM protocol, test engine)"
    driver: vllm
    port: 8210
    vram_mb: 2500
    model_id: Qwen/Qwen3-Embedding-0.6B
    supports_sleep: true
    sleep_mode: l1
    sleep_vram_mb: 250
    unit_vars: {gpu_mem_util: "0.11"}  # vLLM claims this share of the GPU; checked before a start
    startup_timeout: 30
    priority: 60
    cmd: ["${GPUMOD_BIN_DIR}/gpumod-test-engine", "--port", "8210", "--protocol", "vllm",
          "--model", "Qwen/Qwen3-Embedding-0.6B", "--vram-mb", "2500", "--load-ms", "600",
          "--wake-ms", "100", "--sleep-residual-mb", "250"]

  - id: qwen3-coder
    name: "Qwen3 Coder (llama.cpp router protocol, test engine)"
    driver: llamacpp
    port: 7070
    vram_mb: 20000
    model_id: qwen3-coder-30b-a3b
    models: [qwen3-coder-30b-a3b]
    aliases: [coder]
    supports_sleep: true
    sleep_mode: router
    sleep_vram_mb: 400
    startup_timeout: 30
    cmd: ["${GPUMOD_BIN_DIR}/gpumod-test-engine", "--port", "7070", "--protocol", "router",
          "--model", "qwen3-coder-30b-a3b", "--models", "qwen3-coder-30b-a3b", "--vram-mb", "20000",
          "--load-ms", "1500", "--wake-ms", "800", "--sleep-residual-mb", "400"]

  - id: vllm-embedding
    name: "Text embeddings (vLLM protocol, test engine)"
    driver: vllm
    port: 8200
    vram_mb: 5000
    model_id: BAAI/bge-m3
    aliases: [embedding]
    supports_sleep: false
    sleep_mode: none
    unit_vars: {gpu_mem_util: "0.21"}  # vLLM claims this share of the GPU; checked before a start
    startup_timeout: 30
    cmd: ["${GPUMOD_BIN_DIR}/gpumod-test-engine", "--port", "8200", "--protocol", "vllm",
          "--model", "BAAI/bge-m3", "--vram-mb", "5000", "--load-ms", "800"]

  - id: nemotron-3-nano
    name: "Nemotron 3 Nano (llama.cpp router protocol, test engine)"
    driver: llamacpp
    port: 7070
    vram_mb: 20000
    model_id: nemotron-3-nano-30b-a3b
    models: [nemotron-3-nano-30b-a3b]
    supports_sleep: false
    sleep_mode: none
    startup_timeout: 30
    cmd: ["${GPUMOD_BIN_DIR}/gpumod-test-engine", "--port", "7070", "--protocol", "router",
          "--model", "nemotron-3-nano-30b-a3b", "--models", "nemotron-3-nano-30b-a3b",
          "--vram-mb", "20000", "--load-ms", "1200"]

  - id: devstral-small-2
    name: "Devstral Small 2 (vLLM protocol, test engine)"
    driver: vllm
    port: 8000
    vram_mb: 15000
    model_id: mistralai/Devstral-Small-2-24B-Instruct-2512
    aliases: [devstral]
    supports_sleep: true
    sleep_mode: l1
    sleep_vram_mb: 1500
    unit_vars: {gpu_mem_util: "0.62"}  # vLLM claims this share of the GPU; checked before a start
    startup_timeout: 30
    cmd: ["${GPUMOD_BIN_DIR}/gpumod-test-engine", "--port", "8000", "--protocol", "vllm",
          "--model", "mistralai/Devstral-Small-2-24B-Instruct-2512", "--vram-mb", "15000",
          "--load-ms", "1500", "--wake-ms", "400", "--sleep-residual-mb", "1500"]

modes:
  - id: blank
    name: Blank
    description: "Only the code embedding service"
    services: [vllm-embedding-code]
  - id: code
    name: Code
    description: "Code embeddings and the Qwen3 coder"
    services: [vllm-embedding-code, qwen3-coder]
  - id: rag
    name: RAG
    description: "Code and text embeddings"
    services: [vllm-embedding-code, vllm-embedding]
  - id: nemotron
    name: Nemotron
    description: "Code embeddings and Nemotron 3 Nano"
    services: [vllm-embedding-code, nemotron-3-nano]
)yaml";

}  // namespace

LoadResult embedded_default(const LoadOptions& opts) {
  LoadResult result = load_daemon_string(kEmbeddedDefault, "embedded default", opts);
  if (result.config) result.config->source = "embedded default";
  return result;
}

}  // namespace gpumod::config
