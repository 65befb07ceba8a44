-- wrk script: cycle through the request paths in the file named by WRK_PATHS, one per line, and
-- print the figures as one JSON object at the end (the same fields as bench/loadgen.py).
local paths = {}
local counter = 0

function init(args)
  local file = assert(io.open(os.getenv("WRK_PATHS"), "r"))
  for line in file:lines() do
    if #line > 0 then paths[#paths + 1] = line end
  end
  file:close()
  counter = math.random(#paths)
end

function request()
  counter = counter % #paths + 1
  return wrk.format("GET", paths[counter])
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "errors": %d, "non_2xx": %d, "seconds": %f, "rps": %f, ' ..
    '"p50_us": %f, "p99_us": %f}\n',
    summary.requests, e.connect + e.read + e.write + e.timeout, e.status, seconds,
    summary.requests / seconds, latency:percentile(50), latency:percentile(99)))
end
