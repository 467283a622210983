-- Shared helpers for the wrk scripts of bench/run_bench.py.
-- Configuration comes from the environment (set by run_bench.py):
--   BENCH_BASE_PATH  SCIM base path of the target, e.g. /scim/v2 or /v2
--   BENCH_TOKEN      bearer token ("" = no Authorization header)
--   BENCH_DATA       file written by the preload step: "id<TAB>userName" per line
--   BENCH_RUN_ID     random prefix that makes create userNames unique per run
--   BENCH_RESULT     where done() writes the summary as JSON
local M = {}

M.base = os.getenv("BENCH_BASE_PATH") or "/scim/v2"
M.run_id = os.getenv("BENCH_RUN_ID") or tostring(os.time())

local token = os.getenv("BENCH_TOKEN") or ""
M.headers = { ["Accept"] = "application/scim+json" }
if token ~= "" then
  M.headers["Authorization"] = "Bearer " .. token
end
M.body_headers = { ["Content-Type"] = "application/scim+json" }
for k, v in pairs(M.headers) do M.body_headers[k] = v end

-- setup() runs once per thread in the main Lua state: number the threads.
local thread_counter = 0
function M.setup(thread)
  thread_counter = thread_counter + 1
  thread:set("tid", thread_counter)
end

-- init() runs in each thread's own Lua state.
function M.init_rng()
  local t = tonumber(tid) or 0
  math.randomseed(os.time() * 1000 + t * 7919 + math.floor(os.clock() * 1e6))
  for _ = 1, 10 do math.random() end
end

function M.load_data()
  local path = os.getenv("BENCH_DATA")
  assert(path, "BENCH_DATA not set")
  local ids, names = {}, {}
  for line in io.lines(path) do
    local id, name = line:match("^([^\t]+)\t(.+)$")
    if id then
      ids[#ids + 1] = id
      names[#names + 1] = name
    end
  end
  assert(#ids > 0, "no ids in " .. path)
  return ids, names
end

function M.urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

function M.json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end) .. '"'
end

-- done() runs once in the main state after the run: write a JSON summary.
function M.done(summary, latency, requests)
  local e = summary.errors
  local out = string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"stdev":%.1f,' ..
    '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9))
  local path = os.getenv("BENCH_RESULT")
  if path then
    local f = assert(io.open(path, "w"))
    f:write(out, "\n")
    f:close()
  end
  io.write(out, "\n")
end

-- Pre-formatted request pool: formatting a request in Lua for every call
-- costs the single wrk core more than the bare handler costs the server, so
-- the read-only scripts build BENCH_POOL (4096) random requests per thread up
-- front and cycle through them.
M.pool_size = tonumber(os.getenv("BENCH_POOL") or "") or 4096

function M.make_pool(build)
  local pool = {}
  for i = 1, M.pool_size do pool[i] = build(i) end
  local i = 0
  return function()
    i = i + 1
    if i > #pool then i = 1 end
    return pool[i]
  end
end

return M
