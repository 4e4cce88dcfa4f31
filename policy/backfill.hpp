// Backfill: whether a request lower in the queue may be planned ahead of requests that are
// blocked now (their plan said wait, or their service is busy going to sleep or stopping).
// Pure functions of the planner's views, like the planner itself; the scheduler core calls
// backfill_safe() for every plan it would run while something above it is blocked.
// The rule is written out in docs/scheduler.md ("Safe backfill").
#pragma once

#include <vector>

#include "policy/planner.hpp"

namespace gpumod::policy {

// Whether `service` could ever run on `gpu`: the GPU is among its allowed ones, a sleeping
// service can only wake where it sleeps, and an empty `gpu` would hold it after headroom.
bool gpu_usable_by(const GpuView& gpu, const ServiceView& service);

// Memory the blocked request could claim on `gpu` once today's protections end (leases,
// keep-alive and operations in flight all end; pinning and higher priority do not): what is
// free there now plus the charge of every other service there it may evict by priority.
Bytes reachable(const GpuView& gpu, const std::vector<ServiceView>& services, const PlanRequest& blocked);

// A plan for a lower request may run ahead of the `blocked` ones only if, on every GPU a
// blocked one could use and reach enough memory on, it evicts nothing and its start or wake
// leaves that blocked request the memory it needs. `plan` was made on `gpus` and `services`.
bool backfill_safe(const Plan& plan, const std::vector<GpuView>& gpus,
                   const std::vector<ServiceView>& services, const std::vector<PlanRequest>& blocked);

}  // namespace gpumod::policy
