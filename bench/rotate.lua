-- wrk script for bench/run: GET the request paths listed (one a line) in the file given
-- after `--`, rotating through them; each thread starts at a different offset.
-- At the end, writes a JSON summary to $WRK_JSON (if set).
--
--   WRK_JSON=out.json wrk -t2 -c32 -d15s --latency -s bench/rotate.lua http://127.0.0.1:PORT -- paths.txt

local counter = 0
function setup(thread)
  thread:set("thread_no", counter)
  counter = counter + 1
end

local paths = {}
local idx = 0
function init(args)
  local file = args[1]
  for line in io.lines(file) do
    if #line > 0 then paths[#paths + 1] = line end
  end
  if #paths == 0 then error("no paths in " .. tostring(file)) end
  idx = ((thread_no or 0) * 7919) % #paths
end

function request()
  idx = idx % #paths + 1
  return wrk.format("GET", paths[idx])
end

function done(summary, latency, requests)
  local out = os.getenv("WRK_JSON")
  if not out then return end
  local e = summary.errors
  local f = assert(io.open(out, "w"))
  f:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "stdev": %.1f, "max": %d, "p50": %d, "p75": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
  f:close()
end
