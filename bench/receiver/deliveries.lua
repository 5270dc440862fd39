-- Sends pre-signed, unique deliveries round-robin (file: id \t timestamp \t signature \t body).
local reqs = {}
local n = 0
local idx = 0
local path = os.getenv("BENCH_PATH") or "/"

init = function(args)
  local f = assert(io.open(os.getenv("BENCH_FILE"), "r"))
  for line in f:lines() do
    local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    n = n + 1
    reqs[n] = wrk.format("POST", path, {
      ["webhook-id"] = id,
      ["webhook-timestamp"] = ts,
      ["webhook-signature"] = sig,
      ["content-type"] = "application/json",
    }, body)
  end
  f:close()
  idx = tonumber(os.getenv("BENCH_OFFSET") or "0")
end

request = function()
  idx = idx + 1
  if idx > n then idx = 1 end
  return reqs[idx]
end

done = function(summary, latency, requests)
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout))
end
