-- wrk script for bench/serving_bench.py: POSTs the body in the file named by
-- $BENCH_BODY and prints one machine-readable summary line when the run ends. With
-- $BENCH_HEADER_LENGTH set, the body is a binary-tensor request (the Open Inference
-- Protocol's binary data extension): a JSON header of that many bytes, then raw tensors.
local file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
local header_length = os.getenv("BENCH_HEADER_LENGTH")
if header_length ~= nil and header_length ~= "" then
  wrk.headers["Content-Type"] = "application/octet-stream"
  wrk.headers["Inference-Header-Content-Length"] = header_length
else
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {\"requests\": %d, \"duration_us\": %d, \"errors_connect\": %d, "
      .. "\"errors_read\": %d, \"errors_write\": %d, \"errors_status\": %d, "
      .. "\"errors_timeout\": %d, \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, "
      .. "\"max_us\": %.1f, \"mean_us\": %.1f}\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
