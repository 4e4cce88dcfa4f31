#!/usr/bin/env python3
"""Writes grafana/dashboards/*.json. The JSON files are the product (Grafana provisions them);
this script is how they are kept consistent: one datasource reference, units and $__rate_interval
everywhere, unique panel ids. Edit here, run `python3 grafana/generate_dashboards.py`, commit both.
tests/grafana checks the generated files."""
import json
import pathlib

DS = {"type": "prometheus", "uid": "${datasource}"}
INST = 'instance=~"$instance"'
HERE = pathlib.Path(__file__).resolve().parent

# gpumod_service_state as one number per service, for state timelines (value mappings below).
STATE_CODES = ["stopped", "starting", "ready", "sleeping", "waking", "stopping", "failed"]
STATE_COLORS = ["#808080", "blue", "green", "purple", "light-blue", "orange", "red"]


def state_expr(svc_matcher):
    parts = []
    for code, state in enumerate(STATE_CODES):
        if code == 0:
            continue
        parts.append(
            f'sum by (svc) (gpumod_service_state{{{INST},{svc_matcher},state="{state}"}}) * {code}')
    return "\n+ ".join(parts)


STATE_MAPPINGS = [{
    "type": "value",
    "options": {str(code): {"text": state, "color": STATE_COLORS[code], "index": code}
                for code, state in enumerate(STATE_CODES)},
}]


class Dashboard:
    def __init__(self):
        self.panels = []
        self.next_id = 1
        self.y = 0
        self.x = 0
        self.row_height = 0

    def _place(self, w, h):
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_height
            self.row_height = 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_height = max(self.row_height, h)
        return pos

    def row(self, title):
        if self.x:
            self.x = 0
            self.y += self.row_height
            self.row_height = 0
        self.panels.append({"id": self.next_id, "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}, "panels": []})
        self.next_id += 1
        self.y += 1

    def panel(self, kind, title, description, unit, targets, w=12, h=8, custom=None, options=None,
              overrides=None, mappings=None, min_value=None, max_value=None, decimals=None):
        refs = "ABCDEFGHIJ"
        defaults = {"unit": unit, "custom": custom or {}, "mappings": mappings or []}
        if min_value is not None:
            defaults["min"] = min_value
        if max_value is not None:
            defaults["max"] = max_value
        if decimals is not None:
            defaults["decimals"] = decimals
        panel = {
            "id": self.next_id,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": self._place(w, h),
            "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": options or {},
            "targets": [dict({"datasource": DS, "refId": refs[i], "expr": expr,
                              "legendFormat": legend, "range": True}, **extra)
                        for i, (expr, legend, *rest) in enumerate(targets)
                        for extra in [rest[0] if rest else {}]],
        }
        self.next_id += 1
        self.panels.append(panel)
        return panel


def timeseries_custom(stack=False, bars=False, fill=10):
    return {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 80 if bars else fill,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }


LEGEND_TABLE = {"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"]},
                "tooltip": {"mode": "multi", "sort": "desc"}}
LEGEND_LIST = {"legend": {"displayMode": "list", "placement": "bottom", "calcs": []},
               "tooltip": {"mode": "multi", "sort": "none"}}


def unstacked_line(name, dash=True, color=None):
    props = [
        {"id": "custom.stacking", "value": {"mode": "none", "group": "A"}},
        {"id": "custom.fillOpacity", "value": 0},
    ]
    if dash:
        props.append({"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}})
    if color:
        props.append({"id": "color", "value": {"mode": "fixed", "fixedColor": color}})
    return {"matcher": {"id": "byName", "options": name}, "properties": props}


def fixed_color(name, color):
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}]}


def quantiles(metric, matchers, by="", legend_prefix=""):
    group = f"le{', ' + by if by else ''}"
    prefix = legend_prefix + (f"{{{{{by}}}}} " if by else "")
    return [(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{matchers}}}[$__rate_interval])))",
             f"{prefix}p{int(q * 100)}") for q in (0.5, 0.9, 0.99)]


def datasource_var():
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [], "includeAll": False,
            "multi": False, "skipUrlSync": False}


def query_var(name, label, query, multi, include_all, all_value=None):
    var = {"name": name, "label": label, "type": "query", "datasource": DS,
           "definition": query, "query": {"query": query, "refId": f"{name}-var"},
           "refresh": 2, "sort": 1, "regex": "", "current": {}, "options": [], "hide": 0,
           "multi": multi, "includeAll": include_all, "skipUrlSync": False}
    if all_value is not None:
        var["allValue"] = all_value
    return var


