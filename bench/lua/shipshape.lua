-- wrk script for the shipshape scenarios. Configured through the environment:
--   BENCH_MODE     get | post | mix | list | health | ready
--   BENCH_IDS      file with one item id per line (get, mix)
--   BENCH_CURSORS  file with one list cursor per line (list); "" means the first page
--   BENCH_GET_PCT  share of GETs in `mix`, percent (default 90); the rest are POSTs
--   BENCH_TOKEN    bearer token, when the service has auth on
--   BENCH_UA       User-Agent (default shipshape-bench), so the server log can tell load apart
--   BENCH_ITEMS_PATH  the item collection (default /v1/items; the peers serve /items)
--   BENCH_HEALTH_PATH the liveness route (default /healthz; the peers serve /health)
-- Each request picks its kind independently, so the mix holds whatever the latencies are
-- (two generators split by connection count would drift towards the faster endpoint).
-- done() prints one line "WRKJSON {...}" with counts, errors and latency percentiles (us).

local mode = os.getenv("BENCH_MODE") or "get"
local get_pct = tonumber(os.getenv("BENCH_GET_PCT") or "90")
local token = os.getenv("BENCH_TOKEN") or ""
local ua = os.getenv("BENCH_UA") or "shipshape-bench"
local items_path = os.getenv("BENCH_ITEMS_PATH") or "/v1/items"
local health_path = os.getenv("BENCH_HEALTH_PATH") or "/healthz"

local function lines(path)
  local out = {}
  if path == nil or path == "" then return out end
  local f = io.open(path, "r")
  if f == nil then error("cannot open " .. path) end
  for l in f:lines() do out[#out + 1] = l end
  f:close()
  return out
end

local thread_counter = 0
function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("tid", thread_counter)
end

local get_reqs, list_reqs = {}, {}
local seq, run_tag = 0, ""

local function headers(extra)
  local h = { ["User-Agent"] = ua }
  if token ~= "" then h["Authorization"] = "Bearer " .. token end
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0))
  run_tag = string.format("%x%x", os.time(), math.random(0, 0xfffff))
  wrk.headers = headers()
  if mode == "get" or mode == "mix" then
    for _, id in ipairs(lines(os.getenv("BENCH_IDS"))) do
      get_reqs[#get_reqs + 1] = wrk.format("GET", items_path .. "/" .. id)
    end
    if #get_reqs == 0 then error("BENCH_IDS has no ids") end
  elseif mode == "list" then
    for _, c in ipairs(lines(os.getenv("BENCH_CURSORS"))) do
      local path = items_path .. "?limit=20"
      if c ~= "" then path = path .. "&cursor=" .. c end
      list_reqs[#list_reqs + 1] = wrk.format("GET", path)
    end
    if #list_reqs == 0 then list_reqs[1] = wrk.format("GET", items_path .. "?limit=20") end
  end
end

local post_headers = nil
local function post()
  seq = seq + 1
  if post_headers == nil then post_headers = headers({ ["Content-Type"] = "application/json" }) end
  local body = string.format(
    '{"name":"bench %s t%d n%d","description":"benchmark item","price":19.99,"quantity":%d,"tags":["bench","kitchen"]}',
    run_tag, tid or 0, seq, seq % 1000)
  return wrk.format("POST", items_path, post_headers, body)
end

local health_req, ready_req = nil, nil
function request()
  if mode == "get" then
    return get_reqs[math.random(#get_reqs)]
  elseif mode == "mix" then
    if math.random(100) <= get_pct then return get_reqs[math.random(#get_reqs)] end
    return post()
  elseif mode == "post" then
    return post()
  elseif mode == "list" then
    return list_reqs[math.random(#list_reqs)]
  elseif mode == "ready" then
    if ready_req == nil then ready_req = wrk.format("GET", "/readyz") end
    return ready_req
  else
    if health_req == nil then health_req = wrk.format("GET", health_path) end
    return health_req
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p95":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
