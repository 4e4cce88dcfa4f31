#include "policy/backfill.hpp"

#include <algorithm>

namespace gpumod::policy {

bool gpu_usable_by(const GpuView& gpu, const ServiceView& service) {
  if (!service.allowed_gpus.empty() && std::find(service.allowed_gpus.begin(), service.allowed_gpus.end(),
                                                 gpu.index) == service.allowed_gpus.end()) {
    return false;
  }
  if (service.state == SvcState::sleeping && service.gpu >= 0) return service.gpu == gpu.index;
  return gpu.total - gpu.headroom >= service.vram;
}

Bytes reachable(const GpuView& gpu, const std::vector<ServiceView>& services, const PlanRequest& blocked) {
  Bytes sum = gpu.raw_free();
  for (std::size_t i = 0; i < services.size(); ++i) {
    const ServiceView& s = services[i];
    if (i == blocked.target || s.gpu != gpu.index) continue;
    if (s.pinned || s.priority > blocked.priority) continue;
    sum += charge_of(s);
  }
  return sum;
}

bool backfill_safe(const Plan& plan, const std::vector<GpuView>& gpus,
                   const std::vector<ServiceView>& services, const std::vector<PlanRequest>& blocked) {
  for (const Action& a : plan.actions) {
    if (a.kind == ActionKind::wait_free) continue;
    const bool evicts = a.kind == ActionKind::sleep || a.kind == ActionKind::stop;
    const int index = evicts ? services[a.service].gpu : a.gpu;
    const auto gpu =
        std::find_if(gpus.begin(), gpus.end(), [&](const GpuView& g) { return g.index == index; });
    if (gpu == gpus.end()) continue;
    for (const PlanRequest& b : blocked) {
      const ServiceView& head = services[b.target];
      if (!gpu_usable_by(*gpu, head)) continue;
      const Bytes need = need_of(head);
      const Bytes reach = reachable(*gpu, services, b);
      if (reach < need) continue;  // it could not get enough here anyway
      if (evicts) return false;
      if (reach - need_of(services[a.service]) < need) return false;
    }
  }
  return true;
}

}  // namespace gpumod::policy
