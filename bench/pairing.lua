-- wrk script: POST add-to-cart requests; with mode "paired" each carries a distinct
-- X-LayerSync-Event-Id (add_to_cart), as the browser SDK stamps them.
--   wrk ... -s pairing.lua http://127.0.0.1:PORT -- <paired|noheaders|unmatched> <6 hex nonce>
-- The nonce keeps ids distinct across runs against one server (its dedupe is per process).

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local counter = 0
local mode, nonce, static, head, tail
local body = '{"sku":"SKU-A","quantity":1}'
local MARK = "@@EVENT-ID@@"

-- The request is formatted once; per request only the id is spliced in, so the load
-- generator spends its core on sending, not on building headers.
function init(args)
  mode = args[1] or "paired"
  nonce = args[2] or "000000"
  local path = (mode == "unmatched") and "/products/sku-a" or "/api/cart/add"
  local headers = {
    ["Content-Type"] = "application/json",
    ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) bench/1.0",
    ["Cookie"] = "_fbp=fb.1.1700000000000.42; _ga=GA1.1.42.1700000000",
    ["Referer"] = "http://" .. wrk.host .. ":" .. tostring(wrk.port) .. "/products/sku-a",
  }
  if mode == "paired" then
    headers["X-LayerSync-Event-Name"] = "add_to_cart"
    headers["X-LayerSync-Event-Id"] = MARK
    local formatted = wrk.format("POST", path, headers, body)
    local at = formatted:find(MARK, 1, true)
    head, tail = formatted:sub(1, at - 1), formatted:sub(at + #MARK)
  else
    static = wrk.format("POST", path, headers, body)
  end
end

function request()
  if static then
    return static
  end
  counter = counter + 1
  return head .. string.format("atc_%s%x%09x", nonce, tid % 16, counter) .. tail
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