def dashboard_json(uid, title, description, panels, variables, tags):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": tags,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 38,
        "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "annotations": {"list": []},
        "links": [{"title": "gpumod dashboards", "type": "dashboards", "tags": ["gpumod"], "asDropdown": True,
                   "includeVars": True, "keepTime": True}],
        "templating": {"list": variables},
        "panels": panels,
    }


def overview():
    d = Dashboard()
    svc = 'svc=~"$svc"'
    d.row("GPU memory")
    d.panel("timeseries", "GPU memory by service",
            "Memory each service's processes use (measured by the GPU probe), stacked, with memory used by "
            "processes gpumod does not run and free memory on top; the ledger's reservation and the total "
            "as dashed lines. Summed over GPUs.",
            "bytes",
            [(f"sum by (svc) (gpumod_service_vram_measured_bytes{{{INST},{svc}}})", "{{svc}}"),
             (f"clamp_min(sum(gpumod_gpu_memory_used_bytes{{{INST}}}) - sum(gpumod_service_vram_measured_bytes{{{INST}}}), 0)",
              "not gpumod"),
             (f"sum(gpumod_gpu_memory_free_bytes{{{INST}}})", "free"),
             (f"sum(gpumod_gpu_memory_reserved_bytes{{{INST}}})", "reserved (ledger)"),
             (f"sum(gpumod_gpu_memory_total_bytes{{{INST}}})", "total")],
            w=16, h=10, custom=timeseries_custom(stack=True, fill=60), options=LEGEND_TABLE, min_value=0,
            overrides=[fixed_color("free", "#73BF6933"), fixed_color("not gpumod", "#8F8F8F"),
                       unstacked_line("reserved (ledger)", color="yellow"),
                       unstacked_line("total", color="white")])
    d.panel("bargauge", "Memory per GPU",
            "Used and free memory of each GPU and what the scheduler's ledger has reserved on it. Free "
            "near zero with little reserved means something outside gpumod holds the memory.",
            "bytes",
            [(f"sum by (gpu) (gpumod_gpu_memory_used_bytes{{{INST}}})", "GPU {{gpu}} used", {"instant": True, "range": False}),
             (f"sum by (gpu) (gpumod_gpu_memory_reserved_bytes{{{INST}}})", "GPU {{gpu}} reserved", {"instant": True, "range": False}),
             (f"sum by (gpu) (gpumod_gpu_memory_free_bytes{{{INST}}})", "GPU {{gpu}} free", {"instant": True, "range": False})],
            w=8, h=10, options={"orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
                                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
            min_value=0)
    d.row("GPU telemetry")
    d.panel("timeseries", "GPU utilization", "Compute utilization of each GPU.", "percentunit",
            [(f"max by (gpu) (gpumod_gpu_utilization_ratio{{{INST}}})", "GPU {{gpu}}")],
            w=8, custom=timeseries_custom(), options=LEGEND_LIST, min_value=0, max_value=1)
    d.panel("timeseries", "GPU temperature", "Temperature of each GPU.", "celsius",
            [(f"max by (gpu) (gpumod_gpu_temperature_celsius{{{INST}}})", "GPU {{gpu}}")],
            w=8, custom=timeseries_custom(), options=LEGEND_LIST)
    d.panel("timeseries", "GPU power", "Power draw of each GPU.", "watt",
            [(f"max by (gpu) (gpumod_gpu_power_watts{{{INST}}})", "GPU {{gpu}}")],
            w=8, custom=timeseries_custom(), options=LEGEND_LIST, min_value=0)
    d.row("Queue and admission")
    d.panel("timeseries", "Queue length", "Requests waiting in the admission queue.", "short",
            [(f"max(gpumod_queue_length{{{INST}}})", "queued")],
            w=6, custom=timeseries_custom(), options=LEGEND_LIST, min_value=0, decimals=0)
    d.panel("timeseries", "Oldest queued request", "How long the oldest waiting request has been queued.",
            "s", [(f"max(gpumod_queue_oldest_age_seconds{{{INST}}})", "oldest age")],
            w=6, custom=timeseries_custom(), options=LEGEND_LIST, min_value=0)
    d.panel("timeseries", "Admission wait", "Time from a request's arrival until its service was ready: "
            "p50, p90, p99.", "s", quantiles("gpumod_admission_wait_seconds", INST),
            w=6, custom=timeseries_custom(fill=0), options=LEGEND_LIST, min_value=0)
    d.panel("timeseries", "Rejections and timeouts", "Requests refused, by reason, and requests whose "
            "deadline passed while queued.", "reqps",
            [(f"sum by (reason) (rate(gpumod_request_rejections_total{{{INST}}}[$__rate_interval]))", "{{reason}}"),
             (f"sum(rate(gpumod_request_timeouts_total{{{INST}}}[$__rate_interval]))", "deadline passed")],
            w=6, custom=timeseries_custom(), options=LEGEND_LIST, min_value=0)
    d.row("Services")
    d.panel("state-timeline", "Service states", "Lifecycle state of each service over time.", "none",
            [(state_expr(svc), "{{svc}}")], w=24, h=9, mappings=STATE_MAPPINGS,
            custom={"lineWidth": 0, "fillOpacity": 80},
            options={"showValue": "never", "mergeValues": True, "rowHeight": 0.8, "alignValue": "left",
                     "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                     "tooltip": {"mode": "single", "sort": "none"}})
    d.panel("timeseries", "Cold start duration", "Time from starting a service until it answered its "
            "health check: p50, p90, p99 over the selected services.", "s",
            quantiles("gpumod_service_start_duration_seconds", f"{INST},{svc}"),
            w=8, custom=timeseries_custom(fill=0), options=LEGEND_LIST, min_value=0)
    d.panel("timeseries", "Wake duration", "Time from waking a sleeping service until it answered again: "
            "p50, p90, p99 over the selected services.", "s",
            quantiles("gpumod_service_wake_duration_seconds", f"{INST},{svc}"),
            w=8, custom=timeseries_custom(fill=0), options=LEGEND_LIST, min_value=0)
    d.panel("timeseries", "Evictions by action", "Services put to sleep or stopped to make room for "
            "another.", "short",
            [(f"sum by (action) (increase(gpumod_service_evictions_total{{{INST},{svc}}}[$__rate_interval]))", "{{action}}")],
            w=8, custom=timeseries_custom(stack=True, bars=True), options=LEGEND_LIST, min_value=0, decimals=0,
            overrides=[fixed_color("sleep", "purple"), fixed_color("stop", "orange")])
    d.panel("timeseries", "Starts and start failures", "Cold starts begun and cold starts that failed, "
            "per service.", "short",
            [(f"sum by (svc) (increase(gpumod_service_starts_total{{{INST},{svc}}}[$__rate_interval]))", "{{svc}} started"),
             (f"sum by (svc) (increase(gpumod_service_start_failures_total{{{INST},{svc}}}[$__rate_interval]))", "{{svc}} failed")],
            w=8, custom=timeseries_custom(bars=True), options=LEGEND_LIST, min_value=0, decimals=0)
    d.panel("timeseries", "Sleeps and wakes", "Services put to sleep and woken.", "short",
            [(f"sum(increase(gpumod_service_sleeps_total{{{INST},{svc}}}[$__rate_interval]))", "sleeps"),
             (f"sum(increase(gpumod_service_wakes_total{{{INST},{svc}}}[$__rate_interval]))", "wakes")],
            w=8, custom=timeseries_custom(bars=True), options=LEGEND_LIST, min_value=0, decimals=0)
    d.panel("timeseries", "Active leases", "Requests in flight holding each service (a busy service cannot "
            "be evicted).", "short",
            [(f"sum by (svc) (gpumod_service_active_leases{{{INST},{svc}}})", "{{svc}}")],
            w=8, custom=timeseries_custom(stack=True), options=LEGEND_LIST, min_value=0, decimals=0)
    d.panel("timeseries", "Proxied requests", "Requests proxied through /v1, by service and status code.",
            "reqps",
            [(f"sum by (svc, code) (rate(gpumod_proxy_requests_total{{{INST},{svc}}}[$__rate_interval]))", "{{svc}} {{code}}")],
            w=24, custom=timeseries_custom(), options=LEGEND_TABLE, min_value=0)
    d.row("VRAM release")
    d.panel("timeseries", "VRAM release wait", "Time spent waiting for the driver to report evicted memory "
            "as free before starting the next service: p50, p90, p99 per GPU.", "s",
            quantiles("gpumod_vram_release_wait_seconds", INST, by="gpu", legend_prefix="GPU "),
            w=12, custom=timeseries_custom(fill=0), options=LEGEND_LIST, min_value=0)
    d.panel("timeseries", "VRAM release timeouts", "Waits for memory to be released that gave up: the next "
            "service was not started. See the GpumodVramReleaseTimeout alert.", "short",
            [(f"sum by (gpu) (increase(gpumod_vram_release_timeouts_total{{{INST}}}[$__rate_interval]))", "GPU {{gpu}}")],
            w=12, custom=timeseries_custom(bars=True), options=LEGEND_LIST, min_value=0, decimals=0,
            overrides=[])
    d.row("Daemon")
    d.panel("timeseries", "Mode switches", "Mode switches requested and failed, by mode.", "short",
            [(f"sum by (mode) (increase(gpumod_mode_switches_total{{{INST}}}[$__rate_interval]))", "{{mode}}"),
             (f"sum by (mode) (increase(gpumod_mode_switch_failures_total{{{INST}}}[$__rate_interval]))", "{{mode}} failed")],
            w=8, custom=timeseries_custom(bars=True), options=LEGEND_LIST, min_value=0, decimals=0)
    d.panel("timeseries", "Config reloads", "Configuration reloads by result. A failed reload keeps the "
            "last good configuration running.", "short",
            [(f"sum by (result) (increase(gpumod_config_reloads_total{{{INST}}}[$__rate_interval]))", "{{result}}")],
            w=8, custom=timeseries_custom(bars=True), options=LEGEND_LIST, min_value=0, decimals=0,
            overrides=[fixed_color("success", "green"), fixed_color("failure", "red")])
    d.panel("stat", "GPU probe", "Whether the last GPU probe reading succeeded.", "none",
            [(f"min(gpumod_gpu_probe_up{{{INST}}})", "probe", {"instant": True, "range": False})],
            w=4, h=4, mappings=[{"type": "value", "options": {
                "0": {"text": "DOWN", "color": "red", "index": 0}, "1": {"text": "UP", "color": "green", "index": 1}}}],
            options={"colorMode": "background", "graphMode": "none", "textMode": "value",
                     "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})
    d.panel("stat", "Last config reload", "Whether the last configuration reload succeeded.", "none",
            [(f"min(gpumod_config_last_reload_successful{{{INST}}})", "reload", {"instant": True, "range": False})],
            w=4, h=4, mappings=[{"type": "value", "options": {
                "0": {"text": "FAILED", "color": "red", "index": 0}, "1": {"text": "OK", "color": "green", "index": 1}}}],
            options={"colorMode": "background", "graphMode": "none", "textMode": "value",
                     "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})
    d.panel("stat", "Version", "gpumod version, revision and compiler of the running daemon.", "none",
            [(f"max by (version, revision, compiler) (gpumod_build_info{{{INST}}})",
              "{{version}} ({{revision}}, {{compiler}})", {"instant": True, "range": False})],
            w=8, h=4, options={"colorMode": "none", "graphMode": "none", "textMode": "name",
                               "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})
    d.panel("timeseries", "GPU probe errors", "GPU probe readings that failed. While the probe fails, "
            "scheduling uses the ledger alone.", "short",
            [(f"sum(increase(gpumod_gpu_probe_errors_total{{{INST}}}[$__rate_interval]))", "errors")],
            w=8, h=4, custom=timeseries_custom(bars=True), options=LEGEND_LIST, min_value=0, decimals=0)
    variables = [
        datasource_var(),
        query_var("instance", "Instance", "label_values(gpumod_build_info, instance)", False, False),
        query_var("svc", "Service", 'label_values(gpumod_service_state{instance=~"$instance"}, svc)', True, True, ".*"),
    ]
    return dashboard_json("gpumod-overview", "gpumod / Overview",
                          "GPU memory, queue, services and VRAM release of one gpumod daemon.",
                          d.panels, variables, ["gpumod"])


def service():
    d = Dashboard()
    svc = 'svc="$svc"'
    d.row("State")
    d.panel("stat", "Current state", "The service's lifecycle state now.", "none",
            [(state_expr(svc), "{{svc}}", {"instant": True, "range": False})], w=6, h=6, mappings=STATE_MAPPINGS,
            options={"colorMode": "background", "graphMode": "none", "textMode": "value",
                     "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})
    d.panel("state-timeline", "State over time", "Lifecycle state of the service over time.", "none",
            [(state_expr(svc), "{{svc}}")], w=18, h=6, mappings=STATE_MAPPINGS,
            custom={"lineWidth": 0, "fillOpacity": 80},
            options={"showValue": "never", "mergeValues": True, "rowHeight": 0.8, "alignValue": "left",
                     "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
                     "tooltip": {"mode": "single", "sort": "none"}})
    d.row("Memory")
    d.panel("timeseries", "VRAM declared and measured", "What the preset declares (vram_mb) against what "
            "the service's processes use. Measured well above declared means the preset under-declares and "
            "the scheduler may overcommit the GPU.", "bytes",
            [(f"max(gpumod_service_vram_declared_bytes{{{INST},{svc}}})", "declared"),
             (f"max(gpumod_service_vram_measured_bytes{{{INST},{svc}}})", "measured")],
            w=16, custom=timeseries_custom(fill=0), options=LEGEND_LIST, min_value=0,
            overrides=[unstacked_line("declared", color="yellow")])
    d.panel("timeseries", "Active leases", "Requests in flight holding this service.", "short",
            [(f"max(gpumod_service_active_leases{{{INST},{svc}}})", "leases")],
            w=8, custom=timeseries_custom(), options=LEGEND_LIST, min_value=0, decimals=0)
    d.row("Lifecycle")
    d.panel("timeseries", "Cold start duration", "Time from starting the service until it answered its "
            "health check: p50, p90, p99.", "s",
            quantiles("gpumod_service_start_duration_seconds", f"{INST},{svc}"),
            w=12, custom=timeseries_custom(fill=0), options=LEGEND_LIST, min_value=0)
    d.panel("timeseries", "Wake duration", "Time from waking the service until it answered again: p50, p90, "
            "p99.", "s", quantiles("gpumod_service_wake_duration_seconds", f"{INST},{svc}"),
            w=12, custom=timeseries_custom(fill=0), options=LEGEND_LIST, min_value=0)
    d.panel("timeseries", "Starts, failures, sleeps, wakes", "Lifecycle events of the service.", "short",
            [(f"sum(increase(gpumod_service_starts_total{{{INST},{svc}}}[$__rate_interval]))", "starts"),
             (f"sum(increase(gpumod_service_start_failures_total{{{INST},{svc}}}[$__rate_interval]))", "start failures"),
             (f"sum(increase(gpumod_service_sleeps_total{{{INST},{svc}}}[$__rate_interval]))", "sleeps"),
             (f"sum(increase(gpumod_service_wakes_total{{{INST},{svc}}}[$__rate_interval]))", "wakes")],
            w=12, custom=timeseries_custom(bars=True), options=LEGEND_LIST, min_value=0, decimals=0,
            overrides=[fixed_color("start failures", "red")])
    d.panel("timeseries", "Evictions by action", "Times this service was put to sleep or stopped to make "
            "room for another.", "short",
            [(f"sum by (action) (increase(gpumod_service_evictions_total{{{INST},{svc}}}[$__rate_interval]))", "{{action}}")],
            w=12, custom=timeseries_custom(stack=True, bars=True), options=LEGEND_LIST, min_value=0, decimals=0,
            overrides=[fixed_color("sleep", "purple"), fixed_color("stop", "orange")])
    d.row("Traffic")
    d.panel("timeseries", "Proxied requests", "Requests proxied to the service through /v1, by endpoint and "
            "status code.", "reqps",
            [(f"sum by (endpoint, code) (rate(gpumod_proxy_requests_total{{{INST},{svc}}}[$__rate_interval]))",
              "{{endpoint}} {{code}}")],
            w=16, custom=timeseries_custom(), options=LEGEND_TABLE, min_value=0)
    d.panel("timeseries", "Proxy error ratio", "Share of proxied requests answered with a 5xx status (0 when "
            "none failed; no data when there were no requests).",
            "percentunit",
            # Only code="200" exists before the first error: without `or vector(0)` the ratio of a
            # healthy service would be "No data" instead of 0.
            [(f"(sum(rate(gpumod_proxy_requests_total{{{INST},{svc},code=~\"5..\"}}[$__rate_interval])) or vector(0))"
              f" / sum(rate(gpumod_proxy_requests_total{{{INST},{svc}}}[$__rate_interval]))", "5xx")],
            w=8, custom=timeseries_custom(), options=LEGEND_LIST, min_value=0, max_value=1)
    variables = [
        datasource_var(),
        query_var("instance", "Instance", "label_values(gpumod_build_info, instance)", False, False),
        query_var("svc", "Service", 'label_values(gpumod_service_state{instance=~"$instance"}, svc)', False, False),
    ]
    return dashboard_json("gpumod-service", "gpumod / Service",
                          "Lifecycle, memory and traffic of one service managed by gpumod.",
                          d.panels, variables, ["gpumod"])


def main():
    for name, board in (("gpumod-overview.json", overview()), ("gpumod-service.json", service())):
        path = HERE / "dashboards" / name
        path.write_text(json.dumps(board, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
