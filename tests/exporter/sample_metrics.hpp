// A Metrics instance that looks like a daemon after some real work: the predecessor's 24 GB
// QA box plus a second GPU, its services, modes, and at least one event of every kind, so that
// every family renders at least one sample. Shared by the exporter and Grafana tests.
#pragma once

#include <string>
#include <vector>

#include "exporter/metrics.hpp"

namespace gpumod::test {

inline const std::vector<std::string>& sample_services() {
  static const std::vector<std::string> ids = {"vllm-embedding-code", "qwen3-coder", "vllm-embedding",
                                               "nemotron-3-nano", "devstral-small-2"};
  return ids;
}

inline void populate_sample(exporter::Metrics& m) {
  constexpr std::int64_t kMiB = 1024 * 1024;
  m.register_gpu(0, "GPU-8f3c1e2a-0000-4000-8000-000000000000", "NVIDIA GeForce RTX 4090");
  m.register_gpu(1, "GPU-8f3c1e2a-0000-4000-8000-000000000001", "NVIDIA GeForce RTX 4090");
  m.set_services(sample_services());
  m.set_modes({"blank", "code", "rag", "nemotron"});
  m.set_probe_up(true);
  m.inc_probe_errors();
  m.set_gpu_memory(0, 24564 * kMiB, 23000 * kMiB, 1564 * kMiB, 22500 * kMiB);
  m.set_gpu_memory(1, 24564 * kMiB, 15 * kMiB, 24549 * kMiB, 0);
  m.set_gpu_telemetry(0, 0.93, 71.0, 402.5);
  m.set_gpu_telemetry(1, 0.0, 34.0, 21.0);

  m.set_service_vram("vllm-embedding-code", 2500 * kMiB, 2430 * kMiB);
  m.set_service_vram("qwen3-coder", 20000 * kMiB, 20410 * kMiB);
  m.set_service_vram("vllm-embedding", 5000 * kMiB, std::nullopt);
  m.set_service_vram("nemotron-3-nano", 20000 * kMiB, std::nullopt);
  m.set_service_vram("devstral-small-2", 15000 * kMiB, 1200 * kMiB);
  for (const auto& svc : sample_services()) {
    m.set_service_state(svc, "starting");
    m.inc_service_start(svc);
    m.observe_start_seconds(svc, 42.0);
    m.set_service_state(svc, "ready");
  }
  m.inc_service_start_failure("nemotron-3-nano");
  m.set_service_state("nemotron-3-nano", "failed");
  m.set_service_state("vllm-embedding", "stopped");
  m.inc_eviction("vllm-embedding", "stop");
  m.inc_eviction("devstral-small-2", "sleep");
  m.inc_sleep("devstral-small-2");
  m.set_service_state("devstral-small-2", "sleeping");
  m.inc_wake("devstral-small-2");
  m.observe_wake_seconds("devstral-small-2", 0.8);
  m.set_service_state("devstral-small-2", "waking");
  m.set_active_leases("qwen3-coder", 2);
  m.inc_proxied_request("qwen3-coder", "/v1/chat/completions", 200);
  m.inc_proxied_request("qwen3-coder", "/v1/chat/completions", 502);
  m.inc_proxied_request("vllm-embedding-code", "/v1/embeddings", 200);

  m.set_queue(3, 12.5);
  m.observe_admission_wait(0.004);
  m.observe_admission_wait(35.0);
  m.inc_rejection("queue_full");
  m.inc_rejection("never_fits");
  m.inc_request_timeout();
  m.observe_vram_release_wait(0, 0.35);
  m.observe_vram_release_wait(0, 4.0);
  m.inc_vram_release_timeout(0);
  m.inc_mode_switch("code");
  m.inc_mode_switch("nemotron");
  m.inc_mode_switch_failure("nemotron");
  m.inc_config_reload(true);
  m.inc_config_reload(false);
}

}  // namespace gpumod::test
